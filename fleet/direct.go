package fleet

import (
	"context"
	"reflect"
	"unsafe"

	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/internal/msgp"
)

// Calling a method through reflect.Value.Call costs a slice of results, a boxed copy of each, and a lookup of the
// call's frame layout: in a thread pool that was a fifth of a call's CPU time. The common shapes (at most one
// parameter and one result, each an int, int64, float64, bool, string, []byte or any, with or without a context and
// an error) are called directly instead, through a func value of a concrete type built once per method at
// registration.
//
// A method expression of *T is a func value taking the receiver first. Its func(*T, A) (R, error) and our
// func(unsafe.Pointer, A) (R, error) have the same calling convention, since *T and unsafe.Pointer are both one
// pointer word; so the method's func value is reinterpreted as the latter, and called with the instance's pointer.
// Every other shape, and arguments that need conversion, go through reflection as before.

// directFn calls a method on rcvr with args, which Method.Exact has checked.
type directFn func(rcvr unsafe.Pointer, ctx context.Context, args []any) (any, error)

type directKey struct {
	ctx bool
	in  reflect.Type // the one parameter; nil when there is none
	out reflect.Type // the value result; nil when there is none
	err bool
}

// directs are the shapes called without reflection, each with what builds its caller from a method's func value.
var directs = make(map[directKey]func(fv unsafe.Pointer) directFn)

// argDecoders decode a msgpack arguments array of one value of a direct parameter type, without reflection. They
// report false for anything else; the reflective decoding then runs, and names the error.
var argDecoders = make(map[reflect.Type]func(body []byte) (any, bool))

// none stands for "no parameter" or "no result" in the tables below.
type none struct{}

func init() {
	withParam[none]()
	withParam[int]()
	withParam[int64]()
	withParam[float64]()
	withParam[bool]()
	withParam[string]()
	withParam[[]byte]()
	withParam[any]()
}

func withParam[A any]() {
	if t := typeOf[A](); t != nil && t != anyType {
		// An interface{} parameter is left to the reflective decoder, which picks the Go type of each msgpack value.
		argDecoders[t] = decodeArg[A]
	}
	shape[A, none]()
	shape[A, int]()
	shape[A, int64]()
	shape[A, float64]()
	shape[A, bool]()
	shape[A, string]()
	shape[A, []byte]()
	shape[A, any]()
}

// typeOf is T's type, or nil for none.
func typeOf[T any]() reflect.Type {
	t := reflect.TypeFor[T]()
	if t == reflect.TypeFor[none]() {
		return nil
	}
	return t
}

// as reinterprets a method's func value (see above) as a func of type F.
func as[F any](fv unsafe.Pointer) F {
	var f F
	*(*unsafe.Pointer)(unsafe.Pointer(&f)) = fv
	return f
}

// arg is a call's one argument as A. The assertion cannot fail for a concrete A after Method.Exact; for A = any it
// also passes nil through.
func arg[A any](args []any) A {
	a, _ := args[0].(A)
	return a
}

