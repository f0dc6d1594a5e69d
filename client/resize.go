package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Resize grows or shrinks a running pool to n workers. Growing starts the new workers and puts them into rotation
// (calls waiting in the pool's queue go to them at once). Shrinking takes the workers of the highest slots out of
// rotation first, so they get no new calls, then lets the calls they hold finish before stopping them; ctx bounds
// that wait as it bounds Stop. On an on-demand pool Resize changes how many workers may live at once. Sync and
// Asyncio pools have exactly one worker and pools joined with Attach follow their standing workers, so neither
// resizes.
func (p *Pool) Resize(ctx context.Context, n int) error {
	switch {
	case n < 0:
		return fmt.Errorf("%w: Resize to %d workers", ErrInvalidOptions, n)
	case p.opts.Mode == Sync || p.opts.Mode == Asyncio:
		return fmt.Errorf("%w: a %s pool has exactly one worker", ErrInvalidOptions, p.opts.Mode)
	case p.kind == nil:
		return fmt.Errorf("%w: a pool joined with Attach follows its standing workers and cannot be resized", ErrInvalidOptions)
	case p.stopping.Load():
		return ErrPoolStopped
	}
	p.resizeMu.Lock()
	defer p.resizeMu.Unlock()
	if p.opts.OnDemand {
		p.mu.Lock()
		p.opts.MaxWorkers = n
		next := p.drainLocked(nil)
		p.mu.Unlock()
		p.dispatchAll(next)
		return nil
	}
	p.mu.Lock()
	cur := p.bal.Len()
	p.mu.Unlock()
	switch {
	case n > cur:
		return p.grow(ctx, n-cur)
	case n < cur:
		return p.shrink(ctx, cur-n)
	}
	return nil
}

func (p *Pool) grow(ctx context.Context, k int) error {
	ctx, cancel := context.WithTimeout(ctx, p.opts.StartTimeout)
	defer cancel()
	p.mu.Lock()
	base := len(p.slots)
	p.mu.Unlock()
	hs := make([]handle, k)
	errs := make([]error, k)
	var wg sync.WaitGroup
	for i := range k {
		wg.Go(func() { hs[i], errs[i] = p.be.start(ctx, base+i) })
	}
	wg.Wait()
	p.mu.Lock()
	if p.stopping.Load() {
		p.mu.Unlock()
		for _, h := range hs {
			if h != nil {
				_ = h.stop(context.Background())
			}
		}
		return ErrPoolStopped
	}
	for _, h := range hs {
		if h != nil {
			p.addLocked(h)
		}
	}
	p.opts.MaxWorkers = p.bal.Len()
	next := p.drainLocked(nil)
	p.mu.Unlock()
	p.dispatchAll(next)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("client: grow %s pool: %w", p.name, err)
	}
	return nil
}

