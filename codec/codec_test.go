package codec_test

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/internal/wire"
)

var codecs = []struct {
	name string
	c    codec.Codec
}{{"msgpack", codec.Msgpack}, {"json", codec.JSON}}

type plain struct {
	Name  string
	Count int
	Tags  []string
	Inner *plain
}

type tagged struct {
	ID       string            `json:"id"`
	Score    float64           `json:"score,omitempty"`
	Labels   map[string]string `json:"labels"`
	internal int
}

// roundTrip marshals v with c and unmarshals the bytes into a new T.
func roundTrip[T any](t *testing.T, c codec.Codec, v T) T {
	t.Helper()
	b, err := c.Marshal(v)
	if err != nil {
		t.Fatalf("Marshal(%#v): %v", v, err)
	}
	var got T
	if err := c.Unmarshal(b, &got); err != nil {
		t.Fatalf("Unmarshal(%q) into %T: %v", b, &got, err)
	}
	return got
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	n := 7
	when := time.Date(2024, 3, 5, 10, 11, 12, 123456789, time.UTC)
	for _, cc := range codecs {
		t.Run(cc.name, func(t *testing.T) {
			t.Parallel()
			c := cc.c
			cases := []struct {
				name string
				run  func(t *testing.T) (got, want any)
			}{
				{"int", func(t *testing.T) (any, any) { return roundTrip(t, c, 42), 42 }},
				{"negative int64", func(t *testing.T) (any, any) { return roundTrip(t, c, int64(-1<<40)), int64(-1 << 40) }},
				{"uint8", func(t *testing.T) (any, any) { return roundTrip(t, c, uint8(255)), uint8(255) }},
				{"float64", func(t *testing.T) (any, any) { return roundTrip(t, c, 2.5), 2.5 }},
				{"bool", func(t *testing.T) (any, any) { return roundTrip(t, c, true), true }},
				{"string", func(t *testing.T) (any, any) { return roundTrip(t, c, "héllo <world>"), "héllo <world>" }},
				{"empty string", func(t *testing.T) (any, any) { return roundTrip(t, c, ""), "" }},
				{"plain struct", func(t *testing.T) (any, any) {
					v := plain{Name: "a", Count: 3, Tags: []string{"x", "y"}, Inner: &plain{Name: "b"}}
					return roundTrip(t, c, v), v
				}},
				{"json-tagged struct", func(t *testing.T) (any, any) {
					v := tagged{ID: "w1", Score: 0.5, Labels: map[string]string{"zone": "a"}}
					return roundTrip(t, c, v), v
				}},
				{"slice", func(t *testing.T) (any, any) { return roundTrip(t, c, []int{1, -2, 300000}), []int{1, -2, 300000} }},
				{"map", func(t *testing.T) (any, any) {
					v := map[string][]int{"a": {1}, "b": {2, 3}}
					return roundTrip(t, c, v), v
				}},
				{"pointer", func(t *testing.T) (any, any) { return *roundTrip(t, c, &n), 7 }},
				{"nil pointer", func(t *testing.T) (any, any) { return roundTrip[*int](t, c, nil), (*int)(nil) }},
				{"bytes", func(t *testing.T) (any, any) { return roundTrip(t, c, []byte{0, 1, 0xff}), []byte{0, 1, 0xff} }},
				{"error body", func(t *testing.T) (any, any) {
					v := wire.Error{Type: "*fs.PathError", Message: "open x: no such file", Stack: "main.go:1", Code: "fleet.ErrUnknownMethod"}
					return roundTrip(t, c, v), v
				}},
				{"progress body", func(t *testing.T) (any, any) {
					v := wire.Progress{Seq: 9, Bar: "main", Desc: "rows", N: 50, Total: 100, Done: true}
					return roundTrip(t, c, v), v
				}},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					got, want := tc.run(t)
					if !reflect.DeepEqual(got, want) {
						t.Fatalf("got %#v, want %#v", got, want)
					}
				})
			}
			t.Run("time", func(t *testing.T) {
				if got := roundTrip(t, c, when); !got.Equal(when) {
					t.Fatalf("got %v, want %v", got, when)
				}
			})
		})
	}
}

