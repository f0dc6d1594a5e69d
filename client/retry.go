package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"time"

	"github.com/natsfleet/natsfleet/internal/actor"
)

// RetryAlgorithm shapes the waits between attempts.
type RetryAlgorithm string

// The wait algorithms: after the n-th failed attempt the wait is Wait×n (linear), Wait×2^(n-1) (exponential) or
// Wait×fib(n) with fib = 1, 1, 2, 3, 5… (fibonacci), capped at MaxWait.
const (
	Linear      RetryAlgorithm = "linear"
	Exponential RetryAlgorithm = "exponential"
	Fibonacci   RetryAlgorithm = "fibonacci"
)

// RetryConfig retries failed calls on the worker that ran them; the pool's statistics count the call once. Each
// attempt runs the whole method again, so limits acquired inside it are acquired again. The zero value retries
// nothing.
type RetryConfig struct {
	// Attempts is the total number of runs, the first included. Default 1 (no retry).
	Attempts int
	// On lists errors worth retrying, matched with errors.Is. Together with OnTypes and If: an error is retried when
	// any of them matches; when all three are empty, every error is retried.
	On []error
	// OnTypes lists error types worth retrying, matched with errors.As; build them with ErrorType[*MyError](). Default none.
	OnTypes []reflect.Type
	// If reports whether err is worth retrying. Default none.
	If func(err error) bool
	// Algorithm shapes the waits. Default Exponential.
	Algorithm RetryAlgorithm
	// Wait is the base wait. Default 1s.
	Wait time.Duration
	// MaxWait caps each wait. Default: no cap.
	MaxWait time.Duration
	// NoJitter waits exactly; by default each wait is drawn uniformly from [0, computed wait] (full jitter), which
	// keeps a fleet of retrying workers from hitting a recovering service in step.
	NoJitter bool
	// Until validates each result; an error refuses it and the call is retried. When every attempt is refused the
	// call fails with a *fleet.ValidationError carrying every attempt's result. Default: every result is accepted.
	Until func(result any) error
	// Methods overrides the configuration for the named methods (their own Methods field is ignored).
	Methods map[string]RetryConfig
	// Sleep waits between attempts; tests inject a clock here. Default: a real timer that ctx cancels.
	Sleep func(ctx context.Context, d time.Duration) error
}

// ErrorType names the error type T for RetryConfig.OnTypes.
func ErrorType[T error]() reflect.Type { return reflect.TypeFor[T]() }

func (r RetryConfig) validate() error {
	check := func(name string, c RetryConfig) error {
		if c.Attempts < 0 {
			return fmt.Errorf("%w: retry%s: Attempts %d is negative", ErrInvalidOptions, name, c.Attempts)
		}
		if c.Wait < 0 || c.MaxWait < 0 {
			return fmt.Errorf("%w: retry%s: negative wait", ErrInvalidOptions, name)
		}
		switch c.Algorithm {
		case "", Linear, Exponential, Fibonacci:
		default:
			return fmt.Errorf("%w: retry%s: unknown algorithm %q (want linear, exponential or fibonacci)", ErrInvalidOptions, name, c.Algorithm)
		}
		for _, t := range c.OnTypes {
			if t == nil || !t.Implements(reflect.TypeFor[error]()) {
				return fmt.Errorf("%w: retry%s: OnTypes entry %v is not an error type", ErrInvalidOptions, name, t)
			}
		}
		return nil
	}
	if err := check("", r); err != nil {
		return err
	}
	for m, c := range r.Methods {
		if err := check(" of "+m, c); err != nil {
			return err
		}
	}
	return nil
}

// Delay is the wait after the n-th failed attempt (n ≥ 1) before jitter: the pure part of the schedule.
func (r RetryConfig) Delay(n int) time.Duration {
	base := r.Wait
	if base == 0 {
		base = time.Second
	}
	var d time.Duration
	switch r.Algorithm {
	case Linear:
		d = base * time.Duration(n)
	case Fibonacci:
		a, b := 1, 1
		for range n - 1 {
			a, b = b, a+b
		}
		d = base * time.Duration(a)
	default:
		d = base << min(n-1, 40)
	}
	if r.MaxWait > 0 && (d > r.MaxWait || d < 0) {
		d = r.MaxWait
	}
	return d
}

func (r RetryConfig) matches(err error) bool {
	if len(r.On) == 0 && len(r.OnTypes) == 0 && r.If == nil {
		return true
	}
	for _, e := range r.On {
		if errors.Is(err, e) {
			return true
		}
	}
	for _, t := range r.OnTypes {
		target := reflect.New(t)
		if errors.As(err, target.Interface()) {
			return true
		}
	}
	return r.If != nil && r.If(err)
}

func (r RetryConfig) policy() *actor.RetryPolicy {
	if r.Attempts < 2 && r.Until == nil {
		return nil
	}
	p := &actor.RetryPolicy{Attempts: max(1, r.Attempts), Retry: r.matches, Until: r.Until, Sleep: r.Sleep}
	p.Wait = func(n int) time.Duration {
		d := r.Delay(n)
		if !r.NoJitter && d > 0 {
			d = rand.N(d + 1)
		}
		return d
	}
	return p
}

// retryPolicies resolves the per-method policies once, so calls share them.
type retryPolicies struct {
	def     *actor.RetryPolicy
	methods map[string]*actor.RetryPolicy
}

func newRetryPolicies(r RetryConfig) retryPolicies {
	rp := retryPolicies{def: r.policy()}
	if len(r.Methods) > 0 {
		rp.methods = make(map[string]*actor.RetryPolicy, len(r.Methods))
		for m, c := range r.Methods {
			if c.Sleep == nil {
				c.Sleep = r.Sleep
			}
			rp.methods[m] = c.policy()
		}
	}
	return rp
}

func (rp retryPolicies) forMethod(m string) *actor.RetryPolicy {
	if p, ok := rp.methods[m]; ok {
		return p
	}
	return rp.def
}