func (p *Pool) shrink(ctx context.Context, k int) error {
	p.mu.Lock()
	var live []int
	for i, h := range p.slots {
		if h != nil {
			live = append(live, i)
		}
	}
	slices.Reverse(live)
	victims := make([]handle, 0, k)
	for _, i := range live[:k] {
		victims = append(victims, p.slots[i])
		p.removeLocked(i)
	}
	p.opts.MaxWorkers = p.bal.Len()
	p.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(victims))
	for i, h := range victims {
		wg.Go(func() { errs[i] = h.stop(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("client: shrink %s pool: %w", p.name, err)
	}
	return nil
}

// HealthCheck configures the pool's health checks.
type HealthCheck struct {
	// Method is the worker method asked; it fails the check by returning an error or the bool false. It runs beside
	// the worker's current call (as Broadcast does), so a busy worker still answers. Empty: no health checks.
	Method string
	// Interval between two checks of a worker. Default 10s.
	Interval time.Duration
	// Timeout is how long a check may take before it counts as failed. Default: Interval.
	Timeout time.Duration
	// Failures is how many checks in a row must fail before the worker is replaced. Default 1.
	Failures int
}

func (h HealthCheck) validate(mode Mode) error {
	if h.Method == "" {
		return nil
	}
	if mode == Sync {
		return fmt.Errorf("%w: health checks need a worker of its own, not sync mode", ErrInvalidOptions)
	}
	if h.Interval < 0 || h.Timeout < 0 || h.Failures < 0 {
		return fmt.Errorf("%w: negative health check setting", ErrInvalidOptions)
	}
	return nil
}

// Health is what the pool knows of one worker's health.
type Health struct {
	Healthy   bool      `json:"healthy"`
	Checks    int       `json:"checks"`   // checks made
	Failures  int       `json:"failures"` // failed in a row
	LastCheck time.Time `json:"last_check"`
	LastError string    `json:"last_error,omitempty"`
}

// healthLoop checks every worker at the configured interval until the pool stops.
func (p *Pool) healthLoop() {
	defer p.bg.Done()
	hc := p.opts.HealthCheck
	iv := hc.Interval
	if iv == 0 {
		iv = 10 * time.Second
	}
	timeout := hc.Timeout
	if timeout == 0 {
		timeout = iv
	}
	limit := max(1, hc.Failures)
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		hs := make([]handle, 0, len(p.slots))
		for _, h := range p.slots {
			if h != nil {
				hs = append(hs, h)
			}
		}
		p.mu.Unlock()
		var wg sync.WaitGroup
		for _, h := range hs {
			wg.Go(func() { p.check(h, hc.Method, timeout, limit) })
		}
		wg.Wait()
	}
}

func (p *Pool) check(h handle, method string, timeout time.Duration, limit int) {
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()
	f := p.sendUrgent(h, method)
	v, err := f.Result(ctx)
	if err == nil {
		if ok, isBool := v.(bool); isBool && !ok {
			err = errors.New("client: health check returned false")
		}
	}
	if err != nil {
		f.Cancel()
		if p.ctx.Err() != nil {
			return // stopping: not the worker's fault
		}
	}
	p.mu.Lock()
	st := p.health[h]
	if st == nil {
		st = &Health{}
		p.health[h] = st
	}
	st.Checks++
	st.LastCheck = time.Now()
	if err == nil {
		st.Healthy, st.Failures, st.LastError = true, 0, ""
		p.mu.Unlock()
		return
	}
	st.Healthy = false
	st.Failures++
	st.LastError = err.Error()
	slot := -1
	if st.Failures >= limit {
		slot = p.slotOf(h)
	}
	if slot < 0 || p.stopping.Load() {
		p.mu.Unlock()
		return
	}
	p.removeLocked(slot)
	delete(p.health, h)
	p.mu.Unlock()
	p.opts.Logger.Warn("client: worker failed its health check; replacing it", "pool", p.id, "worker", h.id(), "err", err)
	p.replaceWorker(h, slot)
}

// replaceWorker starts a worker in place of h, already out of rotation, then drains and stops h.
func (p *Pool) replaceWorker(h handle, slot int) {
	p.unhealthy.Add(1)
	ctx, cancel := context.WithTimeout(p.ctx, p.opts.StartTimeout)
	defer cancel()
	nh, err := p.be.start(ctx, slot)
	if err != nil {
		p.opts.Logger.Error("client: start replacement worker", "pool", p.id, "err", err)
	} else {
		p.mu.Lock()
		if p.stopping.Load() {
			p.mu.Unlock()
			_ = nh.stop(ctx)
		} else {
			p.addLocked(nh)
			next := p.drainLocked(nil)
			p.mu.Unlock()
			p.dispatchAll(next)
		}
	}
	// The unhealthy worker's accepted calls finish, or fail when it does not stop in time.
	stopCtx, cancel2 := context.WithTimeout(context.Background(), p.opts.StartTimeout)
	defer cancel2()
	if err := h.stop(stopCtx); err != nil {
		p.opts.Logger.Warn("client: stop unhealthy worker", "worker", h.id(), "err", err)
	}
}
