package client

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// remoteWorker is the pool's end of one remote worker: the calls it was sent and has not answered, and the route its
// calls take (route.go).
type remoteWorker struct {
	t        *remoteTransport
	wid      string
	index    int
	subject  string
	agent    string     // Fleet: the agent that hosts it
	proc     *childProc // Process: the child running it
	standing bool       // joined with Attach: not ours to stop
	lastSeen atomic.Int64
	ready    chan struct{}
	readyOne sync.Once
	beat     atomic.Pointer[wire.Heartbeat]
	rec      reconcileState
	// out is the route of its calls: its own, or its agent's shared by the pool's workers there (viaAgent). Set
	// before its first call and never changed, so that its calls keep their order.
	out atomic.Pointer[route]

	mu        sync.Mutex
	inflight  map[*call]struct{} // sent and not answered
	completed atomic.Int64       // calls answered (load.go)
	lost      bool
	stopping  bool
}

func (t *remoteTransport) newWorker(id string, index int) *remoteWorker {
	w := &remoteWorker{t: t, wid: id, index: index, subject: t.subj.Worker(id), ready: make(chan struct{}),
		inflight: make(map[*call]struct{})}
	w.lastSeen.Store(time.Now().UnixNano())
	return w
}

func (w *remoteWorker) id() string { return w.wid }

// route is the worker's route; one of its own until its first heartbeat says otherwise.
func (w *remoteWorker) route() *route {
	if r := w.out.Load(); r != nil {
		return r
	}
	w.out.CompareAndSwap(nil, newRoute(w.t, w.subject, false))
	return w.out.Load()
}

func (w *remoteWorker) send(c *call) {
	rc := c.rc
	// The call ID stays the same across retries, so a cancel reaches whichever attempt runs.
	rc.id = w.t.mux.ids.Add(1)
	rc.w.Store(w) // publishes the ID to cancel
	w.mu.Lock()
	if w.lost {
		w.mu.Unlock()
		c.complete(nil, fmt.Errorf("%w: %s", ErrWorkerLost, w.wid))
		return
	}
	w.inflight[c] = struct{}{}
	w.mu.Unlock()
	r := w.route()
	backlog := int(r.held.Add(1))
	if c.settled() {
		w.done(c) // cancelled on its way
		return
	}
	w.publish(c, backlog)
}

func (w *remoteWorker) sendUrgent(c *call) {
	c.rc.urgent = true
	w.send(c)
}

// done forgets a call the worker was sent, once its outcome is known, and sends what waits on its route if the route
// has now answered everything else.
func (w *remoteWorker) done(c *call) {
	w.mu.Lock()
	_, ok := w.inflight[c]
	delete(w.inflight, c)
	w.mu.Unlock()
	w.t.mux.forget(c)
	if !ok {
		return // done already: its route counted it out
	}
	if w.standing {
		w.completed.Add(1)
	}
	r := w.route()
	if left := int(r.held.Add(-1)); left > 0 {
		r.flushEarly(left)
	}
}

// fail completes a call the worker was sent with err.
func (w *remoteWorker) fail(c *call, err error) {
	w.done(c)
	c.complete(nil, err)
}

// batches reports whether the worker takes call batches, as its heartbeats say.
func (w *remoteWorker) batches() bool {
	hb := w.beat.Load()
	return hb != nil && hb.Batches
}

// publish sends c to the worker, which holds backlog calls on its route (c included): at once and alone, or through
// the route's outbox.
func (w *remoteWorker) publish(c *call, backlog int) {
	if c.rc.urgent || !w.batches() {
		w.publishOne(c)
		return
	}
	w.route().publish(c, backlog)
}

// undelivered reports whether err says only that a call could not be sent yet: the connection is down and its
// reconnect buffer full. The call stays in flight, and the reconcile after the reconnect sends it again.
func (w *remoteWorker) undelivered(err error) bool {
	if !errors.Is(err, nats.ErrReconnectBufExceeded) {
		return false
	}
	w.rec.needed.Store(true)
	return true
}

// publishOne sends c in a message of its own: on the worker's route, or, urgent, to its control subject.
func (w *remoteWorker) publishOne(c *call) {
	mux := w.t.mux
	n := mux.filed(c)
	c.rc.sentAt.CompareAndSwap(0, time.Now().UnixNano())
	r := w.route()
	o := wire.GetCall(r.subject)
	o.Msg.Reply, o.Msg.Data = string(mux.appendReply(nil, n)), c.rc.body
	o.Set(wire.FieldCallID, c.callID())
	o.Set(wire.FieldMethod, c.method)
	switch {
	case c.rc.urgent:
		// An urgent call goes to the control subject, whose goroutine is never busy with a call.
		o.Msg.Subject = w.t.subj.Control(w.wid)
		o.Set(wire.FieldControl, wire.ControlCall)
	case r.agent:
		o.Set(wire.FieldWorker, w.wid)
	}
	if c.rc.deadline != 0 {
		o.Set(wire.FieldDeadline, c.rc.deadlineHeader())
	}
	if c.rc.resend {
		o.Set(wire.FieldResend, "1")
	}
	err := w.t.nc.PublishMsg(&o.Msg)
	o.Put()
	if err != nil && !w.undelivered(err) {
		if errors.Is(err, nats.ErrMaxPayload) {
			err = fmt.Errorf("%w: %w", fleet.ErrPayloadTooLarge, err)
		}
		w.fail(c, fmt.Errorf("client: send %s to %s: %w", c.method, w.wid, err))
	}
}
