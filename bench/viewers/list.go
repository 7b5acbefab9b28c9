package main

// One GetListMovies stream read to the end: how fast a server streams small messages.

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc"
)

const listMethod = "/Movie/GetListMovies"

type listReport struct {
	Mode           string  `json:"mode"`
	Messages       int     `json:"messages"`
	Bytes          int64   `json:"bytes"`
	Seconds        float64 `json:"seconds"`
	MessagesPerS   float64 `json:"messages_per_s"`
	FirstMessageMs float64 `json:"first_message_ms"`
	ClientCPU      float64 `json:"client_cpu"`
}

func list(ctx context.Context, dc dialConfig) (listReport, error) {
	conn, err := dc.dial(ctx)
	if err != nil {
		return listReport{}, err
	}
	defer conn.Close()
	rep := listReport{Mode: "list"}
	empty := []byte{}
	cpu0 := cpuSeconds()
	start := time.Now()
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, listMethod)
	if err != nil {
		return rep, err
	}
	if err := stream.SendMsg(&empty); err != nil {
		return rep, err
	}
	if err := stream.CloseSend(); err != nil {
		return rep, err
	}
	var m counted
	for {
		if err := stream.RecvMsg(&m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return rep, err
		}
		if rep.Messages == 0 {
			rep.FirstMessageMs = ms(time.Since(start))
		}
		rep.Messages++
		rep.Bytes += int64(m.size)
	}
	elapsed := time.Since(start)
	rep.Seconds = elapsed.Seconds()
	rep.MessagesPerS = float64(rep.Messages) / rep.Seconds
	rep.ClientCPU = (cpuSeconds() - cpu0) / rep.Seconds
	return rep, nil
}
