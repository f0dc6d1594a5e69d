package fleet

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
)

var (
	contextType = reflect.TypeFor[context.Context]()
	errorType   = reflect.TypeFor[error]()
)

// Kind is a registered worker type: a name other processes use to build it, its constructor, and its callable
// methods, resolved once at registration so that no call pays for reflection lookups by name.
type Kind struct {
	name    string
	ctor    reflect.Value
	ctorIn  []reflect.Type
	ctorVar bool
	ctorErr bool
	typ     reflect.Type // the constructed type, e.g. *DataProcessor
	methods map[string]*Method
	names   []string
}

// Method is one callable method of a Kind.
type Method struct {
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

var registry = struct {
	sync.RWMutex
	kinds map[string]*Kind
}{kinds: make(map[string]*Kind)}

// Register makes a worker kind known under name, so that any process that registers the same name can construct it.
// constructor is a function returning *T or (*T, error) and taking any arguments; every exported method of *T whose
// shape DESIGN accepts (optional leading context.Context; results (), (R), (error) or (R, error)) becomes callable.
//
// Register is meant for package-level variables and init functions: like flag.Var or http.Handle it panics on a
// programming error (a bad constructor or a name registered twice), because nothing can recover from it at run time.
func Register(name string, constructor any) *Kind {
	k, err := newKind(name, constructor)
	if err != nil {
		panic(err)
	}
	registry.Lock()
	defer registry.Unlock()
	if _, dup := registry.kinds[name]; dup {
		panic(fmt.Sprintf("fleet: kind %q registered twice", name))
	}
	registry.kinds[name] = k
	return k
}

// Lookup returns the kind registered under name.
func Lookup(name string) (*Kind, error) {
	registry.RLock()
	k := registry.kinds[name]
	registry.RUnlock()
	if k == nil {
		return nil, fmt.Errorf("%w: %q (registered: %s)", ErrUnknownKind, name, strings.Join(Kinds(), ", "))
	}
	return k, nil
}

// Kinds lists the registered kind names in order.
func Kinds() []string {
	registry.RLock()
	defer registry.RUnlock()
	names := make([]string, 0, len(registry.kinds))
	for n := range registry.kinds {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func newKind(name string, constructor any) (*Kind, error) {
	if !validName(name) {
		return nil, fmt.Errorf("fleet: kind name %q must be non-empty and contain no '.', '*', '>' or spaces", name)
	}
	cv := reflect.ValueOf(constructor)
	if cv.Kind() != reflect.Func || cv.IsNil() {
		return nil, fmt.Errorf("fleet: constructor of kind %q must be a func, got %T", name, constructor)
	}
	ct := cv.Type()
	k := &Kind{name: name, ctor: cv, ctorVar: ct.IsVariadic(), methods: make(map[string]*Method)}
	switch {
	case ct.NumOut() == 1:
	case ct.NumOut() == 2 && ct.Out(1) == errorType:
		k.ctorErr = true
	default:
		return nil, fmt.Errorf("fleet: constructor of kind %q must return *T or (*T, error), got %s", name, ct)
	}
	k.typ = ct.Out(0)
	if k.typ.Kind() != reflect.Pointer {
		return nil, fmt.Errorf("fleet: constructor of kind %q must return a pointer, got %s", name, k.typ)
	}
	for i := range ct.NumIn() {
		k.ctorIn = append(k.ctorIn, ct.In(i))
	}
	for i := range k.typ.NumMethod() {
		rm := k.typ.Method(i)
		m, ok := newMethod(k, rm)
		if !ok {
			continue
		}
		k.methods[m.name] = m
		k.names = append(k.names, m.name)
	}
	if len(k.methods) == 0 {
		return nil, fmt.Errorf("fleet: kind %q (%s) has no callable methods", name, k.typ)
	}
	return k, nil
}

func newMethod(k *Kind, rm reflect.Method) (*Method, bool) {
	if !rm.IsExported() {
		return nil, false
	}
	mt := rm.Type // receiver first
	m := &Method{kind: k, name: rm.Name, fn: rm.Func}
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

func validName(s string) bool {
	return s != "" && !strings.ContainsAny(s, ".*> \t\r\n")
}

// Name is the kind's registered name.
func (k *Kind) Name() string { return k.name }

// Type is the Go type the constructor returns.
func (k *Kind) Type() reflect.Type { return k.typ }

// Methods lists the callable method names in the order of the type's method set.
func (k *Kind) Methods() []string { return append([]string(nil), k.names...) }

// Method returns the named method, or an error matching ErrUnknownMethod that lists the callable ones.
func (k *Kind) Method(name string) (*Method, error) {
	if m := k.methods[name]; m != nil {
		return m, nil
	}
	return nil, &MethodError{Kind: k.name, Method: name, Err: ErrUnknownMethod,
		Detail: "callable: " + strings.Join(k.names, ", ")}
}

// ConstructorParams are the constructor's parameter types (a variadic constructor's last one is a slice).
func (k *Kind) ConstructorParams() []reflect.Type { return k.ctorIn }

// construct calls the constructor with args converted to its parameter types.
func (k *Kind) construct(args []any) (inst reflect.Value, err error) {
	in, err := convertArgs(k.ctorIn, k.ctorVar, args)
	if err != nil {
		return reflect.Value{}, &MethodError{Kind: k.name, Method: "constructor", Err: ErrBadArguments,
			Detail: err.Error() + "; expected (" + typeList(k.ctorIn) + ")"}
	}
	return k.constructValues(in)
}

func (k *Kind) constructValues(in []reflect.Value) (inst reflect.Value, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("fleet: constructor of kind %q: %w", k.name, newPanicError(r))
		}
	}()
	var out []reflect.Value
	if k.ctorVar {
		out = k.ctor.CallSlice(in)
	} else {
		out = k.ctor.Call(in)
	}
	if k.ctorErr && !out[1].IsNil() {
		return reflect.Value{}, fmt.Errorf("fleet: constructor of kind %q: %w", k.name, out[1].Interface().(error))
	}
	if out[0].IsNil() {
		return reflect.Value{}, fmt.Errorf("fleet: constructor of kind %q returned nil", k.name)
	}
	return out[0], nil
}

// Name is the method's name.
func (m *Method) Name() string { return m.name }

// Params are the argument types a caller passes (without the context).
func (m *Method) Params() []reflect.Type { return m.params }

// Result is the type of the method's value result, or nil when it returns only an error or nothing.
func (m *Method) Result() reflect.Type { return m.result }

// TakesContext reports whether the method's first parameter is a context.Context.
func (m *Method) TakesContext() bool { return m.hasCtx }

// Args converts caller arguments to the method's parameter types. Values assignable to a parameter pass as they are;
// untyped-constant style mismatches between numeric kinds (an int literal for a float64 parameter) and nil for
// nillable parameters are converted; anything else is an error matching ErrBadArguments naming the expected types.
func (m *Method) Args(args []any) ([]reflect.Value, error) {
	return m.AppendArgs(nil, args)
}

// AppendArgs is Args appending to dst, so a caller can convert into storage it already has.
func (m *Method) AppendArgs(dst []reflect.Value, args []any) ([]reflect.Value, error) {
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

func (m *Method) badArgs(err error) error {
	return &MethodError{Kind: m.kind.name, Method: m.name, Err: ErrBadArguments,
		Detail: err.Error() + "; expected (" + typeList(m.params) + ")"}
}

// BadArguments wraps a decoding error of this method's arguments into an error matching ErrBadArguments.
func (m *Method) BadArguments(err error) error { return m.badArgs(err) }

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
	if c, ok := Coerce(v, t); ok {
		return c, nil
	}
	return reflect.Value{}, fmt.Errorf("argument %d: %s is not assignable to %s", i, v.Type(), t)
}

// Coerce converts v to t where a Go programmer would expect it to work without a cast: between numeric kinds without
// loss (an int literal for a float64 or int64 parameter), element by element for slices and maps (a []any of ints for
// a []int parameter, which is what resolved futures and decoded values produce), and through interfaces.
func Coerce(v reflect.Value, t reflect.Type) (reflect.Value, bool) {
	if !v.IsValid() {
		return reflect.Value{}, false
	}
	if v.Kind() == reflect.Interface && !v.IsNil() {
		v = v.Elem()
	}
	if v.Type().AssignableTo(t) {
		return v, true
	}
	switch {
	case isNumber(v.Kind()) && isNumber(t.Kind()):
		c := v.Convert(t)
		// Round trip to reject lossy conversions (300 into uint8, 1.5 into int).
		if back := c.Convert(v.Type()); back.Equal(v) {
			return c, true
		}
		return reflect.Value{}, false
	case v.Kind() == reflect.Slice && t.Kind() == reflect.Slice:
		out := reflect.MakeSlice(t, v.Len(), v.Len())
		for i := range v.Len() {
			e, ok := Coerce(v.Index(i), t.Elem())
			if !ok {
				return reflect.Value{}, false
			}
			out.Index(i).Set(e)
		}
		return out, true
	case v.Kind() == reflect.Map && t.Kind() == reflect.Map:
		out := reflect.MakeMapWithSize(t, v.Len())
		it := v.MapRange()
		for it.Next() {
			mk, ok := Coerce(it.Key(), t.Key())
			if !ok {
				return reflect.Value{}, false
			}
			mv, ok := Coerce(it.Value(), t.Elem())
			if !ok {
				return reflect.Value{}, false
			}
			out.SetMapIndex(mk, mv)
		}
		return out, true
	}
	return reflect.Value{}, false
}

func isNumber(k reflect.Kind) bool {
	return (k >= reflect.Int && k <= reflect.Uint64) || k == reflect.Float32 || k == reflect.Float64
}
