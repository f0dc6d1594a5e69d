package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

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

// healthState is what the pool learned of its workers' health; byWorker is guarded by the pool's mu.
type healthState struct {
	byWorker  map[worker]*Health
	unhealthy atomic.Int64 // workers replaced after failing health checks
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
		var wg sync.WaitGroup
		for _, w := range p.workers() {
			wg.Go(func() { p.check(w, hc.Method, timeout, limit) })
		}
		wg.Wait()
	}
}

func (p *Pool) check(w worker, method string, timeout time.Duration, limit int) {
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()
	f := p.sendUrgent(w, method)
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
	st := p.health.byWorker[w]
	if st == nil {
		st = &Health{}
		p.health.byWorker[w] = st
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
	slot, in := p.slotOf[w]
	if st.Failures < limit || !in || p.stopping.Load() {
		p.mu.Unlock()
		return
	}
	p.removeLocked(slot)
	p.publishSlotsLocked()
	delete(p.health.byWorker, w)
	p.mu.Unlock()
	p.opts.Logger.Warn("client: worker failed its health check; replacing it", "pool", p.id, "worker", w.id(), "err", err)
	p.replaceUnhealthy(w, slot)
}

// replaceUnhealthy starts a worker in place of w, already out of rotation, then drains and stops w.
func (p *Pool) replaceUnhealthy(w worker, slot int) {
	p.health.unhealthy.Add(1)
	ctx, cancel := context.WithTimeout(p.ctx, p.opts.StartTimeout)
	defer cancel()
	nw, err := p.tr.start(ctx, slot)
	if err != nil {
		p.opts.Logger.Error("client: start replacement worker", "pool", p.id, "err", err)
	} else if !p.admit(nw) {
		_ = nw.stop(ctx)
	}
	// The unhealthy worker's accepted calls finish, or fail when it does not stop in time.
	stopCtx, cancel2 := context.WithTimeout(context.Background(), p.opts.StartTimeout)
	defer cancel2()
	if err := w.stop(stopCtx); err != nil {
		p.opts.Logger.Warn("client: stop unhealthy worker", "worker", w.id(), "err", err)
	}
}
