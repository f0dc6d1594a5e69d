package client

import (
	"github.com/natsfleet/natsfleet/balancer"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// Load seen across callers. Standing workers (Attach) serve many callers at once, and a pool's own in-flight calls
// are only part of each one's load: its replies and heartbeats say how many calls it holds and has served for every
// caller together (wire.HeaderLoad), and the pool hands its balancer the other callers' part of that
// (balancer.Balancer.SetLoad), so that least-active and least-total pools keep clear of workers busy with others'
// calls. A worker started for one pool has no other callers and reports nothing.

// weighsLoad reports whether the pool's balancer weighs what other callers have on its workers.
func (p *Pool) weighsLoad() bool {
	alg := p.bal.Algorithm()
	return alg == balancer.LeastActive || alg == balancer.LeastTotal
}

// replyLoad reads the load a standing worker's reply to c reports. The worker counted c as done; the pool still
// counts it in flight.
func (w *remoteWorker) replyLoad(c *call, load string) {
	p := w.t.pool
	if !p.weighsLoad() {
		return
	}
	inFlight, calls, ok := wire.ParseLoad(load)
	if !ok || c.slot < 0 {
		return
	}
	own, done := w.ownLoad()
	p.bal.SetLoad(int(c.slot), int(inFlight)-(own-1), othersServed(calls, done+1))
}

// beatLoad reads the load a standing worker's heartbeat reports.
func (w *remoteWorker) beatLoad(hb *wire.Heartbeat) {
	p := w.t.pool
	if !p.weighsLoad() {
		return
	}
	p.mu.Lock()
	slot, ok := p.slotOf[w]
	p.mu.Unlock()
	if !ok {
		return
	}
	own, done := w.ownLoad()
	p.bal.SetLoad(slot, int(hb.InFlight)-own, othersServed(hb.Calls, done))
}

// ownLoad returns the pool's calls in flight on the worker and those it completed.
func (w *remoteWorker) ownLoad() (inFlight int, completed int64) {
	w.mu.Lock()
	inFlight = len(w.inflight)
	w.mu.Unlock()
	return inFlight, w.completed.Load()
}

// othersServed is what a worker that served calls in all served other callers, ours being own of them.
func othersServed(calls, own int64) uint64 { return uint64(max(calls-own, 0)) }
