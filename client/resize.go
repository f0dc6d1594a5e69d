package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
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
		p.mu.Unlock()
		p.redispatch()
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
	ws := make([]worker, k)
	errs := make([]error, k)
	var wg sync.WaitGroup
	for i := range k {
		wg.Go(func() { ws[i], errs[i] = p.tr.start(ctx, base+i) })
	}
	wg.Wait()
	for _, w := range ws {
		if w != nil && !p.admit(w) {
			_ = w.stop(context.Background())
			errs = append(errs, ErrPoolStopped)
		}
	}
	p.mu.Lock()
	p.opts.MaxWorkers = p.bal.Len()
	p.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("client: grow %s pool: %w", p.name, err)
	}
	return nil
}

func (p *Pool) shrink(ctx context.Context, k int) error {
	victims := p.dropLast(k)
	p.mu.Lock()
	p.opts.MaxWorkers = p.bal.Len()
	p.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(victims))
	for i, w := range victims {
		wg.Go(func() { errs[i] = w.stop(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("client: shrink %s pool: %w", p.name, err)
	}
	return nil
}
