package client

import (
	"fmt"

	"github.com/natsfleet/natsfleet/balancer"
	"github.com/natsfleet/natsfleet/fleet"
)

// PoolStats describe a pool. Their JSON form has concurry's keys.
type PoolStats struct {
	Mode           Mode  `json:"mode"`
	TotalWorkers   int   `json:"total_workers"`
	MaxWorkers     int   `json:"max_workers"`
	OnDemand       bool  `json:"on_demand"`
	OnDemandActive int   `json:"on_demand_active"`
	Stopped        bool  `json:"stopped"`
	MaxQueuedTasks *int  `json:"max_queued_tasks"`   // null when calls are never held back
	Queued         int   `json:"queued"`             // calls waiting in the pool's queue
	Pending        int   `json:"pending"`            // calls accepted and not yet completed
	Replaced       int64 `json:"replaced_unhealthy"` // workers replaced after failing health checks
	// Replacing counts the lost workers whose replacements have not started yet, and StartError says why the last
	// attempt failed while any are pending.
	Replacing  int    `json:"replacing"`
	StartError string `json:"start_error,omitempty"`
	// Reconciles counts the times the pool checked its calls with a worker after a connection loss or an overdue
	// reply, and Resent the calls it sent again because the worker had never received them.
	Reconciles int64 `json:"reconciles"`
	Resent     int64 `json:"resent"`
	// Failovers counts the calls of idempotent methods sent to another worker because theirs was lost.
	Failovers    int64          `json:"failovers"`
	LoadBalancer balancer.Stats `json:"load_balancer"`
}

// WorkerStats describe one worker of a pool.
type WorkerStats struct {
	WorkerID int `json:"worker_id"` // index in the pool
	fleet.WorkerStats
	// Health is nil until the pool's health checks have asked this worker.
	Health *Health `json:"health,omitempty"`
}

// Stats returns the pool's statistics.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := PoolStats{
		Mode:           p.opts.Mode,
		TotalWorkers:   p.bal.Len(),
		MaxWorkers:     p.opts.MaxWorkers,
		OnDemand:       p.opts.OnDemand,
		OnDemandActive: p.onDemand.active,
		Stopped:        p.stopping.Load(),
		Queued:         p.queue.len(),
		Pending:        int(p.pending()),
		LoadBalancer:   p.bal.Stats(),
		Replaced:       p.health.unhealthy.Load(),
	}
	if p.opts.OnDemand {
		// On-demand workers never join the balancer's rotation; the pool counts their dispatches itself.
		s.LoadBalancer.TotalDispatched = p.onDemand.total
	}
	if p.limit > 0 {
		n := p.limit
		s.MaxQueuedTasks = &n
	}
	s.Failovers = p.failovers.Load()
	p.tr.report(&s)
	return s
}

// WorkerStats returns the statistics of worker i (0 ≤ i < TotalWorkers), the workers numbered in the order they
// hold their places in the pool; a replacement takes the place of the worker it replaces when it can.
func (p *Pool) WorkerStats(i int) (WorkerStats, error) {
	p.mu.Lock()
	// Worker i is the i-th live worker in slot order: slots of removed workers leave no holes in the numbering.
	var h worker
	k := 0
	for _, s := range p.slots {
		if s == nil {
			continue
		}
		if k == i {
			h = s
			break
		}
		k++
	}
	n := p.bal.Len()
	var health *Health
	if st := p.health.byWorker[h]; st != nil {
		c := *st
		health = &c
	}
	p.mu.Unlock()
	if h == nil {
		return WorkerStats{}, fmt.Errorf("%w: worker %d out of range (pool size: %d)", ErrInvalidOptions, i, n)
	}
	return WorkerStats{WorkerID: i, WorkerStats: h.stats(), Health: health}, nil
}
