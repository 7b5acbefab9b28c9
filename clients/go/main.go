// Command contract-check is a client of the three services in Go, written against proto/
// alone (code generated into ./pb, docs/clients.md says how) and grpc-go's own health and
// reflection v1 clients: it calls every method of every service over mutual TLS and checks
// what the contracts promise, the status codes of bad input and refusals included.
//
//	contract-check -ca certs/ca.crt -cert certs/client.crt -key certs/client.key \
//	    -denied-cert certs/monitor.crt -denied-key certs/monitor.key \
//	    [-cheese 127.0.0.1:50051 -movie 127.0.0.1:50052 -soccer 127.0.0.1:50053]
//
// Each check is one JSON line on stdout ({"check", "ok", "detail"}), then a summary line;
// the exit code is 1 when any check failed. The denied identity must be one the policies
// allow health only (monitor): its business calls must be PERMISSION_DENIED.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"grpcdemo/clients/go/pb"
)

// A raw 720p frame is 2.8 MB, over gRPC's 4 MiB default only from 1080p on; as the
// project's own clients do, allow a raw 4K frame (grpckit/transport/options.py).
const maxReceiveBytes = 32 << 20

const martian = "a8034f44-aee4-44cf-b32c-74cf452aaaae"

type config struct {
	cheese, movie, soccer     string
	ca, cert, key             string
	deniedCert, deniedKey     string
	movies, frames            int
	callTimeout, watchTimeout time.Duration
}

