package main

// One GetListMovies stream read to the end: how fast a server streams small messages.

import (
	"context"
	"errors"
	"io"
	"time"

	"grpcdemo/bench/viewers/pb"
)

type listReport struct {
	Messages       int     `json:"messages"`
	Seconds        float64 `json:"seconds"`
	MessagesPerS   float64 `json:"messages_per_s"`
	FirstMessageMs float64 `json:"first_message_ms"`
	ClientCPU      float64 `json:"client_cpu"`
}

func list(ctx context.Context, dc dialConfig) (listReport, error) {
	var rep listReport
	conn, err := dc.dial(ctx)
	if err != nil {
		return rep, err
	}
	defer conn.Close()
	cpu0 := cpuSeconds()
	start := time.Now()
	stream, err := pb.NewMovieClient(conn).GetListMovies(ctx, &pb.Empty{})
	if err != nil {
		return rep, err
	}
	for {
		_, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return rep, err
		}
		if rep.Messages == 0 {
			rep.FirstMessageMs = ms(time.Since(start))
		}
		rep.Messages++
	}
	rep.Seconds = time.Since(start).Seconds()
	rep.MessagesPerS = float64(rep.Messages) / rep.Seconds
	rep.ClientCPU = (cpuSeconds() - cpu0) / rep.Seconds
	return rep, nil
}