func TestArgsRoundTrip(t *testing.T) {
	t.Parallel()
	when := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	args := []any{
		42, "short", -7.25, true, []byte("raw"), []string{"a", "b"}, map[string]int{"k": 1},
		plain{Name: "p", Count: 2}, &tagged{ID: "t", Labels: map[string]string{}}, when, uint64(1 << 63),
	}
	types := make([]reflect.Type, len(args))
	for i, a := range args {
		types[i] = reflect.TypeOf(a)
	}
	for _, cc := range codecs {
		t.Run(cc.name, func(t *testing.T) {
			t.Parallel()
			prefix := []byte("keep")
			body, err := cc.c.AppendArgs(prefix, args)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(body, []byte("keep")) {
				t.Fatalf("AppendArgs dropped dst: %q", body)
			}
			vals, err := cc.c.DecodeArgs(body[len("keep"):], types)
			if err != nil {
				t.Fatal(err)
			}
			if len(vals) != len(args) {
				t.Fatalf("got %d values, want %d", len(vals), len(args))
			}
			for i, v := range vals {
				if v.Type() != types[i] {
					t.Errorf("arg %d: type %v, want %v", i, v.Type(), types[i])
				}
				got := v.Interface()
				if tm, ok := got.(time.Time); ok {
					if !tm.Equal(when) {
						t.Errorf("arg %d: %v, want %v", i, tm, when)
					}
					continue
				}
				if !reflect.DeepEqual(got, args[i]) {
					t.Errorf("arg %d: %#v, want %#v", i, got, args[i])
				}
			}
		})
	}
}

func TestDecodeArgsGivesNewPointers(t *testing.T) {
	t.Parallel()
	for _, cc := range codecs {
		t.Run(cc.name, func(t *testing.T) {
			t.Parallel()
			p := &plain{Name: "shared"}
			body, err := cc.c.AppendArgs(nil, []any{p, p})
			if err != nil {
				t.Fatal(err)
			}
			typ := reflect.TypeFor[*plain]()
			vals, err := cc.c.DecodeArgs(body, []reflect.Type{typ, typ})
			if err != nil {
				t.Fatal(err)
			}
			a, b := vals[0].Interface().(*plain), vals[1].Interface().(*plain)
			if a == p || a == b || a.Name != "shared" || b.Name != "shared" {
				t.Fatalf("want two fresh pointers to copies, got %p %p (orig %p) %+v %+v", a, b, p, a, b)
			}
		})
	}
}

