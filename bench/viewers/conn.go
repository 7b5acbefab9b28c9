package main

// Connections made the way a real viewer makes them: one per viewer, mutual TLS with the
// client certificate, and a receive limit big enough for one raw frame.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

const maxReceiveBytes = 32 << 20 // mirrors grpckit/options.py

type dialConfig struct {
	addr       string
	ca         string
	cert       string
	key        string
	serverName string
	insecure   bool
	window     int32 // HTTP/2 stream and connection window; 0 = gRPC's dynamic (BDP) default
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
		ServerName:   d.serverName,
		MinVersion:   tls.VersionTLS12,
	}), nil
}

// dial opens a connection and waits until it is ready, so that handshakes happen before
// any measurement window starts.
func (d dialConfig) dial(ctx context.Context) (*grpc.ClientConn, error) {
	creds, err := d.credentials()
	if err != nil {
		return nil, err
	}
	options := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(
			grpc.ForceCodecV2(rawCodec{}),
			grpc.MaxCallRecvMsgSize(maxReceiveBytes),
		),
	}
	if d.window > 0 {
		options = append(options,
			grpc.WithStaticStreamWindowSize(d.window), grpc.WithStaticConnWindowSize(d.window))
	}
	conn, err := grpc.NewClient("passthrough:///"+d.addr, options...)
	if err != nil {
		return nil, err
	}
	conn.Connect()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		state := conn.GetState()
		if state == connectivity.Ready {
			return conn, nil
		}
		if !conn.WaitForStateChange(ctx, state) {
			conn.Close()
			return nil, errors.New("connection not ready within 60s (last state " + state.String() + ")")
		}
	}
}
