package client

import (
	"context"
	"fmt"
	"iter"
	"strings"
)

// GatherOption changes how Gather collects results.
type GatherOption func(*gatherConfig)

type gatherConfig struct {
	allErrors bool
	progress  string
	onDone    func(done, total int)
}

// AllErrors makes Gather wait for every future and report every failure in a *GatherError, instead of returning at
// the first failure in input order.
func AllErrors() GatherOption { return func(c *gatherConfig) { c.allErrors = true } }

// ShowGatherProgress draws a terminal progress bar described by desc for Gather's own completion.
func ShowGatherProgress(desc string) GatherOption { return func(c *gatherConfig) { c.progress = desc } }

// OnGatherProgress calls f with the number of futures done each time one completes.
func OnGatherProgress(f func(done, total int)) GatherOption {
	return func(c *gatherConfig) { c.onDone = f }
}

// GatherError reports every failed future of a Gather made with AllErrors.
type GatherError struct {
	// Errs is aligned with Gather's input: Errs[i] is future i's error, nil where it succeeded.
	Errs []error
}

func (e *GatherError) Error() string {
	var b strings.Builder
	n := 0
	for i, err := range e.Errs {
		if err == nil {
			continue
		}
		if n > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "future %d: %v", i, err)
		n++
	}
	return fmt.Sprintf("client: %d of %d futures failed: %s", n, len(e.Errs), b.String())
}

// Unwrap lets errors.Is and errors.As look at every failure.
func (e *GatherError) Unwrap() []error {
	var errs []error
	for _, err := range e.Errs {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// Gather waits for futures and returns their results in input order. By default it returns as soon as the first
// failure in input order is known, with that failure's error; with AllErrors it waits for all and returns a
// *GatherError. When ctx ends first it returns ctx's error; the calls go on.
func Gather[T any](ctx context.Context, futs []*Future[T], opts ...GatherOption) ([]T, error) {
	return collect(ctx, futs, opts, (*Future[T]).get)
}

// GatherAny is Gather for futures of different types or pools; each result is the future's value as any.
func GatherAny(ctx context.Context, futs []Awaitable, opts ...GatherOption) ([]any, error) {
	return collect(ctx, futs, opts, Awaitable.value)
}

func collect[F Awaitable, T any](ctx context.Context, futs []F, opts []GatherOption, get func(F) (T, error)) ([]T, error) {
	var cfg gatherConfig
	for _, o := range opts {
		o(&cfg)
	}
	if err := waitProgress(ctx, futs, &cfg); err != nil {
		return nil, err
	}
	out := make([]T, len(futs))
	var errs []error
	for i, f := range futs {
		v, err := get(f)
		if err != nil {
			if errs == nil {
				errs = make([]error, len(futs))
			}
			errs[i] = err
			continue
		}
		out[i] = v
	}
	if errs != nil {
		return out, &GatherError{Errs: errs}
	}
	return out, nil
}

// waitProgress waits as Gather needs: for all futures, or, without AllErrors, until the first failure in input
// order is certain (every earlier future succeeded). It returns that failure's error, or ctx's.
func waitProgress[F Awaitable](ctx context.Context, futs []F, cfg *gatherConfig) error {
	var bar *gatherBar
	if cfg.progress != "" {
		bar = newGatherBar(cfg.progress, len(futs))
		defer bar.close()
	}
	ch := make(chan int, len(futs))
	for i, f := range futs {
		f.base().whenDone(func() { ch <- i })
	}
	next, done := 0, 0
	finished := make([]bool, len(futs))
	for done < len(futs) {
		select {
		case i := <-ch:
			finished[i] = true
			done++
			if bar != nil {
				bar.set(done)
			}
			if cfg.onDone != nil {
				cfg.onDone(done, len(futs))
			}
		case <-ctx.Done():
			return ctx.Err()
		}
		if cfg.allErrors {
			continue
		}
		for next < len(futs) && finished[next] {
			if err := futs[next].Err(); err != nil {
				return err
			}
			next++
		}
	}
	return nil
}

// WaitFor says when Wait returns.
type WaitFor int

const (
	// AllCompleted: when every future is done.
	AllCompleted WaitFor = iota
	// FirstCompleted: as soon as one future is done.
	FirstCompleted
	// FirstError: as soon as one future fails, or when all are done.
	FirstError
)

// Wait waits for futures until when is met and returns them split into done and not done, each in input order.
// When ctx ends first it returns the split at that moment and ctx's error.
func Wait[F Awaitable](ctx context.Context, futs []F, when WaitFor) (done, notDone []F, err error) {
	ch := make(chan int, len(futs))
	for i, f := range futs {
		f.base().whenDone(func() { ch <- i })
	}
	finished := make([]bool, len(futs))
	n := 0
loop:
	for n < len(futs) {
		select {
		case i := <-ch:
			finished[i] = true
			n++
			if when == FirstCompleted || (when == FirstError && futs[i].Err() != nil) {
				break loop
			}
		case <-ctx.Done():
			err = ctx.Err()
			break loop
		}
	}
	for i, f := range futs {
		// A future done after the loop ended still counts as done; the split reflects the moment of return.
		if finished[i] || f.base().isDone() {
			done = append(done, f)
		} else {
			notDone = append(notDone, f)
		}
	}
	return done, notDone, err
}

// AsCompleted yields futures with their input index in the order they complete. It stops early when ctx ends or
// the loop breaks; check ctx.Err() to tell an early stop from the end.
func AsCompleted[F Awaitable](ctx context.Context, futs []F) iter.Seq2[int, F] {
	return func(yield func(int, F) bool) {
		ch := make(chan int, len(futs))
		for i, f := range futs {
			f.base().whenDone(func() { ch <- i })
		}
		for range futs {
			select {
			case i := <-ch:
				if !yield(i, futs[i]) {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}
}
