package fleet

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/natsfleet/natsfleet/internal/actor"
)

// ValidationError is the error of a call whose every attempt returned a result that the retry configuration's Until
// refused (client.RetryConfig). It carries every attempt's result and refusal.
type ValidationError struct {
	Method  string
	Results []any
	Errors  []error
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "fleet: validation failed for method %q after %d attempts", e.Method, len(e.Results))
	for i, err := range e.Errors {
		fmt.Fprintf(&b, "; attempt %d: result %v: %v", i+1, e.Results[i], err)
	}
	return b.String()
}

// Attempts is the number of runs the call made.
func (e *ValidationError) Attempts() int { return len(e.Results) }

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run runs t on w's instance in the calling goroutine, with t.Retry's attempts.
func (m *method) Run(w *actor.Worker, t *actor.Task) (any, error) {
	ctx := t.Ctx
	if ctx == nil {
		ctx = context.Background()
	}
	p := t.Retry
	if p == nil || (p.Attempts < 2 && p.Until == nil) {
		return m.invoke(ctx, w, t)
	}
	sleep := p.Sleep
	if sleep == nil {
		sleep = sleepCtx
	}
	var verr *ValidationError
	for n := 1; ; n++ {
		res, err := m.invoke(ctx, w, t)
		if err == nil && p.Until != nil {
			if uerr := p.Until(res); uerr != nil {
				if verr == nil {
					verr = &ValidationError{Method: m.name}
				}
				verr.Results = append(verr.Results, res)
				verr.Errors = append(verr.Errors, uerr)
				err = verr
			}
		}
		switch {
		case err == nil:
			return res, nil
		case err != verr && p.Retry != nil && !p.Retry(err):
			return nil, err
		case n >= p.Attempts || ctx.Err() != nil:
			return nil, err
		}
		var d time.Duration
		if p.Wait != nil {
			d = p.Wait(n)
		}
		if serr := sleep(ctx, d); serr != nil {
			return nil, err
		}
	}
}

// invoke calls the method once on w's instance; a panic becomes a *PanicError.
func (m *method) invoke(ctx context.Context, w *actor.Worker, t *actor.Task) (res any, err error) {
	defer func() {
		if r := recover(); r != nil {
			res, err = nil, newPanicError(r)
		}
	}()
	if m.hasCtx {
		ctx = context.WithValue(ctx, envKey{}, &callEnv{worker: w, task: t})
	}
	inst := w.Instance()
	if t.Args == nil && m.Exact(t.Values) {
		return m.direct(inst.UnsafePointer(), ctx, t.Values)
	}
	// Most methods take few arguments: their call frame is built on the stack.
	var buf [8]reflect.Value
	args := buf[:0]
	args = append(args, inst)
	if m.hasCtx {
		args = append(args, reflect.ValueOf(ctx))
	}
	if t.Args == nil {
		var aerr error
		if args, aerr = m.AppendArgs(args, t.Values); aerr != nil {
			return nil, aerr
		}
	} else {
		args = append(args, t.Args...)
	}
	out := m.fn.Call(args)
	if m.hasErr {
		if e := out[len(out)-1]; !e.IsNil() {
			return nil, e.Interface().(error)
		}
	}
	if m.hasResult {
		return out[0].Interface(), nil
	}
	return nil, nil
}
