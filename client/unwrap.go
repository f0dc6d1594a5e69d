package client

import (
	"reflect"
)

var awaitableType = reflect.TypeFor[Awaitable]()

// findFutures returns the futures among args, also inside slices, arrays and maps; nil when there are none. Plain
// values cost one type switch each, so calls without futures pay next to nothing.
func findFutures(args []any) []Awaitable {
	var deps []Awaitable
	for _, a := range args {
		deps = appendFutures(deps, a)
	}
	return deps
}

func appendFutures(deps []Awaitable, a any) []Awaitable {
	switch v := a.(type) {
	case nil, int, int64, float64, string, bool, []byte:
		return deps
	case Awaitable:
		return append(deps, v)
	}
	rv := reflect.ValueOf(a)
	if !mayHoldFutures(rv.Type()) {
		return deps
	}
	walk(rv, func(f Awaitable) { deps = append(deps, f) })
	return deps
}

// mayHoldFutures reports whether values of t can contain a future: containers of interfaces or futures.
func mayHoldFutures(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		return mayHoldFutures(t.Elem())
	case reflect.Map:
		return mayHoldFutures(t.Elem())
	case reflect.Interface:
		return true
	case reflect.Pointer:
		return t.Implements(awaitableType)
	}
	return false
}

func walk(v reflect.Value, visit func(Awaitable)) {
	switch v.Kind() {
	case reflect.Interface:
		if !v.IsNil() {
			walk(v.Elem(), visit)
		}
	case reflect.Pointer:
		if !v.IsNil() && v.Type().Implements(awaitableType) {
			visit(v.Interface().(Awaitable))
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			walk(v.Index(i), visit)
		}
	case reflect.Map:
		it := v.MapRange()
		for it.Next() {
			walk(it.Value(), visit)
		}
	}
}

// substitute returns args with every future replaced by its result: containers holding futures become []any or
// map[K]any copies, which the method's parameter types are then coerced from. The first failed future's error is
// returned as it is, so the downstream call fails with the upstream error.
func substitute(args []any) ([]any, error) {
	out := make([]any, len(args))
	for i, a := range args {
		v, err := resolve(a, true)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// resolve replaces the futures in a. A future passed directly keeps a remote result encoded (top), to be decoded
// into the next method's own parameter type; inside containers results are decoded as the future's type.
func resolve(a any, top bool) (any, error) {
	if f, ok := a.(Awaitable); ok {
		if top {
			return f.arg()
		}
		return f.value()
	}
	if a == nil || !mayHoldFutures(reflect.TypeOf(a)) {
		return a, nil
	}
	rv := reflect.ValueOf(a)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		out := make([]any, rv.Len())
		for i := range rv.Len() {
			v, err := resolve(rv.Index(i).Interface(), false)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	case reflect.Map:
		out := reflect.MakeMapWithSize(reflect.MapOf(rv.Type().Key(), reflect.TypeFor[any]()), rv.Len())
		it := rv.MapRange()
		for it.Next() {
			v, err := resolve(it.Value().Interface(), false)
			if err != nil {
				return nil, err
			}
			if v == nil {
				out.SetMapIndex(it.Key(), reflect.Zero(out.Type().Elem()))
				continue
			}
			out.SetMapIndex(it.Key(), reflect.ValueOf(v))
		}
		return out.Interface(), nil
	}
	return a, nil
}
