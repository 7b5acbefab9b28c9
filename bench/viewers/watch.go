package main

// N viewers of one match, each on its own connection, all starting together. What counts
// is what a person watching would notice: frames per second, and how far behind the
// broadcast clock each frame arrives.

import (
	"context"
	"errors"
	"io"
	"math"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const watchMethod = "/stream.Soccer/Watch"

type watchConfig struct {
	viewers  int
	duration time.Duration
	request  match
	frames   uint64 // the viewer's frame budget; 0 = none
	drain    bool   // after the budget, wait for the server to end the stream
	minFPS   float64
	maxLag   time.Duration
	maxFirst time.Duration // a viewer queued behind others has not been served
}

type viewerResult struct {
	Frames       int     `json:"frames"`
	Bytes        int64   `json:"bytes"`
	FPS          float64 `json:"fps"`
	FirstFrameMs float64 `json:"first_frame_ms"`
	MaxLagMs     float64 `json:"max_lag_ms"`
	Skipped      int64   `json:"skipped_frames"`
	End          string  `json:"end"` // eof, frames, window or error
	Error        string  `json:"error,omitempty"`

	lags    []float64 // seconds, one per frame after the first
	endedAt time.Duration
}

type watchReport struct {
	Mode             string         `json:"mode"`
	FramesBudget     uint64         `json:"frames_budget"`
	Drain            bool           `json:"drain"`
	Viewers          int            `json:"viewers"`
	Encoding         string         `json:"encoding"`
	Unpaced          bool           `json:"unpaced"`
	WindowS          float64        `json:"window_s"`
	ElapsedS         float64        `json:"elapsed_s"`
	Frames           int            `json:"frames"`
	MBPerS           float64        `json:"mb_per_s"`
	FramesPerS       float64        `json:"frames_per_s"`
	MinFPS           float64        `json:"min_fps"`
	MeanFPS          float64        `json:"mean_fps"`
	P50LagMs         float64        `json:"p50_lag_ms"`
	P99LagMs         float64        `json:"p99_lag_ms"`
	MaxFirstMs       float64        `json:"max_first_frame_ms"`
	Errors           int            `json:"errors"`
	FirstError       string         `json:"first_error,omitempty"`
	ClientCPU        float64        `json:"client_cpu"` // CPU seconds per wall second
	FPSOK            bool           `json:"fps_ok"`
	FirstOK          bool           `json:"first_frame_ok"`
	LagOK            bool           `json:"lag_ok"`
	OK               bool           `json:"ok"`
	PerViewer        []viewerResult `json:"per_viewer,omitempty"`
	DialS            float64        `json:"dial_s"`
	ThresholdFPS     float64        `json:"threshold_fps"`
	ThresholdLagMs   float64        `json:"threshold_lag_ms"`
	ThresholdFirstMs float64        `json:"threshold_first_frame_ms"`
}

func watch(ctx context.Context, dc dialConfig, wc watchConfig, perViewer bool) (watchReport, error) {
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

	request := wc.request.marshal()
	results := make([]viewerResult, wc.viewers)
	cpu0 := cpuSeconds()
	start := time.Now()
	window, cancel := context.WithDeadline(ctx, start.Add(wc.duration))
	defer cancel()
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i] = view(window, conns[i], request, start, wc)
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuSeconds() - cpu0

	return summarise(wc, results, elapsed, cpu/elapsed.Seconds(), dialS, perViewer), nil
}

// dialAll opens one connection per viewer, a few handshakes at a time.
func dialAll(ctx context.Context, dc dialConfig, n int) ([]*grpc.ClientConn, error) {
	conns := make([]*grpc.ClientConn, n)
	errs := make([]error, n)
	slots := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			slots <- struct{}{}
			defer func() { <-slots }()
			conns[i], errs[i] = dc.dial(ctx)
		}(i)
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

