package client

import (
	"context"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"sync"
)

// Type-safe calls. Call names a method by a string and checks its arguments when the call runs; Invoke names it by
// its Go method expression, so the compiler checks the receiver type, the argument types and the result type:
//
//	f := client.Invoke(pool, (*DataProcessor).Process, 42) // *client.Future[int]
//
// A misspelt method or a wrong argument type is a compile error. There is one function per method shape: Invoke0
// and Invoke for methods of no or one argument returning R, InvokeE0 and InvokeE returning (R, error), and InvokeCtx0
// and InvokeCtx for methods that also take a context first. A method of more parameters takes them in a struct, or
// is called with Call.

// Invoke0 calls a method of no argument returning R.
func Invoke0[T, R any](p *Pool, m func(*T) R) *Future[R] { return invoke[T, R](p, m) }

// Invoke calls a method of one argument returning R.
func Invoke[T, A, R any](p *Pool, m func(*T, A) R, a A) *Future[R] { return invoke[T, R](p, m, a) }

// InvokeE0 calls a method of no argument returning (R, error).
func InvokeE0[T, R any](p *Pool, m func(*T) (R, error)) *Future[R] { return invoke[T, R](p, m) }

// InvokeE calls a method of one argument returning (R, error).
func InvokeE[T, A, R any](p *Pool, m func(*T, A) (R, error), a A) *Future[R] {
	return invoke[T, R](p, m, a)
}

// InvokeCtx0 calls a method taking only a context, returning (R, error).
func InvokeCtx0[T, R any](p *Pool, m func(*T, context.Context) (R, error)) *Future[R] {
	return invoke[T, R](p, m)
}

// InvokeCtx calls a method taking a context and one argument, returning (R, error).
func InvokeCtx[T, A, R any](p *Pool, m func(*T, context.Context, A) (R, error), a A) *Future[R] {
	return invoke[T, R](p, m, a)
}

// methodNames caches the name found for each method expression.
var methodNames sync.Map // code pointer -> string

func invoke[T, R any](p *Pool, m any, args ...any) *Future[R] {
	name, err := methodName(m)
	if err == nil && p.kind != nil && p.kind.Type() != reflect.TypeFor[*T]() {
		err = fmt.Errorf("%w: %s is a method of %s, the pool's kind %s builds %s", ErrInvalidOptions, name,
			reflect.TypeFor[*T](), p.name, p.kind.Type())
	}
	if err != nil {
		f := &Future[R]{}
		p.initCall(&f.call, name, args)
		p.reject(&f.call, err)
		return f
	}
	return Call[R](p, name, args...)
}

// methodName finds the name of a method expression such as (*T).Process from its symbol, once per method.
func methodName(m any) (string, error) {
	pc := reflect.ValueOf(m).Pointer()
	if n, ok := methodNames.Load(pc); ok {
		return n.(string), nil
	}
	fn := runtime.FuncForPC(pc)
	if fn == nil {
		return "", fmt.Errorf("%w: cannot name the method %T", ErrInvalidOptions, m)
	}
	full := fn.Name() // e.g. "example.com/pkg.(*T).Process"
	i := strings.LastIndex(full, ".")
	if i < 0 || !strings.Contains(full[:i], ")") || strings.HasSuffix(full, "-fm") {
		return "", fmt.Errorf("%w: %s is not a method expression like (*T).Method", ErrInvalidOptions, full)
	}
	name := full[i+1:]
	methodNames.Store(pc, name)
	return name, nil
}