func TestDecodeArgsEmpty(t *testing.T) {
	t.Parallel()
	for _, cc := range codecs {
		for _, body := range [][]byte{nil, {}} {
			vals, err := cc.c.DecodeArgs(body, nil)
			if err != nil || len(vals) != 0 {
				t.Fatalf("%s: DecodeArgs(%q, none) = %v, %v; want no values", cc.name, body, vals, err)
			}
		}
		body, err := cc.c.AppendArgs(nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if vals, err := cc.c.DecodeArgs(body, nil); err != nil || len(vals) != 0 {
			t.Fatalf("%s: DecodeArgs(AppendArgs(nil)) = %v, %v", cc.name, vals, err)
		}
	}
}

func mustArgs(t *testing.T, c codec.Codec, args ...any) []byte {
	t.Helper()
	b, err := c.AppendArgs(nil, args)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeArgsErrors(t *testing.T) {
	t.Parallel()
	intT, strT, timeT := reflect.TypeFor[int](), reflect.TypeFor[string](), reflect.TypeFor[time.Time]()
	mp, js := codec.Msgpack, codec.JSON
	cases := []struct {
		name      string
		c         codec.Codec
		body      []byte
		types     []reflect.Type
		index     int
		typ       reflect.Type
		malformed bool
		msg       string
	}{
		{"msgpack too many", mp, mustArgs(t, mp, 1, 2), []reflect.Type{intT}, -1, nil, false, "codec: bad arguments: got 2 arguments, want 1"},
		{"msgpack too few", mp, mustArgs(t, mp, 1), []reflect.Type{intT, strT}, -1, nil, false, "got 1 arguments, want 2"},
		{"msgpack empty body", mp, nil, []reflect.Type{intT}, -1, nil, false, "got 0 arguments, want 1"},
		{"msgpack wrong type", mp, mustArgs(t, mp, "x", "abc"), []reflect.Type{strT, intT}, 1, intT, false, "codec: bad argument 1 (int): msgpack: invalid code=a3 decoding int64"},
		{"msgpack not an array", mp, []byte{0x2a}, []reflect.Type{intT}, -1, nil, false, "body is not a msgpack array (code 0x2a)"},
		{"msgpack nil body", mp, []byte{0xc0}, []reflect.Type{intT}, -1, nil, false, "body is not a msgpack array (code 0xc0)"},
		{"msgpack truncated", mp, []byte{0x92, 0x01, 0xa3, 'a'}, []reflect.Type{intT, strT}, -1, nil, true, "malformed msgpack at byte 2: value of 3 bytes exceeds the 1 left"},
		{"msgpack trailing", mp, append(mustArgs(t, mp, 1), 0x01), []reflect.Type{intT}, -1, nil, true, "1 trailing bytes"},
		{"msgpack invalid code", mp, []byte{0x91, 0xc1}, []reflect.Type{intT}, -1, nil, true, "invalid code 0xc1"},
		{"msgpack huge array claim", mp, []byte{0x91, 0xdd, 0xff, 0xff, 0xff, 0xff}, []reflect.Type{reflect.TypeFor[[]int]()}, -1, nil, true, "container of 4294967295 values exceeds the 0 bytes left"},
		{"msgpack huge string claim", mp, []byte{0x91, 0xdb, 0xff, 0xff, 0xff, 0xff, 'x'}, []reflect.Type{strT}, -1, nil, true, "value of 4294967295 bytes exceeds the 1 left"},
		{"msgpack nil into time", mp, []byte{0x92, 0x01, 0xc0}, []reflect.Type{intT, timeT}, 1, timeT, false, "codec: bad argument 1 (time.Time): msgpack: decoder panicked"},
		{"json too many", js, []byte(`[1, 2]`), []reflect.Type{intT}, -1, nil, false, "got 2 arguments, want 1"},
		{"json wrong type", js, []byte(`["x", "abc"]`), []reflect.Type{strT, intT}, 1, intT, false, "codec: bad argument 1 (int): json: cannot unmarshal string into Go value of type int"},
		{"json scalar for two params", js, []byte(`42`), []reflect.Type{intT, intT}, -1, nil, false, "body is not a JSON array of 2 arguments"},
		{"json scalar of wrong type", js, []byte(`"abc"`), []reflect.Type{intT}, 0, intT, false, "bad argument 0 (int)"},
		{"json malformed", js, []byte(` [1, `), []reflect.Type{intT}, -1, nil, true, "malformed json at byte 5: unexpected end of JSON input"},
		{"json trailing", js, []byte(`[1] 2`), []reflect.Type{intT}, -1, nil, true, "malformed json"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			vals, err := tc.c.DecodeArgs(tc.body, tc.types)
			if err == nil {
				t.Fatalf("DecodeArgs(%x) = %v, want error", tc.body, vals)
			}
			if !errors.As(err, new(*codec.ArgsError)) {
				t.Fatalf("error %q is not an *ArgsError", err)
			}
			if got := errors.As(err, new(*codec.SyntaxError)); got != tc.malformed {
				t.Fatalf("errors.As(%q, *SyntaxError) = %v, want %v", err, got, tc.malformed)
			}
			var ae *codec.ArgsError
			if !errors.As(err, &ae) {
				t.Fatalf("error %T is not *ArgsError", err)
			}
			if ae.Index != tc.index || ae.Type != tc.typ {
				t.Fatalf("ArgsError{Index: %d, Type: %v}, want {%d, %v}", ae.Index, ae.Type, tc.index, tc.typ)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not contain %q", err, tc.msg)
			}
		})
	}
}

func TestJSONLenientSingleArgument(t *testing.T) {
	t.Parallel()
	cases := []struct {
		body string
		typ  reflect.Type
		want any
	}{
		{`42`, reflect.TypeFor[int](), 42},
		{` "hi" `, reflect.TypeFor[string](), "hi"},
		{`{"Name":"n","Count":2}`, reflect.TypeFor[plain](), plain{Name: "n", Count: 2}},
		{`null`, reflect.TypeFor[*plain](), (*plain)(nil)},
		{`[1,2,3]`, reflect.TypeFor[[]int](), []int{1, 2, 3}},
		{`[[1,2,3]]`, reflect.TypeFor[[]int](), []int{1, 2, 3}},
		{`[5]`, reflect.TypeFor[[]int](), []int{5}},
		{`[7]`, reflect.TypeFor[int](), 7},
	}
	for _, tc := range cases {
		vals, err := codec.JSON.DecodeArgs([]byte(tc.body), []reflect.Type{tc.typ})
		if err != nil {
			t.Fatalf("DecodeArgs(%s, %v): %v", tc.body, tc.typ, err)
		}
		if got := vals[0].Interface(); !reflect.DeepEqual(got, tc.want) {
			t.Fatalf("DecodeArgs(%s, %v) = %#v, want %#v", tc.body, tc.typ, got, tc.want)
		}
	}
	// Msgpack stays strict: a bare value is not an argument list.
	if _, err := codec.Msgpack.DecodeArgs([]byte{0x2a}, []reflect.Type{reflect.TypeFor[int]()}); !errors.As(err, new(*codec.ArgsError)) {
		t.Fatalf("msgpack bare value: err = %v, want an *ArgsError", err)
	}
}

func TestUnmarshalErrors(t *testing.T) {
	t.Parallel()
	deep := append(bytes.Repeat([]byte{0x91}, 10001), 0xc0)
	cases := []struct {
		name      string
		c         codec.Codec
		data      []byte
		malformed bool
		msg       string
	}{
		{"msgpack empty", codec.Msgpack, nil, true, "codec: msgpack: unmarshal into *int: malformed msgpack at byte 0: unexpected end of data"},
		{"msgpack truncated uint32", codec.Msgpack, []byte{0xce, 0, 0}, true, "value of 4 bytes exceeds the 2 left"},
		{"msgpack truncated map", codec.Msgpack, []byte{0x82, 0xa1, 'a', 0x01}, true, "malformed msgpack at byte 0: container of 4 values exceeds the 3 bytes left"},
		{"msgpack truncated nested array", codec.Msgpack, []byte{0x92, 0x91, 0x01}, true, "malformed msgpack at byte 3: unexpected end of data"},
		{"msgpack too deep", codec.Msgpack, deep, true, "nesting deeper than 10000"},
		{"msgpack trailing", codec.Msgpack, []byte{0x01, 0x02}, true, "malformed msgpack at byte 1: 1 trailing bytes after the value"},
		{"msgpack nil into struct's time", codec.Msgpack, []byte{0x81, 0xa1, 'T', 0xc0}, false, "codec: msgpack: unmarshal into *struct { T time.Time }: msgpack: decoder panicked"},
		{"msgpack wrong type", codec.Msgpack, []byte{0xa1, 'x'}, false, "codec: msgpack: unmarshal into *int: msgpack: invalid code=a1 decoding int64"},
		{"json empty", codec.JSON, nil, true, "codec: json: unmarshal into *int: malformed json at byte 0: unexpected end of JSON input"},
		{"json garbage", codec.JSON, []byte("{x"), true, "malformed json at byte 2"},
		{"json wrong type", codec.JSON, []byte(`"x"`), false, "codec: json: unmarshal into *int: json: cannot unmarshal string"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var into any = new(int)
			if strings.Contains(tc.name, "struct") {
				into = new(struct{ T time.Time })
			}
			err := tc.c.Unmarshal(tc.data, into)
			if err == nil {
				t.Fatalf("Unmarshal(%x) = nil error, value %v", tc.data, into)
			}
			if got := errors.As(err, new(*codec.SyntaxError)); got != tc.malformed {
				t.Fatalf("errors.As(%q, *SyntaxError) = %v, want %v", err, got, tc.malformed)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not contain %q", err, tc.msg)
			}
		})
	}
}

