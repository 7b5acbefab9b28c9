// Command viewers is the benchmark's streaming load generator. It is Go, not Python, so
// that the client is never the bottleneck being measured. The message types and stubs in
// ./pb are generated from proto/api and frame.proto by bench/tools.py (protoc with the Go
// plugins that go.mod pins as tools).
//
//	viewers watch -addr 127.0.0.1:50053 -ca ca.crt -cert client.crt -key client.key \
//	    -viewers 8 -duration 6s [-encoding jpeg] [-unpaced] [-frames N [-drain]]
//	viewers list -addr 127.0.0.1:50052 -ca ... (or -insecure)
//
// Both print one JSON object of measurements on stdout; bench/ decides what passes.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"

	"grpcdemo/bench/viewers/pb"
)

const maxReceiveBytes = 32 << 20 // mirrors grpckit/transport/options.py: one raw 4K frame

type dialConfig struct {
	addr, ca, cert, key string
	insecure            bool
}

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
	fs.BoolVar(&dc.insecure, "insecure", false, "plaintext")
	var wc watchConfig
	var encoding string
	wc.request = &pb.Match{}
	fs.IntVar(&wc.viewers, "viewers", 1, "concurrent viewers, one connection each")
	fs.DurationVar(&wc.duration, "duration", 6*time.Second, "deadline of the whole run")
	fs.StringVar(&wc.request.Id, "match", "demo", "match id")
	fs.StringVar(&encoding, "encoding", "raw", "raw or jpeg")
	fs.BoolVar(&wc.request.Unpaced, "unpaced", false, "ask for frames as fast as they can be read")
	fs.IntVar(&wc.frames, "frames", 0, "stop after this many frames (0 = at the end of the window or video)")
	fs.BoolVar(&wc.drain, "drain", false, "with -frames: ask the server for that many (Match.max_frames) and wait for it to end the stream, instead of cancelling")
	_ = fs.Parse(os.Args[2:])

	ctx := context.Background()
	var report any
	var err error
	if mode == "list" {
		report, err = list(ctx, dc)
	} else if value, known := pb.Encoding_value[strings.ToUpper(encoding)]; !known {
		err = fmt.Errorf("unknown encoding %q", encoding)
	} else {
		wc.request.Encoding = pb.Encoding(value)
		if wc.drain {
			wc.request.MaxFrames = int64(wc.frames)
		}
		report, err = watch(ctx, dc, wc)
	}
	if err == nil {
		err = json.NewEncoder(os.Stdout).Encode(report)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "viewers:", err)
		os.Exit(1)
	}
}

func (d dialConfig) credentials() (credentials.TransportCredentials, error) {
	if d.insecure {
		return insecure.NewCredentials(), nil
	}
	pem, err := os.ReadFile(d.ca)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", d.ca)
	}
	pair, err := tls.LoadX509KeyPair(d.cert, d.key)
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(&tls.Config{
		RootCAs:      roots,
		Certificates: []tls.Certificate{pair},
		ServerName:   "localhost",
		MinVersion:   tls.VersionTLS12,
	}), nil
}

// dial opens one connection, the way a real viewer has its own, and waits until it is
// ready so that handshakes happen before any measurement starts.
func (d dialConfig) dial(ctx context.Context) (*grpc.ClientConn, error) {
	creds, err := d.credentials()
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("passthrough:///"+d.addr,
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(maxReceiveBytes),
			grpc.ForceCodecV2(skimCodec{encoding.GetCodecV2("proto")})))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn.Connect()
	for state := conn.GetState(); state != connectivity.Ready; state = conn.GetState() {
		if !conn.WaitForStateChange(ctx, state) {
			conn.Close()
			return nil, fmt.Errorf("connection not ready within a minute (last state %s)", state)
		}
	}
	return conn, nil
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

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
