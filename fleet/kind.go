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
	methods map[string]*method
	names   []string
	// idempotent are the methods marked safe to run again (Idempotent); written at package initialisation only.
	idempotent map[string]bool
}

var registry = struct {
	sync.RWMutex
	kinds map[string]*Kind
}{kinds: make(map[string]*Kind)}

// Register makes a worker kind known under name, so that any process that registers the same name can construct it.
// constructor is a function returning *T or (*T, error) and taking any arguments; every exported method of *T of
// the accepted shapes (optional leading context.Context; results (), (R), (error) or (R, error)) becomes callable.
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
	k := &Kind{name: name, ctor: cv, ctorVar: ct.IsVariadic(), methods: make(map[string]*method)}
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

func validName(s string) bool {
	return s != "" && !strings.ContainsAny(s, ".*> \t\r\n")
}

// Idempotent marks methods safe to run more than once with the same arguments, and returns k so that it chains after
// Register:
//
//	var FetcherKind = fleet.Register("Fetcher", NewFetcher).Idempotent("Fetch", "Head")
//
// A call of such a method that is in flight on a worker declared lost fails over: the pool sends it to another
// worker instead of failing it with client.ErrWorkerLost. It is opt-in because the lost worker may have run the
// method, partly or wholly, before it was lost, and may still: a method that charges a card, sends a mail or appends
// a row must not be marked. Like Register it is meant for package-level variables, and panics on a name that is not
// a callable method of the kind.
func (k *Kind) Idempotent(methods ...string) *Kind {
	for _, m := range methods {
		if k.methods[m] == nil {
			panic(fmt.Sprintf("fleet: kind %q: Idempotent(%q): not a callable method (callable: %s)", k.name, m,
				strings.Join(k.names, ", ")))
		}
		if k.idempotent == nil {
			k.idempotent = make(map[string]bool)
		}
		k.idempotent[m] = true
	}
	return k
}

// IsIdempotent reports whether method was marked with Idempotent.
func (k *Kind) IsIdempotent(method string) bool { return k.idempotent[method] }

// Name is the kind's registered name.
func (k *Kind) Name() string { return k.name }

// Type is the Go type the constructor returns.
func (k *Kind) Type() reflect.Type { return k.typ }

// Methods lists the callable method names in the order of the type's method set.
func (k *Kind) Methods() []string { return append([]string(nil), k.names...) }

// method returns the named method, or an error matching ErrUnknownMethod that lists the callable ones.
func (k *Kind) method(name string) (*method, error) {
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