type result struct {
	Check  string `json:"check"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

type report struct {
	mu      sync.Mutex
	results []result
}

func (r *report) add(check string, err error, detail string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := result{Check: check, OK: err == nil, Detail: detail}
	if err != nil {
		res.Detail = err.Error()
	}
	r.results = append(r.results, res)
	_ = json.NewEncoder(os.Stdout).Encode(res)
}

func main() {
	var c config
	flag.StringVar(&c.cheese, "cheese", "127.0.0.1:50051", "cheese host:port")
	flag.StringVar(&c.movie, "movie", "127.0.0.1:50052", "movie host:port")
	flag.StringVar(&c.soccer, "soccer", "127.0.0.1:50053", "soccer host:port")
	flag.StringVar(&c.ca, "ca", "certs/ca.crt", "the CA the servers' certificates chain to")
	flag.StringVar(&c.cert, "cert", "certs/client.crt", "client certificate (identity client)")
	flag.StringVar(&c.key, "key", "certs/client.key", "client key")
	flag.StringVar(&c.deniedCert, "denied-cert", "certs/monitor.crt", "certificate of an identity the policies allow health only")
	flag.StringVar(&c.deniedKey, "denied-key", "certs/monitor.key", "its key")
	flag.IntVar(&c.movies, "movies", 7, "movies in the catalogue (GetListMovies)")
	flag.IntVar(&c.frames, "frames", 300, "frames of the demo match (a whole Watch)")
	flag.DurationVar(&c.callTimeout, "call-timeout", 15*time.Second, "deadline of each call")
	flag.DurationVar(&c.watchTimeout, "watch-timeout", 60*time.Second, "deadline of the whole Watch")
	flag.Parse()

	started := time.Now()
	r := &report{}
	if err := run(c, r); err != nil {
		r.add("setup", err, "")
	}
	failed := 0
	for _, res := range r.results {
		if !res.OK {
			failed++
		}
	}
	_ = json.NewEncoder(os.Stdout).Encode(map[string]any{
		"checks": len(r.results), "failed": failed, "seconds": time.Since(started).Seconds(),
	})
	if failed > 0 {
		os.Exit(1)
	}
}

func run(c config, r *report) error {
	client, err := credentialsOf(c.ca, c.cert, c.key)
	if err != nil {
		return err
	}
	denied, err := credentialsOf(c.ca, c.deniedCert, c.deniedKey)
	if err != nil {
		return err
	}
	conns := map[string]*grpc.ClientConn{}
	for _, target := range []struct{ name, addr string }{
		{"cheese", c.cheese}, {"movie", c.movie}, {"soccer", c.soccer},
		{"cheese-denied", c.cheese}, {"movie-denied", c.movie}, {"soccer-denied", c.soccer},
	} {
		creds := client
		if strings.HasSuffix(target.name, "-denied") {
			creds = denied
		}
		conn, err := grpc.NewClient(target.addr, grpc.WithTransportCredentials(creds),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxReceiveBytes)))
		if err != nil {
			return fmt.Errorf("%s: %w", target.name, err)
		}
		defer conn.Close()
		conns[target.name] = conn
	}

	// The whole match takes its own length (paced in real time): it runs beside the rest.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		watchWhole(c, r, pb.NewSoccerClient(conns["soccer"]))
	}()

	services := map[string]protoreflect.ServiceDescriptor{
		"cheese": pb.File_api_cheese_proto.Services().Get(0),
		"movie":  pb.File_api_movie_proto.Services().Get(0),
		"soccer": pb.File_api_soccer_proto.Services().Get(0),
	}
	for _, name := range []string{"cheese", "movie", "soccer"} {
		checkHealth(c, r, name, conns[name], services[name])
		checkReflection(c, r, name, conns[name], services[name])
		checkHealth(c, r, name+"-denied", conns[name+"-denied"], services[name])
	}
	checkCheese(c, r, pb.NewCheeseServiceClient(conns["cheese"]), pb.NewCheeseServiceClient(conns["cheese-denied"]))
	checkMovie(c, r, pb.NewMovieClient(conns["movie"]), pb.NewMovieClient(conns["movie-denied"]))
	checkSoccer(c, r, pb.NewSoccerClient(conns["soccer"]), pb.NewSoccerClient(conns["soccer-denied"]))
	wg.Wait()
	return nil
}

func credentialsOf(ca, cert, key string) (credentials.TransportCredentials, error) {
	pem, err := os.ReadFile(ca)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", ca)
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, err
	}
	// The server name is the target's host, as gRPC sets it: the edge's certificate names
	// localhost and 127.0.0.1, each server's its own service name.
	return credentials.NewTLS(&tls.Config{
		RootCAs: roots, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12,
	}), nil
}

// call gives each call its deadline and waits for a connection within it: the edge admits a
// few new connections at a time and a client may be told to come back (grpckit/transport/options.py).
func (c config) call() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.callTimeout)
}

var ready = grpc.WaitForReady(true)

// wantCode is nil when err carries the status code want.
func wantCode(err error, want codes.Code) error {
	if err == nil {
		return fmt.Errorf("answered, want %s", want)
	}
	if got := status.Code(err); got != want {
		return fmt.Errorf("got %s (%s), want %s", got, status.Convert(err).Message(), want)
	}
	return nil
}

func checkHealth(c config, r *report, name string, conn *grpc.ClientConn, service protoreflect.ServiceDescriptor) {
	health := healthpb.NewHealthClient(conn)
	for _, asked := range []string{"", string(service.FullName())} {
		ctx, cancel := c.call()
		answer, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: asked}, ready)
		cancel()
		if err == nil && answer.Status != healthpb.HealthCheckResponse_SERVING {
			err = fmt.Errorf("status %s", answer.Status)
		}
		r.add(fmt.Sprintf("%s health %q", name, asked), err, "SERVING")
	}
}

// checkReflection lists the services with reflection v1 alone and describes the service
// from the descriptors it sends: the methods, their types and streaming shapes must be the
// ones this client was generated from.
func checkReflection(c config, r *report, name string, conn *grpc.ClientConn, service protoreflect.ServiceDescriptor) {
	ctx, cancel := context.WithTimeout(context.Background(), c.callTimeout)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx, ready)
	if err != nil {
		r.add(name+" reflection v1", err, "")
		return
	}
	ask := func(req *reflectionpb.ServerReflectionRequest) (*reflectionpb.ServerReflectionResponse, error) {
		if err := stream.Send(req); err != nil {
			return nil, err
		}
		return stream.Recv()
	}
	answer, err := ask(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	var listed []string
	if err == nil {
		for _, s := range answer.GetListServicesResponse().GetService() {
			listed = append(listed, s.Name)
		}
		sort.Strings(listed)
		want := []string{string(service.FullName()), "grpc.health.v1.Health",
			"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}
		sort.Strings(want)
		if strings.Join(listed, ",") != strings.Join(want, ",") {
			err = fmt.Errorf("listed %v, want %v", listed, want)
		}
	}
	r.add(name+" reflection v1 list", err, strings.Join(listed, ","))
	if err != nil {
		return
	}
	answer, err = ask(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{
			FileContainingSymbol: string(service.FullName())}})
	var methods []string
	if err == nil {
		methods, err = describedMethods(answer, service)
	}
	r.add(name+" reflection v1 describe", err, strings.Join(methods, " "))
	_ = stream.CloseSend()
	if _, err := stream.Recv(); err != io.EOF {
		r.add(name+" reflection v1 end", fmt.Errorf("stream ended with %v, want its end", err), "")
	}
}

func describedMethods(answer *reflectionpb.ServerReflectionResponse, service protoreflect.ServiceDescriptor) ([]string, error) {
	files := answer.GetFileDescriptorResponse().GetFileDescriptorProto()
	if len(files) == 0 {
		return nil, fmt.Errorf("no file descriptor in %v", answer)
	}
	var found *descriptorpb.ServiceDescriptorProto
	for _, raw := range files {
		file := &descriptorpb.FileDescriptorProto{}
		if err := proto.Unmarshal(raw, file); err != nil {
			return nil, err
		}
		for _, s := range file.Service {
			full := s.GetName()
			if file.GetPackage() != "" {
				full = file.GetPackage() + "." + full
			}
			if full == string(service.FullName()) {
				found = s
			}
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%s not in the files sent", service.FullName())
	}
	var got, want []string
	for _, m := range found.Method {
		got = append(got, fmt.Sprintf("%s(%s%s)->%s%s", m.GetName(), streaming(m.GetClientStreaming()),
			strings.TrimPrefix(m.GetInputType(), "."), streaming(m.GetServerStreaming()),
			strings.TrimPrefix(m.GetOutputType(), ".")))
	}
	for i := 0; i < service.Methods().Len(); i++ {
		m := service.Methods().Get(i)
		want = append(want, fmt.Sprintf("%s(%s%s)->%s%s", m.Name(), streaming(m.IsStreamingClient()),
			m.Input().FullName(), streaming(m.IsStreamingServer()), m.Output().FullName()))
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		return got, fmt.Errorf("described %v, generated from proto/: %v", got, want)
	}
	return got, nil
}

func streaming(yes bool) string {
	if yes {
		return "stream "
	}
	return ""
}

func checkCheese(c config, r *report, cheese, denied pb.CheeseServiceClient) {
	for value, name := range pb.CheeseType_name {
		ctx, cancel := c.call()
		answer, err := cheese.Order(ctx, &pb.CheeseRequest{Type: pb.CheeseType(value)}, ready)
		cancel()
		if err == nil && answer.Type != pb.CheeseType(value) {
			err = fmt.Errorf("ordered %s, got %s", name, answer.Type)
		}
		r.add("cheese Order "+name, err, fmt.Sprintf("age %d", answer.GetAge()))
	}
	ctx, cancel := c.call()
	_, err := cheese.Order(ctx, &pb.CheeseRequest{Type: 99}, ready)
	cancel()
	r.add("cheese Order unknown type", wantCode(err, codes.InvalidArgument), "INVALID_ARGUMENT")

	// A deadline shorter than the preparation: refused at once, and the server serves on.
	ctx, cancel = context.WithTimeout(context.Background(), time.Millisecond)
	_, err = cheese.Order(ctx, &pb.CheeseRequest{Type: pb.CheeseType_BRIE})
	cancel()
	r.add("cheese Order 1 ms deadline", wantCode(err, codes.DeadlineExceeded), "DEADLINE_EXCEEDED")
	ctx, cancel = c.call()
	_, err = cheese.Order(ctx, &pb.CheeseRequest{Type: pb.CheeseType_BRIE}, ready)
	cancel()
	r.add("cheese Order after the deadline", err, "served")

	ctx, cancel = c.call()
	_, err = denied.Order(ctx, &pb.CheeseRequest{Type: pb.CheeseType_BRIE}, ready)
	cancel()
	r.add("cheese Order by an identity the policy refuses", wantCode(err, codes.PermissionDenied), "PERMISSION_DENIED")
}

func readMovies(stream grpc.ServerStreamingClient[pb.MovieData]) ([]*pb.MovieData, error) {
	var movies []*pb.MovieData
	for {
		movie, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return movies, nil
		}
		if err != nil {
			return movies, err
		}
		movies = append(movies, movie)
	}
}

func checkMovie(c config, r *report, movie, denied pb.MovieClient) {
	ctx, cancel := c.call()
	defer cancel()
	found, err := movie.GetMovieByID(ctx, &pb.MovieID{Id: martian}, ready)
	if err == nil && (found.Title != "The Martian" || found.Director != "Ridley Scott" || found.Id != martian) {
		err = fmt.Errorf("got %v", found)
	}
	r.add("movie GetMovieByID", err, found.GetTitle())
	_, err = movie.GetMovieByID(ctx, &pb.MovieID{Id: "no-such-movie"}, ready)
	r.add("movie GetMovieByID unknown", wantCode(err, codes.NotFound), "NOT_FOUND")
	_, err = movie.GetMovieByID(ctx, &pb.MovieID{Id: ""}, ready)
	r.add("movie GetMovieByID empty", wantCode(err, codes.InvalidArgument), "INVALID_ARGUMENT")

	var movies []*pb.MovieData
	stream, err := movie.GetListMovies(ctx, &pb.Empty{}, ready)
	if err == nil {
		movies, err = readMovies(stream)
	}
	if err == nil && len(movies) != c.movies {
		err = fmt.Errorf("%d movies, want %d", len(movies), c.movies)
	}
	r.add("movie GetListMovies", err, fmt.Sprintf("%d movies", len(movies)))

	found, err = movie.GetMovieByTitle(ctx, &pb.MovieTitle{Title: "the martian"}, ready)
	if err == nil && found.Id != martian {
		err = fmt.Errorf("got %v", found)
	}
	r.add("movie GetMovieByTitle", err, found.GetId())
	_, err = movie.GetMovieByTitle(ctx, &pb.MovieTitle{Title: "no such title"}, ready)
	r.add("movie GetMovieByTitle unknown", wantCode(err, codes.NotFound), "NOT_FOUND")

	stream, err = movie.GetMoviesByDirector(ctx, &pb.Director{Name: "ridley scott"}, ready)
	if err == nil {
		movies, err = readMovies(stream)
	}
	if err == nil && len(movies) == 0 {
		err = errors.New("no movie")
	}
	for _, m := range movies {
		if err == nil && m.Director != "Ridley Scott" {
			err = fmt.Errorf("got %v", m)
		}
	}
	r.add("movie GetMoviesByDirector", err, fmt.Sprintf("%d movies", len(movies)))
	stream, err = movie.GetMoviesByDirector(ctx, &pb.Director{Name: "nobody at all"}, ready)
	if err == nil {
		_, err = readMovies(stream)
	}
	r.add("movie GetMoviesByDirector unknown", wantCode(err, codes.NotFound), "NOT_FOUND")

	_, err = denied.GetMovieByID(ctx, &pb.MovieID{Id: martian}, ready)
	r.add("movie GetMovieByID by an identity the policy refuses", wantCode(err, codes.PermissionDenied), "PERMISSION_DENIED")
}

func firstFrame(c config, soccer pb.SoccerClient, match *pb.Match) (*pb.Video, error) {
	ctx, cancel := c.call()
	defer cancel()
	stream, err := soccer.Watch(ctx, match, ready)
	if err != nil {
		return nil, err
	}
	return stream.Recv()
}

func checkSoccer(c config, r *report, soccer, denied pb.SoccerClient) {
	// The original contract: raw BGR uint8 frames that data_type and data_shape describe.
	ctx, cancel := c.call()
	defer cancel()
	start := int64(0)
	stream, err := soccer.Watch(ctx, &pb.Match{Id: "demo", StartFrame: &start, MaxFrames: 3}, ready)
	frames := 0
	for err == nil {
		var frame *pb.Video
		frame, err = stream.Recv()
		if err != nil {
			break
		}
		frames++
		want := fmt.Sprintf("(%d, %d, 3)", frame.Height, frame.Width)
		if frame.DataType != "uint8" || frame.DataShape != want || len(frame.Data) != int(frame.Height*frame.Width*3) {
			err = fmt.Errorf("frame %d: %s %s with %d bytes, want uint8 %s", frame.FrameIndex,
				frame.DataType, frame.DataShape, len(frame.Data), want)
		}
	}
	if errors.Is(err, io.EOF) {
		err = nil
		if frames != 3 {
			err = fmt.Errorf("%d frames, want 3 (max_frames)", frames)
		}
	}
	r.add("soccer Watch raw frames", err, fmt.Sprintf("%d frames", frames))

	for _, bad := range []struct {
		name  string
		match *pb.Match
		want  codes.Code
	}{
		{"path outside the videos", &pb.Match{Id: "../etc/passwd"}, codes.InvalidArgument},
		{"unknown match", &pb.Match{Id: "no_such_match"}, codes.NotFound},
		{"start past the end", &pb.Match{Id: "demo", StartFrame: proto.Int64(1 << 40)}, codes.OutOfRange},
	} {
		_, err := firstFrame(c, soccer, bad.match)
		r.add("soccer Watch "+bad.name, wantCode(err, bad.want), bad.want.String())
	}
	_, err = firstFrame(c, denied, &pb.Match{Id: "demo", MaxFrames: 1})
	r.add("soccer Watch by an identity the policy refuses", wantCode(err, codes.PermissionDenied), "PERMISSION_DENIED")
}

// watchWhole watches the demo match from its first frame to its end (JPEG, paced in real
// time, as a viewer does): every frame in order, none lost unaccounted.
func watchWhole(c config, r *report, soccer pb.SoccerClient) {
	ctx, cancel := context.WithTimeout(context.Background(), c.watchTimeout)
	defer cancel()
	started := time.Now()
	stream, err := soccer.Watch(ctx, &pb.Match{Id: "demo", Encoding: pb.Encoding_JPEG, StartFrame: proto.Int64(0)}, ready)
	frames, skipped, last := 0, int64(0), int64(-1)
	for err == nil {
		var frame *pb.Video
		frame, err = stream.Recv()
		if err != nil {
			break
		}
		frames++
		skipped += frame.SkippedFrames
		if frame.FrameIndex <= last || frame.Encoding != pb.Encoding_JPEG || len(frame.Data) == 0 {
			err = fmt.Errorf("frame %d after %d: %s, %d bytes", frame.FrameIndex, last, frame.Encoding, len(frame.Data))
		}
		last = frame.FrameIndex
	}
	if errors.Is(err, io.EOF) {
		err = nil
		if int64(frames)+skipped != int64(c.frames) || last != int64(c.frames-1) {
			err = fmt.Errorf("%d frames and %d skipped, last %d; want %d in all", frames, skipped, last, c.frames)
		}
	}
	r.add("soccer Watch whole match", err,
		fmt.Sprintf("%d frames (%d skipped) in %.1f s", frames, skipped, time.Since(started).Seconds()))
}
