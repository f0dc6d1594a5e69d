package limits

import (
	"context"
	"math/bits"
	"runtime"
	"slices"
	"time"
)

// Exact mode coalesces: the acquisitions of one key waiting in this process
// queue up, and one goroutine per key (the combiner, running while the queue
// is not empty) serves them in batches. A batch is every acquisition queued
// when the combiner reads the newest state; it admits them in arrival order,
// each wholly or not at all, and writes the result in ONE compare-and-set. On
// a conflict it redoes the batch on the newer state, with whatever joined the
// queue meanwhile. So a key costs one write per batch, not per acquisition,
// and the fleet-wide count stays exact: each batch is one transaction.
//
// Arrival order is kept: the first blocking acquisition that does not fit
// stops the batch, and those behind it wait for their turn even when they
// would fit (a small request never overtakes a large one, so none starves).
// A TryAcquire that cannot be admitted in its turn is refused at once.

// waiter is one acquisition in a key's queue.
type waiter struct {
	a     *Acquisition
	ctx   context.Context
	block bool
	// Guarded by the shard's mu.
	state   waitState
	blocked string // the limit that kept it waiting, for its error
	err     error
	done    chan struct{} // closed when state becomes finished
}

type waitState uint8

const (
	queued   waitState = iota // in the queue, may leave it (ctx)
	inBatch                   // in a batch being written: its outcome is coming
	finished                  // err is its outcome
)

// verdict is what a batch made of one waiter.
type verdict struct {
	kind verdictKind
	bl   blocker // vWait: what blocks the head; vRefuse: why it is refused
}

type verdictKind uint8

const (
	vWait   verdictKind = iota // stays in the queue
	vAdmit                     // taken in the batch's state
	vRefuse                    // a TryAcquire that is not admitted now
)

// planBatch admits, in arrival order, the waiters of batch that fit in st at
// now, changing st in place and filling out (len(batch)) with each verdict.
// mine is what this process holds of the key's resources: our lease counts
// no more than that (a write applied twice may have counted more). head is
// what blocks the first waiter left waiting (zero if none); write says st
// must be written (something admitted, or expired leases dropped).
func (b *kvBackend) planBatch(st *sharedState, now int64, mine []float64, batch []*waiter, out []verdict) (head blocker, write bool) {
	write = b.settle(st, now)
	if b.hasRes {
		trimHolding(st.Holders, b.holder, mine)
	}
	for i, w := range batch {
		switch bl := b.check(st, now, w.a); {
		case head.wait != 0: // behind a blocked waiter: its turn has not come
			out[i] = verdict{vWait, head}
			if !w.block {
				out[i].kind = vRefuse
			}
		case bl.wait != 0:
			out[i] = verdict{vRefuse, bl}
			if w.block {
				head, out[i].kind = bl, vWait
			}
		default:
			b.take(st, now, w.a)
			out[i] = verdict{kind: vAdmit}
			write = true
		}
	}
	return head, write
}

// acquire queues a at sh and waits for the combiner's verdict or ctx.
func (sh *shard) acquire(ctx context.Context, a *Acquisition, block bool) error {
	w := &waiter{a: a, ctx: ctx, block: block, done: make(chan struct{})}
	sh.mu.Lock()
	sh.queue = append(sh.queue, w)
	start := !sh.running
	sh.running = true
	sh.mu.Unlock()
	if !start {
		sh.poke()
	} else if !sh.b.spawn(sh.combine) {
		sh.mu.Lock()
		sh.failAll(ErrClosed, true)
		sh.mu.Unlock()
	}
	select {
	case <-w.done:
		return w.err
	case <-ctx.Done():
	}
	sh.mu.Lock()
	if w.state == queued {
		sh.finish(w, waitErr(w.blockedKey(), ctx.Err()))
		sh.mu.Unlock()
		sh.poke() // it may have been the head
		return w.err
	}
	sh.mu.Unlock()
	<-w.done // in a batch being written: the outcome is known soon
	return w.err
}

func (w *waiter) blockedKey() string {
	if w.blocked != "" {
		return w.blocked
	}
	return w.a.set.defs[bits.TrailingZeros64(w.a.taken)].key
}

func (sh *shard) poke() {
	select {
	case sh.kick <- struct{}{}:
	default:
	}
}

// finish sets w's outcome. Called with sh.mu held.
func (sh *shard) finish(w *waiter, err error) {
	w.state, w.err = finished, err
	close(w.done)
}

