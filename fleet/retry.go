package fleet

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// RetryPolicy re-runs a failed call on the worker that ran it. client.RetryConfig builds it; it is exported so that
// hosts of workers (agents, tests) can run the same loop.
type RetryPolicy struct {
	// Attempts is the total number of runs, the first included; below 2 nothing is retried.
	Attempts int
	// Retry reports whether err is worth another attempt.
	Retry func(err error) bool
	// Wait is the pause before attempt n+1 after n failed attempts (n ≥ 1).
	Wait func(n int) time.Duration
	// Until validates a result; a non-nil error makes the attempt a failure. Nil accepts every result.
	Until func(result any) error
	// Sleep waits d or until ctx ends; nil sleeps on the real clock. Tests inject a clock here.
	Sleep func(ctx context.Context, d time.Duration) error
}

// ValidationError is the error of a call whose every attempt returned a result that RetryPolicy.Until refused. It
// carries every attempt's result and refusal.
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

// Run runs t on the worker's instance in the calling goroutine, with t.Retry's attempts. Sync mode calls it directly;
// queued calls go through it too.
func (w *Worker) Run(t *Task) (any, error) {
	ctx := t.Ctx
	if ctx == nil {
		ctx = context.Background()
	}
	p := t.Retry
	if p == nil || (p.Attempts < 2 && p.Until == nil) {
		return w.Invoke(ctx, t)
	}
	sleep := p.Sleep
	if sleep == nil {
		sleep = sleepCtx
	}
	var verr *ValidationError
	for n := 1; ; n++ {
		res, err := w.Invoke(ctx, t)
		if err == nil && p.Until != nil {
			if uerr := p.Until(res); uerr != nil {
				if verr == nil {
					verr = &ValidationError{Method: t.Method.name}
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
		t.attempts.Store(int32(n + 1))
		var d time.Duration
		if p.Wait != nil {
			d = p.Wait(n)
		}
		if serr := sleep(ctx, d); serr != nil {
			return nil, err
		}
	}
}

// Attempts is the number of runs the task has started so far (1 before any retry).
func (t *Task) Attempts() int { return max(1, int(t.attempts.Load())) }
