// Command viewers is the benchmark's streaming load generator. It is Go, not Python, so
// that the client is never the bottleneck being measured, and it parses the wire format
// by hand so that it needs no generated code.
//
//	viewers watch -addr 127.0.0.1:50053 -ca ca.crt -cert client.crt -key client.key \
//	    -viewers 8 -duration 6s [-encoding jpeg] [-unpaced] [-frames N [-drain]]
//	viewers list -addr 127.0.0.1:50052 -ca ... (or -insecure)
//
// Both print one JSON object on stdout.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "watch" && os.Args[1] != "list") {
		fmt.Fprintln(os.Stderr, "usage: viewers watch|list [flags] (-h for flags)")
		os.Exit(2)
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	var dc dialConfig
	fs.StringVar(&dc.addr, "addr", "127.0.0.1:50053", "server host:port")
	fs.StringVar(&dc.ca, "ca", "certs/ca.crt", "CA certificate")
	fs.StringVar(&dc.cert, "cert", "certs/client.crt", "client certificate")
	fs.StringVar(&dc.key, "key", "certs/client.key", "client key")
	fs.StringVar(&dc.serverName, "server-name", "localhost", "name to verify the server certificate against")
	fs.BoolVar(&dc.insecure, "insecure", false, "plaintext")
	window := fs.Int("window", 0, "static HTTP/2 window in bytes (0 = gRPC's dynamic default)")
	var wc watchConfig
	var encoding string
	var perViewer bool
	fs.IntVar(&wc.viewers, "viewers", 1, "concurrent viewers, one connection each")
	fs.DurationVar(&wc.duration, "duration", 6*time.Second, "measurement window")
	fs.StringVar(&wc.request.id, "match", "demo", "match id")
	fs.StringVar(&encoding, "encoding", "raw", "raw or jpeg")
	fs.Uint64Var(&wc.request.jpegQuality, "jpeg-quality", 0, "0 = server default")
	fs.Uint64Var(&wc.frames, "frames", 0, "stop after this many frames (0 = at the end of the window or video)")
	fs.BoolVar(&wc.drain, "drain", false, "with -frames: ask the server for that many (Match.max_frames) and wait for it to end the stream, instead of cancelling")
	fs.BoolVar(&wc.request.unpaced, "unpaced", false, "ask for frames as fast as they can be read")
	fs.Float64Var(&wc.minFPS, "min-fps", 29, "every viewer must average at least this")
	fs.DurationVar(&wc.maxLag, "max-lag", 200*time.Millisecond, "p99 frame lag must stay below this")
	fs.DurationVar(&wc.maxFirst, "max-first", time.Second, "every viewer's first frame must arrive within this")
	fs.BoolVar(&perViewer, "per-viewer", false, "include every viewer's figures")
	_ = fs.Parse(os.Args[2:])

	dc.window = int32(*window)
	if wc.drain {
		wc.request.maxFrames = wc.frames
	}
	ctx := context.Background()
	var report any
	var err error
	switch mode {
	case "watch":
		switch encoding {
		case "raw":
		case "jpeg":
			wc.request.encoding = 1
		default:
			err = fmt.Errorf("unknown encoding %q", encoding)
		}
		if err == nil {
			report, err = watch(ctx, dc, wc, perViewer)
		}
	case "list":
		report, err = list(ctx, dc)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "viewers:", err)
		os.Exit(1)
	}
	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(report); err != nil {
		fmt.Fprintln(os.Stderr, "viewers:", err)
		os.Exit(1)
	}
}

// cpuSeconds this process has used: the client's own load is part of every report, so a
// saturated client is visible instead of being mistaken for a slow server.
func cpuSeconds() float64 {
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		return 0
	}
	return time.Duration(u.Utime.Nano() + u.Stime.Nano()).Seconds()
}
