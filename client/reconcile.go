package client

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/natsfleet/natsfleet/internal/wire"
)

// Reconciling. Core NATS delivers at most once: while a connection is down, or cut off as a slow consumer, calls to
// a worker and replies from it can be lost. A pool therefore asks a worker what became of the calls it sent it and
// has no reply for (wire.ControlReconcile): after its own connection came back, after the worker's did (its
// heartbeats count its reconnects), and when calls are overdue on a worker that is alive. The worker sends again the
// outcomes it kept; the pool sends again the calls the worker never received (safe for any method: they never
// started, and wire.HeaderResend lets the worker drop a copy that was only late), waits for those still queued or
// running, and fails with ErrConnectionLost those whose outcome the worker no longer keeps.

// reconcileState is a remote worker's part in reconciling.
type reconcileState struct {
	needed  atomic.Bool   // ask at the next heartbeat
	running atomic.Bool   // a reconcile is under way
	last    atomic.Int64  // Unix nanoseconds of the last one
	conn    atomic.Uint32 // the worker's reconnect count, as its last heartbeat said
}

// overdueBeats is how many heartbeat intervals a call waits for its reply before the pool checks with a live
// worker whether it has it, and how often it checks again while it waits.
const overdueBeats = 3

// reconcile asks the worker about the calls it was sent and has not answered, and acts on what it says. It runs in
// its own goroutine; one at a time per worker.
func (w *remoteWorker) reconcile() {
	r := &w.rec
	if !r.running.CompareAndSwap(false, true) {
		return
	}
	defer r.running.Store(false)
	r.needed.Store(false)
	r.last.Store(time.Now().UnixNano())
	w.mu.Lock()
	calls := make([]*call, 0, len(w.inflight))
	for c := range w.inflight {
		if c.rc.sentAt.Load() != 0 && !c.settled() {
			calls = append(calls, c)
		}
	}
	w.mu.Unlock()
	if len(calls) == 0 {
		return
	}
	ids := make([]string, len(calls))
	for i, c := range calls {
		ids[i] = c.callID()
	}
	body, err := msgpack.Marshal(ids)
	if err != nil {
		return
	}
	t := w.t
	reply, err := w.askReconcile(body)
	var states []wire.CallState
	if err == nil {
		if st, _ := wire.ReadReply(reply); st != wire.StatusOK {
			err = fmt.Errorf("status %q", st)
		} else {
			err = msgpack.Unmarshal(reply.Data, &states)
		}
	}
	if err == nil && len(states) != len(calls) {
		err = fmt.Errorf("%d states for %d calls", len(states), len(calls))
	}
	if err != nil {
		r.needed.Store(true) // the worker may not be back yet: ask at its next heartbeat
		t.pool.opts.Logger.Debug("client: reconcile", "pool", t.pool.id, "worker", w.wid, "err", err)
		return
	}
	resent, lost := 0, 0
	for i, st := range states {
		c := calls[i]
		switch st {
		case wire.CallUnknown:
			c.rc.resend = true
			if !c.settled() {
				w.publishOne(c)
				resent++
			}
		case wire.CallExpired:
			w.fail(c, fmt.Errorf("%w: worker %s no longer knows the outcome of the call", ErrConnectionLost, w.wid))
			lost++
		}
	}
	t.reconciled.Add(1)
	t.resent.Add(int64(resent))
	if resent+lost > 0 {
		t.pool.opts.Logger.Info("client: reconciled calls with a worker", "pool", t.pool.id, "worker", w.wid,
			"calls", len(calls), "resent", resent, "lost", lost)
	}
}

// Just after a reconnect a worker may not be back on the server yet, which answers for it that nobody listens; the
// pool asks again every noRespondersWait, up to noRespondersTries times, then leaves it to the worker's heartbeats.
const (
	noRespondersWait  = 100 * time.Millisecond
	noRespondersTries = 10
)

// askReconcile sends the worker the IDs of the calls it has not answered and returns its reply.
func (w *remoteWorker) askReconcile(body []byte) (*nats.Msg, error) {
	t := w.t
	for try := 1; ; try++ {
		o := wire.GetOut(t.subj.Control(w.wid))
		o.Set(wire.FieldControl, wire.ControlReconcile)
		o.Msg.Data = body
		reply, err := t.nc.RequestMsg(&o.Msg, 2*w.interval())
		o.Put()
		if !errors.Is(err, nats.ErrNoResponders) || try == noRespondersTries {
			return reply, err
		}
		select {
		case <-time.After(noRespondersWait):
		case <-t.quit:
			return nil, err
		}
	}
}

// overdue reports whether the worker has calls that should have been answered by now: sent overdueBeats intervals
// ago or more, and not checked for as long. A spawned worker serves this pool alone, so its heartbeat's count of
// calls shows whether it has them all; a standing worker's counts those of other clients too.
func (w *remoteWorker) overdue(now int64) bool {
	iv := int64(w.interval())
	if now-w.rec.last.Load() < overdueBeats*iv {
		return false
	}
	hb := w.beat.Load()
	w.mu.Lock()
	old := 0
	for c := range w.inflight {
		if at := c.rc.sentAt.Load(); at != 0 && now-at >= overdueBeats*iv {
			old++
		}
	}
	w.mu.Unlock()
	if old == 0 {
		return false
	}
	return w.standing || hb == nil || hb.InFlight < int64(old)
}
