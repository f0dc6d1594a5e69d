package fleet

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/natsfleet/natsfleet/internal/actor"
)

// method is one callable method of a Kind; it is what an actor.Task names.
type method struct {
	kind      *Kind
	name      string
	fn        reflect.Value // method expression: receiver first
	hasCtx    bool
	params    []reflect.Type // without receiver and context
	hasResult bool
	hasErr    bool
	result    reflect.Type
	direct    directFn // nil: called through reflection only
	// decodeArg decodes the msgpack arguments of a direct method of one parameter; nil: only DecodeArgs does.
	decodeArg func(body []byte) (any, bool)
}

// newMethod resolves rm as a callable method of k; ok is false for an unexported method or an unaccepted shape.
func newMethod(k *Kind, rm reflect.Method) (*method, bool) {
	if !rm.IsExported() {
		return nil, false
	}
	mt := rm.Type // receiver first
	m := &method{kind: k, name: rm.Name, fn: rm.Func}
	const first = 1
	for i := first; i < mt.NumIn(); i++ {
		t := mt.In(i)
		if i == first && t == contextType {
			m.hasCtx = true
			continue
		}
		m.params = append(m.params, t)
	}
	if mt.IsVariadic() {
		return nil, false
	}
	switch mt.NumOut() {
	case 0:
	case 1:
		if mt.Out(0) == errorType {
			m.hasErr = true
		} else {
			m.hasResult, m.result = true, mt.Out(0)
		}
	case 2:
		if mt.Out(1) != errorType {
			return nil, false
		}
		m.hasResult, m.result, m.hasErr = true, mt.Out(0), true
	default:
		return nil, false
	}
	if m.direct = directFor(m); m.direct != nil && len(m.params) == 1 {
		m.decodeArg = argDecoders[m.params[0]]
	}
	return m, true
}

// Name is the method's name.
func (m *method) Name() string { return m.name }

// Params are the argument types a caller passes (without the context).
func (m *method) Params() []reflect.Type { return m.params }

// Result is the type of the method's value result, or nil when it returns only an error or nothing.
func (m *method) Result() reflect.Type { return m.result }

// TakesContext reports whether the method's first parameter is a context.Context.
func (m *method) TakesContext() bool { return m.hasCtx }

// Args converts caller arguments to the method's parameter types. Values assignable to a parameter pass as they are;
// untyped-constant style mismatches between numeric kinds (an int literal for a float64 parameter) and nil for
// nillable parameters are converted; anything else is an error matching ErrBadArguments naming the expected types.
func (m *method) Args(args []any) ([]reflect.Value, error) {
	return m.AppendArgs(nil, args)
}

// AppendArgs is Args appending to dst, so a caller can convert into storage it already has.
func (m *method) AppendArgs(dst []reflect.Value, args []any) ([]reflect.Value, error) {
	if len(args) != len(m.params) {
		return nil, m.badArgs(fmt.Errorf("got %d arguments, want %d", len(args), len(m.params)))
	}
	for i, p := range m.params {
		v, err := convertArg(p, args[i], i)
		if err != nil {
			return nil, m.badArgs(err)
		}
		dst = append(dst, v)
	}
	return dst, nil
}

func (m *method) badArgs(err error) error {
	return &MethodError{Kind: m.kind.name, Method: m.name, Err: ErrBadArguments,
		Detail: err.Error() + "; expected (" + typeList(m.params) + ")"}
}

// BadArguments wraps a decoding error of this method's arguments into an error matching ErrBadArguments.
func (m *method) BadArguments(err error) error { return m.badArgs(err) }

func typeList(ts []reflect.Type) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = t.String()
	}
	return strings.Join(s, ", ")
}

func convertArgs(params []reflect.Type, variadic bool, args []any) ([]reflect.Value, error) {
	if variadic {
		fixed := len(params) - 1
		if len(args) < fixed {
			return nil, fmt.Errorf("got %d arguments, want at least %d", len(args), fixed)
		}
		in := make([]reflect.Value, len(params))
		for i := range fixed {
			v, err := convertArg(params[i], args[i], i)
			if err != nil {
				return nil, err
			}
			in[i] = v
		}
		st := params[fixed]
		rest := reflect.MakeSlice(st, len(args)-fixed, len(args)-fixed)
		for i := fixed; i < len(args); i++ {
			v, err := convertArg(st.Elem(), args[i], i)
			if err != nil {
				return nil, err
			}
			rest.Index(i - fixed).Set(v)
		}
		in[fixed] = rest
		return in, nil
	}
	if len(args) != len(params) {
		return nil, fmt.Errorf("got %d arguments, want %d", len(args), len(params))
	}
	in := make([]reflect.Value, len(params))
	for i, p := range params {
		v, err := convertArg(p, args[i], i)
		if err != nil {
			return nil, err
		}
		in[i] = v
	}
	return in, nil
}

func convertArg(t reflect.Type, a any, i int) (reflect.Value, error) {
	if a == nil {
		switch t.Kind() {
		case reflect.Pointer, reflect.Interface, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan:
			return reflect.Zero(t), nil
		}
		return reflect.Value{}, fmt.Errorf("argument %d: nil for %s", i, t)
	}
	if v, ok := a.(reflect.Value); ok {
		if v.Type().AssignableTo(t) {
			return v, nil
		}
		a = v.Interface()
	}
	v := reflect.ValueOf(a)
	if v.Type().AssignableTo(t) {
		return v, nil
	}
	if c, ok := actor.Coerce(v, t); ok {
		return c, nil
	}
	return reflect.Value{}, fmt.Errorf("argument %d: %s is not assignable to %s", i, v.Type(), t)
}
