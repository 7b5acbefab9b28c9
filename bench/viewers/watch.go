package main

// N viewers of one match, each on its own connection, all starting together. What counts
// is what a person watching would notice: frames per second, how far behind the broadcast
// clock each frame arrives, and how long the first one took. Thresholds are bench/'s.

import (
	"context"
	"errors"
	"io"
	"math"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"grpcdemo/bench/viewers/pb"
)

type watchConfig struct {
	viewers  int
	duration time.Duration
	request  *pb.Match
	frames   int  // the viewer's frame budget; 0 = none
	drain    bool // after the budget, wait for the server to end the stream
}

type viewerResult struct {
	frames       int
	bytes        int
	fps          float64
	firstFrameMs float64
	lags         []float64 // seconds, one per frame after the first
	err          string
}

type watchReport struct {
	Viewers    int     `json:"viewers"`
	Frames     int     `json:"frames"`
	Bytes      int     `json:"bytes"`
	MBPerS     float64 `json:"mb_per_s"`
	MinFPS     float64 `json:"min_fps"`
	MeanFPS    float64 `json:"mean_fps"`
	P50LagMs   float64 `json:"p50_lag_ms"`
	P99LagMs   float64 `json:"p99_lag_ms"`
	MaxFirstMs float64 `json:"max_first_frame_ms"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	ClientCPU  float64 `json:"client_cpu"` // CPU seconds per wall second
	DialS      float64 `json:"dial_s"`
}

func watch(ctx context.Context, dc dialConfig, wc watchConfig) (watchReport, error) {
	dialStart := time.Now()
	conns, err := dialAll(ctx, dc, wc.viewers)
	if err != nil {
		return watchReport{}, err
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	dialS := time.Since(dialStart).Seconds()

	results := make([]viewerResult, wc.viewers)
	cpu0 := cpuSeconds()
	start := time.Now()
	window, cancel := context.WithDeadline(ctx, start.Add(wc.duration))
	defer cancel()
	var wg sync.WaitGroup
	for i, conn := range conns {
		wg.Go(func() { results[i] = view(window, conn, start, wc) })
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	rep := summarise(results, elapsed)
	rep.ClientCPU = (cpuSeconds() - cpu0) / elapsed
	rep.DialS = dialS
	return rep, nil
}

// dialAll opens one connection per viewer, a few handshakes at a time.
func dialAll(ctx context.Context, dc dialConfig, n int) ([]*grpc.ClientConn, error) {
	conns := make([]*grpc.ClientConn, n)
	errs := make([]error, n)
	slots := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			conns[i], errs[i] = dc.dial(ctx)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		return nil, err
	}
	return conns, nil
}

// view watches until the video ends, the window closes, or it has its frame budget. With a
// budget the viewer either drains (waits for the server to end the stream itself, as it
// does when it honours Match.max_frames) or cancels at once (for a server that ignores
// max_frames and would otherwise keep sending).
func view(ctx context.Context, conn *grpc.ClientConn, start time.Time, wc watchConfig) viewerResult {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var r viewerResult
	var first time.Duration
	var firstTS float64
	stream, err := conn.NewStream(ctx, &pb.Soccer_ServiceDesc.Streams[0], pb.Soccer_Watch_FullMethodName)
	if err == nil {
		err = stream.SendMsg(wc.request)
	}
	if err == nil {
		err = stream.CloseSend()
	}
	v := &pb.VideoStamp{}
	frame := sized{msg: v}
	for err == nil && (wc.frames == 0 || r.frames < wc.frames) {
		if err = stream.RecvMsg(&frame); err != nil {
			break
		}
		now := time.Since(start)
		if r.frames == 0 {
			first, firstTS = now, v.Timestamp
			r.firstFrameMs = ms(now)
		} else {
			r.lags = append(r.lags, (now-first).Seconds()-(v.Timestamp-firstTS))
		}
		r.frames++
		r.bytes += frame.size
	}
	endedAt := time.Since(start)
	switch {
	case err == nil: // the budget is spent
		if wc.drain {
			for err == nil {
				err = stream.RecvMsg(&frame)
			}
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				r.err = "after the last frame: " + err.Error()
			}
		}
	case errors.Is(err, io.EOF):
	case ctx.Err() != nil && (status.Code(err) == codes.DeadlineExceeded || status.Code(err) == codes.Canceled):
		// The window closed while the stream was still running: it counts to the
		// deadline, so a viewer that stalled near the end is not flattered.
		endedAt = wc.duration
	default:
		r.err = err.Error()
	}
	if r.frames >= 2 {
		r.fps = float64(r.frames-1) / (endedAt - first).Seconds()
	}
	return r
}

func summarise(results []viewerResult, elapsed float64) watchReport {
	rep := watchReport{Viewers: len(results)}
	var lags []float64
	for i, r := range results {
		rep.Frames += r.frames
		rep.Bytes += r.bytes
		if i == 0 || r.fps < rep.MinFPS {
			rep.MinFPS = r.fps
		}
		rep.MeanFPS += r.fps / float64(len(results))
		rep.MaxFirstMs = math.Max(rep.MaxFirstMs, r.firstFrameMs)
		lags = append(lags, r.lags...)
		if r.err != "" {
			if rep.Errors == 0 {
				rep.FirstError = r.err
			}
			rep.Errors++
		}
	}
	slices.Sort(lags)
	rep.P50LagMs = quantile(lags, 0.50) * 1000
	rep.P99LagMs = quantile(lags, 0.99) * 1000
	rep.MBPerS = float64(rep.Bytes) / 1e6 / elapsed
	return rep
}

// quantile of sorted values (nearest rank); 0 when there are none (JSON has no NaN).
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
