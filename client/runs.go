package client

import (
	"sync"

	"github.com/natsfleet/natsfleet/balancer"
)

// runPicker hands calls out in runs: the worker the balancer picks for a call takes the next calls too, as many as
// the transport sizes the run (remoteTransport.run), before the balancer picks again. One call to each worker in
// turn would put a slice of every burst on every worker, and a caller waiting for its calls in order (a ring of
// futures, a pipeline) would wait for the slowest worker each time while the others idle; in runs each worker holds
// a stretch of the caller's calls, answers it in one message and is refilled while the others work. Over many runs
// every worker gets its share, as with one call at a time. Least-active and least-total pools pick per call, by
// counts that every call changes.
type runPicker struct {
	on   bool // the transport batches and the balancer spreads calls evenly (round robin, random)
	mu   sync.Mutex
	slot int // of the open run
	left int // calls the open run still takes
}

// pick has the balancer choose c's worker among those with fewer than limit calls in flight (0: no cap), in runs
// when the pool hands calls out in runs, which only remote pools do; c.rc.endsRun marks the last call of a whole
// run.
func (p *Pool) pick(c *call, limit int) (int, bool) {
	if !p.runs.on {
		return p.bal.Pick(limit)
	}
	run, whole := p.tr.run(p.inFlight(), int(p.live.Load()))
	slot, last, ok := p.runs.next(p.bal, limit, run)
	c.rc.endsRun = last && whole
	return slot, ok
}

// next picks the slot of the next call with runs of run calls: the open run's slot while it takes more, else one
// the balancer picks, which opens a run. A run ends early when its slot reaches the cap or leaves; a run of 1 closes
// it. last reports a run's final call.
func (r *runPicker) next(bal *balancer.Balancer, limit, run int) (slot int, last, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if run > 1 && r.left > 0 && bal.Take(r.slot, limit) {
		r.left--
		return r.slot, r.left == 0, true
	}
	slot, ok = bal.Pick(limit)
	r.slot, r.left = slot, 0
	if ok && run > 1 {
		r.left = run - 1
	}
	return slot, false, ok
}