func TestMsgpackNestingWithinLimit(t *testing.T) {
	t.Parallel()
	data := append(bytes.Repeat([]byte{0x91}, 500), 0x2a) // [[[...42...]]]
	var v any
	if err := codec.Msgpack.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	depth := 0
	for {
		s, ok := v.([]any)
		if !ok {
			break
		}
		depth++
		v = s[0]
	}
	if depth != 500 || v != int8(42) {
		t.Fatalf("depth %d, innermost %#v; want 500 and int8(42)", depth, v)
	}
}

func TestMarshalErrors(t *testing.T) {
	t.Parallel()
	for _, cc := range codecs {
		dst := []byte("keep")
		got, err := cc.c.AppendMarshal(dst, make(chan int))
		if err == nil || !strings.HasPrefix(err.Error(), "codec: "+cc.name+": marshal chan int") {
			t.Fatalf("%s: AppendMarshal(chan) error = %v", cc.name, err)
		}
		if string(got) != "keep" {
			t.Fatalf("%s: AppendMarshal returned %q on error, want dst unchanged", cc.name, got)
		}
		if _, err := cc.c.AppendArgs(nil, []any{1, make(chan int)}); err == nil {
			t.Fatalf("%s: AppendArgs(chan) succeeded", cc.name)
		}
	}
}

