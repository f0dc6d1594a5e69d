package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/actor"
)

// Shapes has a method of each shape the direct path covers, and some it does not.
type Shapes struct {
	hits atomic.Int64
	base int
}

type point struct{ X, Y int }

var errZero = errors.New("zero divisor")

func NewShapes(base int) *Shapes { return &Shapes{base: base} }

func (s *Shapes) Touch()                    { s.hits.Add(1) }
func (s *Shapes) Fail() error               { return errZero }
func (s *Shapes) Hits() int64               { return s.hits.Load() }
func (s *Shapes) Double(n int) int          { return s.base + 2*n }
func (s *Shapes) Wide(n int64) int64        { return n << 33 }
func (s *Shapes) Flip(b bool) bool          { return !b }
func (s *Shapes) Upper(v string) string     { return strings.ToUpper(v) }
func (s *Shapes) Len(b []byte) (int, error) { return len(b), nil }
func (s *Shapes) Bytes(n int) []byte        { return make([]byte, n) }
func (s *Shapes) Echo(v any) any            { return v }
func (s *Shapes) Store(n int)               { s.hits.Add(int64(n)) }
func (s *Shapes) Check(n int) error {
	if n < 0 {
		return fmt.Errorf("negative %d", n)
	}
	return nil
}
func (s *Shapes) Div(ctx context.Context, d float64) (float64, error) {
	if d == 0 {
		return 0, errZero
	}
	return 1 / d, nil
}
func (s *Shapes) Who(ctx context.Context) string {
	info, _ := fleet.CallInfo(ctx)
	return info.Method
}
func (s *Shapes) Wait(ctx context.Context) error          { return ctx.Err() }
func (s *Shapes) Note(ctx context.Context, v string)      { s.hits.Add(int64(len(v))) }
func (s *Shapes) Crash(n int) int                         { return []int{}[n] }
func (s *Shapes) Add(a, b int) int                        { return a + b }
func (s *Shapes) Mirror(p point) point                    { return point{p.Y, p.X} }
func (s *Shapes) Tagged(ctx context.Context, n int) error { return s.Check(n) }

var shapesKind = fleet.Register("Shapes", NewShapes)

// TestDirectCalls runs every method with arguments as given (Task.Values) and converted by reflection (Task.Args):
// both paths give the same outcome, and the shapes of the direct table skip reflection.
func TestDirectCalls(t *testing.T) {
	t.Parallel()
	w, err := fleet.StartWorker(shapesKind, actor.Options{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Stop(context.Background()) })
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		method string
		ctx    context.Context
		args   []any
		direct bool
		want   any
		err    string // substring of the error; "" for none
	}{
		{"Touch", nil, nil, true, nil, ""},
		{"Fail", nil, nil, true, nil, "zero divisor"},
		{"Hits", nil, nil, true, int64(2), ""}, // after Touch ran on both paths
		{"Double", nil, []any{21}, true, 142, ""},
		{"Wide", nil, []any{int64(3)}, true, int64(3) << 33, ""},
		{"Flip", nil, []any{false}, true, true, ""},
		{"Upper", nil, []any{"abc"}, true, "ABC", ""},
		{"Len", nil, []any{[]byte("four")}, true, 4, ""},
		{"Len", nil, []any{nil}, true, 0, ""},
		{"Bytes", nil, []any{3}, true, []byte{0, 0, 0}, ""},
		{"Echo", nil, []any{"x"}, true, "x", ""},
		{"Echo", nil, []any{nil}, true, nil, ""},
		{"Echo", nil, []any{point{1, 2}}, true, point{1, 2}, ""},
		{"Store", nil, []any{0}, true, nil, ""},
		{"Check", nil, []any{-4}, true, nil, "negative -4"},
		{"Check", nil, []any{4}, true, nil, ""},
		{"Div", nil, []any{4.0}, true, 0.25, ""},
		{"Div", nil, []any{0.0}, true, nil, "zero divisor"},
		{"Who", nil, nil, true, "Who", ""},
		{"Wait", cancelled, nil, true, nil, "context canceled"},
		{"Note", nil, []any{""}, true, nil, ""},
		{"Tagged", nil, []any{-1}, true, nil, "negative -1"},
		{"Crash", nil, []any{5}, true, nil, "index out of range"},
		{"Add", nil, []any{2, 3}, false, 5, ""},
		{"Mirror", nil, []any{point{1, 2}}, false, point{2, 1}, ""},
	}
	for _, tc := range tests {
		m, err := fleet.Method(shapesKind, tc.method)
		if err != nil {
			t.Fatal(err)
		}
		if got := fleet.Direct(m); got != tc.direct {
			t.Errorf("%s: direct = %v, want %v", tc.method, got, tc.direct)
		}
		if got := m.Exact(tc.args); got != tc.direct {
			t.Errorf("%s%v: Exact = %v, want %v", tc.method, tc.args, got, tc.direct)
		}
		in, err := m.Args(tc.args)
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range []*actor.Task{{Ctx: tc.ctx, Method: m, Values: tc.args}, {Ctx: tc.ctx, Method: m, Args: in}} {
			path := "values"
			if task.Args != nil {
				path = "reflection"
			}
			res, err := w.Run(task)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("%s%v by %s: error %v, want %q", tc.method, tc.args, path, err, tc.err)
			}
			if !reflect.DeepEqual(res, tc.want) {
				t.Errorf("%s%v by %s: result %#v (%T), want %#v (%T)", tc.method, tc.args, path, res, res, tc.want, tc.want)
			}
		}
	}
}