// shape registers the four callers (with or without context, with or without error) of methods taking A and
// returning R, where none means the parameter or the result is absent.
func shape[A, R any]() {
	in, out := typeOf[A](), typeOf[R]()
	_, noArg := any((*A)(nil)).(*none)
	_, noRes := any((*R)(nil)).(*none)
	add := func(ctx, err bool, mk func(fv unsafe.Pointer) directFn) {
		directs[directKey{ctx: ctx, in: in, out: out, err: err}] = mk
	}
	type P = unsafe.Pointer
	type C = context.Context
	switch {
	case noArg && noRes:
		add(false, false, func(fv P) directFn {
			f := as[func(P)](fv)
			return func(r P, _ C, _ []any) (any, error) { f(r); return nil, nil }
		})
		add(false, true, func(fv P) directFn {
			f := as[func(P) error](fv)
			return func(r P, _ C, _ []any) (any, error) { return nil, f(r) }
		})
		add(true, false, func(fv P) directFn {
			f := as[func(P, C)](fv)
			return func(r P, c C, _ []any) (any, error) { f(r, c); return nil, nil }
		})
		add(true, true, func(fv P) directFn {
			f := as[func(P, C) error](fv)
			return func(r P, c C, _ []any) (any, error) { return nil, f(r, c) }
		})
	case noArg:
		add(false, false, func(fv P) directFn {
			f := as[func(P) R](fv)
			return func(r P, _ C, _ []any) (any, error) { return f(r), nil }
		})
		add(false, true, func(fv P) directFn {
			f := as[func(P) (R, error)](fv)
			return func(r P, _ C, _ []any) (any, error) { return result(f(r)) }
		})
		add(true, false, func(fv P) directFn {
			f := as[func(P, C) R](fv)
			return func(r P, c C, _ []any) (any, error) { return f(r, c), nil }
		})
		add(true, true, func(fv P) directFn {
			f := as[func(P, C) (R, error)](fv)
			return func(r P, c C, _ []any) (any, error) { return result(f(r, c)) }
		})
	case noRes:
		add(false, false, func(fv P) directFn {
			f := as[func(P, A)](fv)
			return func(r P, _ C, a []any) (any, error) { f(r, arg[A](a)); return nil, nil }
		})
		add(false, true, func(fv P) directFn {
			f := as[func(P, A) error](fv)
			return func(r P, _ C, a []any) (any, error) { return nil, f(r, arg[A](a)) }
		})
		add(true, false, func(fv P) directFn {
			f := as[func(P, C, A)](fv)
			return func(r P, c C, a []any) (any, error) { f(r, c, arg[A](a)); return nil, nil }
		})
		add(true, true, func(fv P) directFn {
			f := as[func(P, C, A) error](fv)
			return func(r P, c C, a []any) (any, error) { return nil, f(r, c, arg[A](a)) }
		})
	default:
		add(false, false, func(fv P) directFn {
			f := as[func(P, A) R](fv)
			return func(r P, _ C, a []any) (any, error) { return f(r, arg[A](a)), nil }
		})
		add(false, true, func(fv P) directFn {
			f := as[func(P, A) (R, error)](fv)
			return func(r P, _ C, a []any) (any, error) { return result(f(r, arg[A](a))) }
		})
		add(true, false, func(fv P) directFn {
			f := as[func(P, C, A) R](fv)
			return func(r P, c C, a []any) (any, error) { return f(r, c, arg[A](a)), nil }
		})
		add(true, true, func(fv P) directFn {
			f := as[func(P, C, A) (R, error)](fv)
			return func(r P, c C, a []any) (any, error) { return result(f(r, c, arg[A](a))) }
		})
	}
}

// decodeArg decodes body, a msgpack array of one A.
func decodeArg[A any](body []byte) (any, bool) {
	r := msgp.NewReader(body)
	if n, err := r.ArrayLen(); err != nil || n != 1 {
		return nil, false
	}
	raw, err := r.Raw()
	if err != nil || r.Len() != 0 {
		return nil, false
	}
	if a, ok := msgp.DecodeInteger[A](raw); ok {
		return a, true
	}
	var a A
	if codec.Msgpack.Unmarshal(raw, &a) != nil {
		return nil, false
	}
	return a, true
}

// result drops the value of a failed call, as the reflective path does.
func result[R any](v R, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return v, nil
}

// directFor returns the direct caller of m, or nil when its shape has none.
func directFor(m *method) directFn {
	if len(m.params) > 1 {
		return nil
	}
	k := directKey{ctx: m.hasCtx, out: m.result, err: m.hasErr}
	if len(m.params) == 1 {
		k.in = m.params[0]
	}
	mk := directs[k]
	if mk == nil {
		return nil
	}
	fv := m.fn.Interface() // a func(*T, ...): its data word is the func value
	return mk((*[2]unsafe.Pointer)(unsafe.Pointer(&fv))[1])
}

// Exact reports whether args fit m's parameters as they are (same count, each of the parameter's very type, nil for a
// []byte, anything for an interface{} parameter) and m can be called without reflection: a actor.Task may then carry them in
// Values and leave Args nil.
func (m *method) Exact(args []any) bool {
	if m.direct == nil || len(args) != len(m.params) {
		return false
	}
	if len(args) == 0 {
		return true
	}
	switch p, a := m.params[0], args[0]; {
	case p == anyType:
		return true
	case a == nil:
		return p == bytesType // a nil []byte; the other direct parameter types are not nillable
	default:
		return reflect.TypeOf(a) == p
	}
}

var (
	anyType   = reflect.TypeFor[any]()
	bytesType = reflect.TypeFor[[]byte]()
)

// directArg decodes the one argument of a call to a direct method, when its body is msgpack and the value decodes
// as the parameter's type.
func directArg(m *method, cd codec.Codec, body []byte) (any, bool) {
	if m.decodeArg == nil || cd != codec.Msgpack {
		return nil, false
	}
	return m.decodeArg(body)
}
