package msgp_test

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/natsfleet/natsfleet/internal/msgp"
)

// TestAppendMatchesMsgpack: the hand-written headers and strings are byte for byte what msgpack/v5 writes, at every
// size boundary of their forms.
func TestAppendMatchesMsgpack(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 15, 16, 31, 32, 255, 256, 65535, 65536} {
		var buf bytes.Buffer
		enc := msgpack.NewEncoder(&buf)
		s := strings.Repeat("s", n)
		if err := enc.EncodeString(s); err != nil {
			t.Fatal(err)
		}
		if got := msgp.AppendString(nil, s); !bytes.Equal(got, buf.Bytes()) {
			t.Errorf("AppendString(%d bytes) = % x..., msgpack writes % x...", n, got[:min(len(got), 6)], buf.Bytes()[:min(buf.Len(), 6)])
		}
		for _, c := range []struct {
			name   string
			append func([]byte, int) []byte
			encode func(int) error
		}{
			{"array", msgp.AppendArrayLen, enc.EncodeArrayLen},
			{"map", msgp.AppendMapLen, enc.EncodeMapLen},
		} {
			buf.Reset()
			if err := c.encode(n); err != nil {
				t.Fatal(err)
			}
			if got := c.append(nil, n); !bytes.Equal(got, buf.Bytes()) {
				t.Errorf("%s header of %d = % x, msgpack writes % x", c.name, n, got, buf.Bytes())
			}
		}
	}
}

// TestReader reads what msgpack/v5 writes: containers, strings and binaries in each of their forms, and whole values
// of any kind as raw views.
func TestReader(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 300)
	value := map[string]any{"z": []any{1, "two", 3.5, nil, map[string]any{"k": true}}}
	rawValue, err := msgpack.Marshal(value)
	if err != nil {
		t.Fatal(err)
	}
	data, err := msgpack.Marshal([]any{
		"short", long, []byte("bin"), nil, msgpack.RawMessage(rawValue), make([]int, 20),
	})
	if err != nil {
		t.Fatal(err)
	}
	r := msgp.NewReader(data)
	if n, err := r.ArrayLen(); err != nil || n != 6 {
		t.Fatalf("ArrayLen = %d, %v; want 6", n, err)
	}
	for _, want := range []string{"short", long, "bin", ""} {
		if got, err := r.Str(); err != nil || string(got) != want {
			t.Fatalf("Str = %.10q, %v; want %.10q", got, err, want)
		}
	}
	if got, err := r.Raw(); err != nil || !bytes.Equal(got, rawValue) {
		t.Fatalf("Raw = % x, %v; want % x", got, err, rawValue)
	}
	if n, err := r.ArrayLen(); err != nil || n != 20 {
		t.Fatalf("array16 ArrayLen = %d, %v; want 20", n, err)
	}
	for range 20 {
		if _, err := r.Raw(); err != nil {
			t.Fatal(err)
		}
	}
	if r.Len() != 0 {
		t.Fatalf("%d bytes left", r.Len())
	}
}

// TestReaderMalformed: wrong kinds, truncation and lengths larger than the data fail with an *Error, naming the
// offset, and never read past the end.
func TestReaderMalformed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		data []byte
		read func(*msgp.Reader) error
		want string
	}{
		{"empty array", nil, func(r *msgp.Reader) error { _, err := r.ArrayLen(); return err }, "end of data"},
		{"string as array", []byte{0xa1, 'x'}, func(r *msgp.Reader) error { _, err := r.ArrayLen(); return err }, "not an array"},
		{"array as map", []byte{0x91, 0x01}, func(r *msgp.Reader) error { _, err := r.MapLen(); return err }, "not a map"},
		{"array beyond data", []byte{0xdc, 0xff, 0xff, 0x01}, func(r *msgp.Reader) error { _, err := r.ArrayLen(); return err }, "exceeds"},
		{"map beyond data", []byte{0x82, 0xa1, 'k', 0x01}, func(r *msgp.Reader) error { _, err := r.MapLen(); return err }, "exceeds"},
		{"truncated array16", []byte{0xdc, 0x00}, func(r *msgp.Reader) error { _, err := r.ArrayLen(); return err }, "not an array"},
		{"int as string", []byte{0x05}, func(r *msgp.Reader) error { _, err := r.Str(); return err }, "not a string"},
		{"string beyond data", []byte{0xd9, 0x10, 'a'}, func(r *msgp.Reader) error { _, err := r.Str(); return err }, "exceeds"},
		{"truncated str32", []byte{0xdb, 0x00, 0x00}, func(r *msgp.Reader) error { _, err := r.Str(); return err }, "not a string"},
		{"raw beyond data", []byte{0x92, 0x01}, func(r *msgp.Reader) error { _, err := r.Raw(); return err }, "exceeds"},
		{"raw truncated", []byte{0x92, 0x91, 0x01}, func(r *msgp.Reader) error { _, err := r.Raw(); return err }, "end of data"},
		{"raw invalid code", []byte{0xc1}, func(r *msgp.Reader) error { _, err := r.Raw(); return err }, "invalid code"},
	}
	for _, tc := range tests {
		err := tc.read(msgp.NewReader(tc.data))
		if !errors.As(err, new(*msgp.Error)) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want a *msgp.Error with %q", tc.name, err, tc.want)
		}
	}
}

// DecodeInteger gives what msgpack gives for every integer form a Go integer type encodes to, and leaves everything
// else to msgpack.
func TestDecodeInteger(t *testing.T) {
	t.Parallel()
	values := []any{0, 5, -5, 127, 128, 255, 256, -32, -33, -128, -129, 60000, -300, -70000, int64(4e9),
		int64(1) << 40, int64(-1) << 50, int64(math.MaxInt64), int64(math.MinInt64),
		int8(-7), int16(-300), int32(-70000), uint8(200), uint16(60000), uint32(4e9)}
	for _, v := range values {
		raw, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var want int64
		if err := msgpack.Unmarshal(raw, &want); err != nil {
			t.Fatal(err)
		}
		if got, ok := msgp.DecodeInteger[int64](raw); !ok || got != want {
			t.Errorf("%T %v (% x): DecodeInteger[int64] = %d, %v; want %d", v, v, raw, got, ok, want)
		}
		if got, ok := msgp.DecodeInteger[int](raw); !ok || int64(got) != want {
			t.Errorf("%T %v (% x): DecodeInteger[int] = %d, %v; want %d", v, v, raw, got, ok, want)
		}
		if _, ok := msgp.DecodeInteger[string](raw); ok {
			t.Errorf("%T %v: decoded into a string", v, v)
		}
	}
	for _, v := range []any{uint64(math.MaxUint64), nil, 1.5, "7", []byte{7}, true} {
		raw, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := msgp.DecodeInteger[int64](raw); ok {
			t.Errorf("%T %v (% x): decoded as the integer %d", v, v, raw, got)
		}
	}
	if _, ok := msgp.DecodeInteger[int](nil); ok {
		t.Error("decoded an empty value")
	}
}