// TestDirectConvertsOrRejects: values that do not fit a parameter exactly are converted as Args would be, or
// rejected with ErrBadArguments, never passed as a zero value.
func TestDirectConvertsOrRejects(t *testing.T) {
	t.Parallel()
	w, err := fleet.StartWorker(shapesKind, actor.Options{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Stop(context.Background()) })
	tests := []struct {
		method string
		args   []any
		want   any
		err    error
	}{
		{"Double", []any{int64(4)}, 8, nil},
		{"Div", []any{2}, 0.5, nil},
		{"Wide", []any{1}, int64(1) << 33, nil},
		{"Double", []any{"4"}, nil, fleet.ErrBadArguments},
		{"Double", []any{}, nil, fleet.ErrBadArguments},
		{"Double", []any{1, 2}, nil, fleet.ErrBadArguments},
		{"Upper", []any{nil}, nil, fleet.ErrBadArguments},
		{"Touch", []any{1}, nil, fleet.ErrBadArguments},
	}
	for _, tc := range tests {
		m, err := fleet.Method(shapesKind, tc.method)
		if err != nil {
			t.Fatal(err)
		}
		if m.Exact(tc.args) {
			t.Errorf("%s%v: Exact = true, want false", tc.method, tc.args)
		}
		res, err := w.Run(&actor.Task{Method: m, Values: tc.args})
		if !errors.Is(err, tc.err) || !reflect.DeepEqual(res, tc.want) {
			t.Errorf("%s%v = %#v, %v; want %#v, %v", tc.method, tc.args, res, err, tc.want, tc.err)
		}
	}
}

// BenchmarkInvoke compares a call through the direct path with the same call through reflection.
func BenchmarkInvoke(b *testing.B) {
	w, err := fleet.StartWorker(shapesKind, actor.Options{}, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop(context.Background())
	m, err := fleet.Method(shapesKind, "Double")
	if err != nil {
		b.Fatal(err)
	}
	args := []any{1000}
	in, err := m.Args(args)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		task *actor.Task
	}{{"direct", &actor.Task{Method: m, Values: args}}, {"reflect", &actor.Task{Method: m, Args: in}}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if res, err := w.Run(bc.task); err != nil || res != 2000 {
					b.Fatal(res, err)
				}
			}
		})
	}
}

// Tally has a value receiver; Wrapped promotes it from an embedded field. The method expressions of their pointer
// types are wrappers, which the direct path calls as well.
type Tally struct{ n int }

func (c Tally) Plus(k int) int { return c.n + k }

type Wrapped struct {
	Tally
	label string
}

func (w *Wrapped) Label(suffix string) string { return w.label + suffix }

var (
	counterKind = fleet.Register("Tally", func(n int) *Tally { return &Tally{n} })
	wrappedKind = fleet.Register("Wrapped", func(n int) *Wrapped { return &Wrapped{Tally{n}, "w"} })
)