func TestForContentType(t *testing.T) {
	t.Parallel()
	cases := []struct {
		ct   string
		want codec.Codec
	}{
		{"", codec.Msgpack},
		{"  ", codec.Msgpack},
		{"application/msgpack", codec.Msgpack},
		{"application/x-msgpack", codec.Msgpack},
		{"application/vnd.msgpack", codec.Msgpack},
		{"Application/MsgPack", codec.Msgpack},
		{"application/json", codec.JSON},
		{"application/json; charset=utf-8", codec.JSON},
		{"APPLICATION/JSON;charset=UTF-8", codec.JSON},
	}
	for _, tc := range cases {
		got, err := codec.ForContentType(tc.ct)
		if err != nil || got != tc.want {
			t.Errorf("ForContentType(%q) = %v, %v; want %v", tc.ct, got, err, tc.want.ContentType())
		}
	}
	for _, ct := range []string{"text/plain", "application/xml", "application/json; =bad", "json"} {
		c, err := codec.ForContentType(ct)
		if !errors.Is(err, codec.ErrUnsupportedContentType) || c != nil {
			t.Errorf("ForContentType(%q) = %v, %v; want ErrUnsupportedContentType", ct, c, err)
		}
		if err != nil && !strings.Contains(err.Error(), `codec: unsupported content type "`+ct+`"`) {
			t.Errorf("error %q does not quote the content type", err)
		}
	}
	if codec.Msgpack.ContentType() != codec.ContentTypeMsgpack || codec.JSON.ContentType() != codec.ContentTypeJSON {
		t.Fatal("ContentType() does not match the constants")
	}
}

func TestMsgpackAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items at random")
	}
	args := []any{42, "short"}
	buf := make([]byte, 0, 64)
	enc := testing.AllocsPerRun(200, func() {
		var err error
		if buf, err = codec.Msgpack.AppendArgs(buf[:0], args); err != nil {
			t.Fatal(err)
		}
	})
	types := []reflect.Type{reflect.TypeFor[int](), reflect.TypeFor[string]()}
	dec := testing.AllocsPerRun(200, func() {
		if _, err := codec.Msgpack.DecodeArgs(buf, types); err != nil {
			t.Fatal(err)
		}
	})
	// Encoding reuses buf; decoding allocates the []reflect.Value, one new value per argument and the string's bytes.
	if enc != 0 || dec > 4 {
		t.Fatalf("allocs per call: encode %v (want 0), decode %v (want <= 4)", enc, dec)
	}
}