// failAll fails every waiter of the queue, and stops the combiner when
// stop. Called with sh.mu held, and no batch in flight.
func (sh *shard) failAll(err error, stop bool) {
	for _, w := range sh.queue {
		if w.state != finished {
			sh.finish(w, err)
		}
	}
	clear(sh.queue)
	sh.queue = sh.queue[:0]
	if stop {
		sh.running = false
	}
}

// combine serves sh's queue until it is empty or the set closes.
func (sh *shard) combine() {
	b := sh.b
	var (
		r        retry
		batch    []*waiter
		verdicts []verdict
	)
	closed := func() {
		sh.mu.Lock()
		sh.failAll(ErrClosed, true)
		sh.mu.Unlock()
	}
	for {
		select {
		case <-sh.kick:
		default:
		}
		sh.mu.Lock()
		live := sh.queue[:0]
		for _, w := range sh.queue {
			if w.state != finished {
				live = append(live, w)
			}
		}
		clear(sh.queue[len(live):])
		sh.queue = live
		if len(live) == 0 {
			sh.running = false
			sh.mu.Unlock()
			return
		}
		batch = append(batch[:0], live...)
		for _, w := range batch {
			w.state = inBatch
		}
		sh.mu.Unlock()

		select {
		case sh.gate <- struct{}{}:
		case <-b.done:
			closed()
			return
		}
		verdicts = slices.Grow(verdicts[:0], len(batch))[:len(batch)]
		var head blocker
		at, err := sh.try(b.bgCtx, func(st *sharedState, now int64, _ bool) (blocker, bool) {
			var mine []float64
			if b.hasRes {
				mine = sh.holding()
			}
			var write bool
			head, write = b.planBatch(st, now, mine, batch, verdicts)
			return blocker{}, write
		}, r.redo)
		admitted := false
		if err == nil {
			for i, w := range batch {
				if verdicts[i].kind == vAdmit {
					w.a.at = at.now
					sh.holdResources(w.a, 1)
					admitted = true
				}
			}
		}
		<-sh.gate

		sh.mu.Lock()
		for i, w := range batch {
			v := verdicts[i]
			switch {
			case err == nil && v.kind == vAdmit:
				sh.finish(w, nil)
			case err == nil && v.kind == vRefuse:
				sh.finish(w, wouldWait(v.bl.key, v.bl.wait))
			case w.ctx.Err() != nil:
				if r.last != nil {
					sh.finish(w, r.gaveUp(sh, w.ctx.Err()))
				} else {
					sh.finish(w, waitErr(w.blockedKey(), w.ctx.Err()))
				}
			default:
				if err == nil {
					w.blocked = v.bl.key
				}
				w.state = queued
			}
		}
		sh.mu.Unlock()

		if err != nil {
			if err = sh.recover(b.bgCtx, b.done, &r, at.base, err); err != nil {
				if b.bgCtx.Err() != nil {
					closed()
					return
				}
				sh.mu.Lock()
				sh.failAll(err, false)
				sh.mu.Unlock()
			}
			continue
		}
		r = retry{}
		if admitted {
			// Let the callers just served come back before the next batch
			// is taken: a loop of acquisitions then joins it, not the one
			// after.
			runtime.Gosched()
			continue
		}
		if head.wait == 0 {
			continue
		}
		// The head waits: until the state changes (a release here or in
		// another process), its wait is over, or the queue changes (it left,
		// or a TryAcquire arrived to be refused).
		wake, changed := sh.waitChan(at.rev)
		if changed {
			continue
		}
		timer := time.NewTimer(time.Duration(min(head.wait, int64(resync))))
		select {
		case <-wake:
		case <-sh.kick:
		case <-timer.C:
			if head.wait >= int64(resync) {
				// The watch may have missed a change (its consumer is
				// being recreated after a server went away): read the key.
				_ = sh.fetch(b.bgCtx) // failing, it is an outage the next attempt meets
			}
		case <-b.done:
			timer.Stop()
			closed()
			return
		}
		timer.Stop()
	}
}

// resync bounds how long a blocked head trusts the watch to tell it of a
// change before it reads the key itself.
const resync = 5 * time.Second

// holding is a copy of what this process holds of the key's resources.
func (sh *shard) holding() []float64 {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return slices.Clone(sh.held)
}