func TestDirectWrappers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		kind   *fleet.Kind
		method string
		arg    any
		want   any
	}{
		{counterKind, "Plus", 2, 9},
		{wrappedKind, "Plus", 3, 10},
		{wrappedKind, "Label", "!", "w!"},
	}
	for _, tc := range tests {
		w, err := fleet.StartWorker(tc.kind, actor.Options{}, 7)
		if err != nil {
			t.Fatal(err)
		}
		m, err := fleet.Method(tc.kind, tc.method)
		if err != nil {
			t.Fatal(err)
		}
		if !fleet.Direct(m) {
			t.Errorf("%s.%s is not direct", tc.kind.Name(), tc.method)
		}
		res, err := w.Run(&actor.Task{Method: m, Values: []any{tc.arg}})
		if err != nil || res != tc.want {
			t.Errorf("%s.%s(%v) = %v, %v; want %v", tc.kind.Name(), tc.method, tc.arg, res, err, tc.want)
		}
		if err := w.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// Every msgpack form of an integer decodes directly into an int or int64 parameter as the reflective decoder decodes
// it; the encoder picks few of them, so the bodies are written out.
func TestDirectArgDecodingIntegerForms(t *testing.T) {
	t.Parallel()
	bodies := [][]byte{
		{0x91, 0x05},                               // positive fixint
		{0x91, 0xfb},                               // negative fixint: -5
		{0x91, 0xcc, 0xc8},                         // uint8 200
		{0x91, 0xcd, 0xea, 0x60},                   // uint16 60000
		{0x91, 0xce, 0xee, 0x6b, 0x28, 0x00},       // uint32 4e9
		{0x91, 0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0},    // uint64 1<<63: the msgpack decoder's
		{0x91, 0xd0, 0x80},                         // int8 -128
		{0x91, 0xd1, 0xfe, 0xd4},                   // int16 -300
		{0x91, 0xd2, 0xff, 0xfe, 0xee, 0x90},       // int32 -70000
		{0x91, 0xd3, 0xff, 0xfc, 0, 0, 0, 0, 0, 0}, // int64 -1<<50
		{0x91, 0xc0},                               // nil: the msgpack decoder's
		{0x91, 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0}, // float64 1.5: the msgpack decoder's
	}
	for _, method := range []string{"Double", "Wide"} {
		m, err := fleet.Method(shapesKind, method)
		if err != nil {
			t.Fatal(err)
		}
		for _, body := range bodies {
			got, ok := fleet.DirectArg(m, codec.Msgpack, body)
			want, werr := codec.Msgpack.DecodeArgs(body, m.Params())
			if ok != (werr == nil) {
				t.Errorf("%s % x: decoded directly %v, reflective decoding error %v", method, body, ok, werr)
				continue
			}
			if ok && !reflect.DeepEqual(got, want[0].Interface()) {
				t.Errorf("%s % x: direct %#v, reflective %#v", method, body, got, want[0].Interface())
			}
		}
	}
}

// TestDirectArgDecoding: a served worker decodes the argument of a direct method without reflection, to the very
// value the reflective decoder gives, and leaves to that decoder every body it cannot decode.
func TestDirectArgDecoding(t *testing.T) {
	t.Parallel()
	tests := []struct {
		method string
		args   []any
		ok     bool
	}{
		{"Double", []any{7}, true},
		{"Double", []any{int8(-3)}, true},
		{"Double", []any{uint64(1 << 40)}, true},
		{"Wide", []any{int64(-1) << 50}, true},
		{"Div", []any{0.5}, true},
		{"Div", []any{float32(1.5)}, true},
		{"Div", []any{3}, true}, // an integer for a float64 parameter, as the reflective decoder accepts it
		{"Flip", []any{true}, true},
		{"Upper", []any{"héllo"}, true},
		{"Len", []any{[]byte{1, 2, 3}}, true},
		{"Len", []any{nil}, true},
		{"Double", []any{"7"}, false},
		{"Double", []any{1, 2}, false},
		{"Double", []any{}, false},
		{"Upper", []any{[]int{1}}, false},
		{"Echo", []any{1}, false}, // interface{} parameters stay with the reflective decoder
		{"Add", []any{1, 2}, false},
		{"Touch", []any{}, false},
	}
	for _, tc := range tests {
		m, err := fleet.Method(shapesKind, tc.method)
		if err != nil {
			t.Fatal(err)
		}
		body, err := codec.Msgpack.AppendArgs(nil, tc.args)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := fleet.DirectArg(m, codec.Msgpack, body)
		want, werr := codec.Msgpack.DecodeArgs(body, m.Params())
		if ok != tc.ok {
			t.Errorf("%s%v: decoded directly %v, want %v (reflective decoding: %v)", tc.method, tc.args, ok, tc.ok, werr)
			continue
		}
		if ok && (werr != nil || !reflect.DeepEqual(got, want[0].Interface())) {
			t.Errorf("%s%v: direct %#v, reflective %v, %v", tc.method, tc.args, got, want, werr)
		}
		if _, ok := fleet.DirectArg(m, codec.JSON, body); ok {
			t.Errorf("%s%v: decoded a JSON call directly", tc.method, tc.args)
		}
	}
}
