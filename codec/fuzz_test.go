package codec_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// fuzzTypes are parameter lists of the shapes worker methods take.
var fuzzTypes = [][]reflect.Type{
	nil,
	{reflect.TypeFor[int](), reflect.TypeFor[string]()},
	{reflect.TypeFor[[]int]()},
	{reflect.TypeFor[map[string]any]()},
	{reflect.TypeFor[any]()},
	{reflect.TypeFor[*plain](), reflect.TypeFor[tagged]()},
	{reflect.TypeFor[time.Time](), reflect.TypeFor[[]byte]()},
	{reflect.TypeFor[[3]int8](), reflect.TypeFor[float32](), reflect.TypeFor[bool](), reflect.TypeFor[uint16]()},
	{reflect.TypeFor[wire.Progress](), reflect.TypeFor[map[int]string]()},
	{reflect.TypeFor[[][]string]()},
}

func FuzzDecodeArgs(f *testing.F) {
	seeds := [][]any{
		{42, "short"},
		{[]int{1, 2, 3}},
		{map[string]any{"a": 1, "b": []any{"x", 2.5}}},
		{&plain{Name: "p", Tags: []string{"t"}, Inner: &plain{}}, tagged{ID: "i"}},
		{time.Unix(1700000000, 5), []byte{1, 2}},
		{[3]int8{1, -1, 0}, float32(1.5), true, uint16(9)},
		{wire.Progress{Seq: 1, Bar: "b", N: 2, Total: 3}, map[int]string{1: "one"}},
	}
	for _, args := range seeds {
		for _, c := range []codec.Codec{codec.Msgpack, codec.JSON} {
			b, err := c.AppendArgs(nil, args)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b, c == codec.JSON)
		}
	}
	f.Add([]byte{0x91, 0xdd, 0xff, 0xff, 0xff, 0xff}, false)
	f.Add([]byte(`42`), true)
	f.Fuzz(func(t *testing.T, data []byte, useJSON bool) {
		c := codec.Msgpack
		if useJSON {
			c = codec.JSON
		}
		for _, types := range fuzzTypes {
			vals, err := c.DecodeArgs(data, types)
			if err != nil {
				if !errors.As(err, new(*codec.ArgsError)) {
					t.Fatalf("DecodeArgs(%x, %v): error %q is not an *ArgsError", data, types, err)
				}
				continue
			}
			if len(vals) != len(types) {
				t.Fatalf("DecodeArgs(%x, %v) returned %d values", data, types, len(vals))
			}
			for i, v := range vals {
				if v.Type() != types[i] {
					t.Fatalf("DecodeArgs(%x, %v): value %d has type %v", data, types, i, v.Type())
				}
			}
		}
		var v any
		_ = c.Unmarshal(data, &v)
	})
}
