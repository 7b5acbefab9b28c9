package main

// The wire format without generated code: the benchmark must not depend on protoc, and
// a viewer needs only four numbers from each Video message, not its megabytes of pixels
// copied into a struct.

import (
	"errors"
	"fmt"
	"io"
	"math"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
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

func (f *frame) parse(data mem.BufferSlice) error {
	*f = frame{size: data.Len()}
	c := cursor{bufs: data}
	for !c.done() {
		tag, err := c.varint()
		if err != nil {
			return err
		}
		num, typ := protowire.Number(tag>>3), protowire.Type(tag&7)
		var v uint64
		switch typ {
		case protowire.VarintType:
			v, err = c.varint()
		case protowire.Fixed64Type:
			v, err = c.fixed64()
		case protowire.Fixed32Type:
			err = c.skip(4)
		case protowire.BytesType:
			if v, err = c.varint(); err == nil {
				err = c.skip(v)
			}
		default:
			err = fmt.Errorf("unexpected wire type %d", typ)
		}
		if err != nil {
			return err
		}
		switch {
		case num == 4 && typ == protowire.VarintType:
			f.index = int64(v)
		case num == 5 && typ == protowire.Fixed64Type:
			f.timestamp = math.Float64frombits(v)
		case num == 9 && typ == protowire.VarintType:
			f.skippedFrames = int64(v)
		}
	}
	return nil
}

// counted is a message of which only the size matters (GetListMovies).
type counted struct{ size int }

// rawCodec passes request bytes through and parses responses where they lie, across the
// receive buffers: a raw 720p frame is 2.7 MB, and copying it into one slice first (what a
// V1 codec is handed) costs the client as much CPU as a few more viewers. gRPC frees the
// buffers once Unmarshal returns, so nothing here keeps a reference.
type rawCodec struct{}

var _ encoding.CodecV2 = rawCodec{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch out := v.(type) {
	case *frame:
		return out.parse(data)
	case *counted:
		out.size = data.Len()
		return nil
	}
	return errors.New("rawCodec: unsupported message type")
}

// cursor reads a message spread over several buffers without joining them.
type cursor struct {
	bufs mem.BufferSlice
	i    int // current buffer
	off  int // offset in it
}

func (c *cursor) done() bool {
	for c.i < len(c.bufs) && c.off >= c.bufs[c.i].Len() {
		c.i, c.off = c.i+1, 0
	}
	return c.i >= len(c.bufs)
}

func (c *cursor) byte() (byte, error) {
	if c.done() {
		return 0, io.ErrUnexpectedEOF
	}
	b := c.bufs[c.i].ReadOnlyData()[c.off]
	c.off++
	return b, nil
}

func (c *cursor) skip(n uint64) error {
	for n > 0 {
		if c.done() {
			return io.ErrUnexpectedEOF
		}
		step := min(n, uint64(c.bufs[c.i].Len()-c.off))
		c.off += int(step)
		n -= step
	}
	return nil
}

func (c *cursor) varint() (uint64, error) {
	var v uint64
	for shift := 0; shift < 64; shift += 7 {
		b, err := c.byte()
		if err != nil {
			return 0, err
		}
		v |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return v, nil
		}
	}
	return 0, errors.New("varint overflow")
}

func (c *cursor) fixed64() (uint64, error) {
	var v uint64
	for i := 0; i < 8; i++ {
		b, err := c.byte()
		if err != nil {
			return 0, err
		}
		v |= uint64(b) << (8 * i)
	}
	return v, nil
}
