package client

import (
	"context"
	"fmt"
	"sync"
)

// onDemandWorkers are an on-demand pool's workers, one per call; guarded by the pool's mu.
type onDemandWorkers struct {
	active int    // started or starting
	total  uint64 // started so far, as the balancer's total_dispatched
	live   map[worker]struct{}
	wg     sync.WaitGroup
}

// runOnDemand starts a worker for c alone, runs c on it and stops it.
func (p *Pool) runOnDemand(c *call) {
	defer p.onDemand.wg.Done()
	ctx, cancel := context.WithTimeout(p.ctx, p.opts.StartTimeout)
	w, err := p.tr.start(ctx, 0)
	cancel()
	if err == nil {
		p.mu.Lock()
		p.onDemand.live[w] = struct{}{}
		p.onDemand.total++
		p.mu.Unlock()
		w.send(c)
		<-c.doneChan()
		stopCtx, cancel := context.WithTimeout(context.Background(), p.opts.StartTimeout)
		err = w.stop(stopCtx)
		cancel()
		if err != nil {
			p.opts.Logger.Warn("client: stop on-demand worker", "worker", w.id(), "err", err)
		}
	} else {
		c.complete(nil, fmt.Errorf("client: start on-demand worker of %s: %w", p.name, err))
	}
	p.mu.Lock()
	delete(p.onDemand.live, w)
	p.onDemand.active--
	next := p.drainLocked(nil)
	p.mu.Unlock()
	p.dispatchAll(next)
}