// view watches until the video ends, the window closes, or it has `frames` frames (0: no
// limit). With a frame budget the viewer either drains (waits for the server to end the
// stream itself, as it does when it honours Match.max_frames) or cancels at once (for a
// server that ignores max_frames and would otherwise keep sending).
func view(ctx context.Context, conn *grpc.ClientConn, request []byte, start time.Time, wc watchConfig) viewerResult {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var r viewerResult
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, watchMethod)
	if err == nil {
		err = stream.SendMsg(&request)
	}
	if err == nil {
		err = stream.CloseSend()
	}
	var first time.Duration
	var firstTS float64
	var f frame
	budget := int(wc.frames)
	for err == nil && (budget == 0 || r.Frames < budget) {
		if err = stream.RecvMsg(&f); err != nil {
			break
		}
		now := time.Since(start)
		if r.Frames == 0 {
			first, firstTS = now, f.timestamp
			r.FirstFrameMs = ms(now)
		} else {
			lag := (now - first).Seconds() - (f.timestamp - firstTS)
			r.lags = append(r.lags, lag)
			r.MaxLagMs = math.Max(r.MaxLagMs, lag*1000)
		}
		r.Frames++
		r.Bytes += int64(f.size)
		r.Skipped = max(r.Skipped, f.skippedFrames)
	}
	r.endedAt = time.Since(start)
	if err == nil { // the budget is spent
		r.End = "frames"
		if wc.drain {
			for err == nil {
				err = stream.RecvMsg(&f)
			}
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				r.End, r.Error = "error", "after the last frame: "+err.Error()
			}
		}
	} else {
		switch {
		case errors.Is(err, io.EOF):
			r.End = "eof"
		case ctx.Err() != nil && (status.Code(err) == codes.DeadlineExceeded || status.Code(err) == codes.Canceled):
			// The window closed while the stream was still running: it counts to the
			// deadline, so a viewer that stalled near the end is not flattered.
			r.End = "window"
			r.endedAt = wc.duration
		default:
			r.End = "error"
			r.Error = err.Error()
		}
	}
	if r.Frames >= 2 {
		r.FPS = float64(r.Frames-1) / (r.endedAt - first).Seconds()
	}
	return r
}

func summarise(wc watchConfig, results []viewerResult, elapsed time.Duration, cpu, dialS float64, perViewer bool) watchReport {
	rep := watchReport{
		Mode:             "watch",
		FramesBudget:     wc.frames,
		Drain:            wc.drain,
		Viewers:          wc.viewers,
		Encoding:         map[uint64]string{0: "raw", 1: "jpeg"}[wc.request.encoding],
		Unpaced:          wc.request.unpaced,
		WindowS:          wc.duration.Seconds(),
		ElapsedS:         elapsed.Seconds(),
		ClientCPU:        cpu,
		DialS:            dialS,
		ThresholdFPS:     wc.minFPS,
		ThresholdLagMs:   ms(wc.maxLag),
		ThresholdFirstMs: ms(wc.maxFirst),
		MinFPS:           math.Inf(1),
	}
	var lags []float64
	var bytes int64
	for _, r := range results {
		rep.Frames += r.Frames
		bytes += r.Bytes
		rep.MinFPS = math.Min(rep.MinFPS, r.FPS)
		rep.MeanFPS += r.FPS / float64(len(results))
		rep.MaxFirstMs = math.Max(rep.MaxFirstMs, r.FirstFrameMs)
		lags = append(lags, r.lags...)
		if r.End == "error" {
			if rep.Errors == 0 {
				rep.FirstError = r.Error
			}
			rep.Errors++
		}
	}
	if len(results) == 0 {
		rep.MinFPS = 0
	}
	sort.Float64s(lags)
	rep.P50LagMs = ms(time.Duration(quantile(lags, 0.50) * float64(time.Second)))
	rep.P99LagMs = ms(time.Duration(quantile(lags, 0.99) * float64(time.Second)))
	rep.MBPerS = float64(bytes) / 1e6 / elapsed.Seconds()
	rep.FramesPerS = float64(rep.Frames) / elapsed.Seconds()
	rep.FPSOK = rep.MinFPS >= wc.minFPS
	rep.LagOK = len(lags) > 0 && rep.P99LagMs < ms(wc.maxLag)
	rep.FirstOK = rep.MaxFirstMs <= ms(wc.maxFirst)
	rep.OK = rep.FPSOK && rep.LagOK && rep.FirstOK && rep.Errors == 0
	if perViewer {
		rep.PerViewer = results
	}
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

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
