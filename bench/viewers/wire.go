package main

// The wire format without generated code: the benchmark must not depend on protoc, and
// a viewer needs only four numbers from each Video message, not its megabytes of pixels
// copied into a struct.

import (
	"errors"
	"fmt"
	"math"

	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/encoding/protowire"
)

// match is stream.Match (proto/api/soccer.proto).
type match struct {
	id          string
	encoding    uint64 // 0 raw, 1 jpeg
	jpegQuality uint64
	startFrame  uint64
	maxFrames   uint64
	unpaced     bool
}

func (m match) marshal() []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, m.id)
	for _, f := range []struct {
		num   protowire.Number
		value uint64
	}{{2, m.encoding}, {3, m.jpegQuality}, {4, m.startFrame}, {5, m.maxFrames}} {
		if f.value != 0 {
			b = protowire.AppendTag(b, f.num, protowire.VarintType)
			b = protowire.AppendVarint(b, f.value)
		}
	}
	if m.unpaced {
		b = protowire.AppendTag(b, 6, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	return b
}

// frame is what a viewer keeps of one stream.Video: the rest is skipped, not copied.
type frame struct {
	size          int
	index         int64
	timestamp     float64
	skippedFrames int64
}

func (f *frame) parse(b []byte) error {
	*f = frame{size: len(b)}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == 4 && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			f.index = int64(v)
		case num == 5 && typ == protowire.Fixed64Type:
			var v uint64
			v, n = protowire.ConsumeFixed64(b)
			f.timestamp = math.Float64frombits(v)
		case num == 9 && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			f.skippedFrames = int64(v)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

// counted is a message of which only the size matters (GetListMovies).
type counted struct{ size int }

// rawCodec passes request bytes through and parses responses in place: gRPC returns the
// receive buffer to its pool once Unmarshal returns, so nothing here keeps a reference.
type rawCodec struct{}

var _ encoding.Codec = rawCodec{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	switch out := v.(type) {
	case *frame:
		return out.parse(data)
	case *counted:
		out.size = len(data)
		return nil
	case *[]byte:
		*out = append((*out)[:0], data...)
		return nil
	}
	return errors.New("rawCodec: unsupported message type")
}
