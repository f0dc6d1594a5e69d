package client

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/msgp"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// remoteWorker is the pool's end of one remote worker: the calls it was sent and has not answered, and its outbox,
// where calls wait to travel together in one batch message. Under load NATS's cost per message (the server's
// routing, each process's reads, writes and wake-ups) is paid once per batch instead of once per call.
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

	mu        sync.Mutex
	inflight  map[*call]struct{} // sent and not answered
	completed atomic.Int64       // calls answered (load.go)
	lost      bool
	stopping  bool

	outMu    sync.Mutex
	flushing bool // a goroutine is publishing to this worker, or flush is armed to
	armed    bool // flush will drain the outbox
	flush    *time.Timer
	outbox   []*call // calls waiting for it
	spare    []*call
	inCork   bool // listed in t.corks; guarded by corks.mu

	// The sender's (flushing's) alone: the batch message and its body, reused since nats.go copies what it
	// publishes.
	batchMsg  wire.Out
	batchBody []byte
}

const (
	// batchBacklog is the backlog on a worker from which calls wait to travel in batches: a call to a worker that
	// holds no other goes at once, a call behind others waits (as Nagle's algorithm holds back small segments while
	// one is unacknowledged).
	batchBacklog = 2
	// batchDelay is the longest a call behind an unanswered one waits in the outbox for others to join it: a loop
	// submitting calls gathers dozens in that time, and it is short against a round trip under load (BENCHMARKS.md).
	batchDelay = 50 * time.Microsecond
	// corkDelay is the longest a burst to an idle worker waits for its caller to wait (Pool.waiting); only a caller
	// that never waits meets it.
	corkDelay = 500 * time.Microsecond
	// maxDrainRounds bounds how long a caller's goroutine keeps sending others' calls before a goroutine of its
	// own takes over.
	maxDrainRounds = 8
	// batchChunk is how many waiting calls make a batch worth sending before the worker has answered all it holds.
	batchChunk = maxBatch
	// maxKeptBatch is the largest batch body a worker's outbox keeps for its next batch.
	maxKeptBatch = 1 << 20
	// maxBatch is the most calls one batch message carries.
	maxBatch = 128
)

func (t *remoteTransport) newWorker(id string, index int) *remoteWorker {
	w := &remoteWorker{t: t, wid: id, index: index, subject: t.subj.Worker(id), ready: make(chan struct{}),
		inflight: make(map[*call]struct{})}
	w.lastSeen.Store(time.Now().UnixNano())
	return w
}

func (w *remoteWorker) id() string { return w.wid }

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
	backlog := len(w.inflight)
	w.mu.Unlock()
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

// done forgets a call the worker was sent, once its outcome is known, and sends what waits in the outbox if the
// worker has now answered everything else.
func (w *remoteWorker) done(c *call) {
	w.mu.Lock()
	delete(w.inflight, c)
	left := len(w.inflight)
	w.mu.Unlock()
	if w.standing {
		w.completed.Add(1)
	}
	w.t.mux.forget(c)
	if left > 0 {
		w.flushEarly(left)
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

// publish sends c to the worker, which holds backlog calls (c included): at once and alone, or through the outbox
// (holdFor). Senders combine: a call published while another goroutine sends to this worker joins the outbox, and
// that goroutine sends it.
func (w *remoteWorker) publish(c *call, backlog int) {
	if c.rc.urgent || !w.batches() {
		w.publishOne(c)
		return
	}
	w.outMu.Lock()
	if w.flushing {
		w.outbox = append(w.outbox, c)
		full := len(w.outbox) >= batchChunk
		w.outMu.Unlock()
		switch {
		case c.rc.endsRun:
			w.flushEarly(0) // the run is complete: nothing will join the batch
		case full:
			w.flushEarly(backlog)
		}
		return
	}
	w.flushing = true
	hold := w.holdFor(c, backlog)
	if hold == 0 {
		w.outMu.Unlock()
		w.publishOne(c)
		w.drain(maxDrainRounds)
		return
	}
	w.outbox = append(w.outbox, c)
	w.armed = true
	if w.flush == nil {
		w.flush = time.AfterFunc(hold, w.flushArmed)
	} else {
		w.flush.Reset(hold)
	}
	w.outMu.Unlock()
	if hold == corkDelay {
		w.t.corks.add(w)
	}
}

// holdFor is how long c waits in the outbox for other calls to join it; 0 sends it at once.
//
//   - The last call of a whole run (runs.go) goes at once, with what waits: no call of its burst will join it.
//   - A call behind an unanswered one waits batchDelay, or until batchChunk calls wait or the worker has answered
//     everything it was sent (flushEarly).
//   - A call to an idle worker while the pool has other calls in flight likely starts a burst: it waits until a
//     caller of the pool waits for a call (Pool.waiting), or corkDelay, so that a loop submitting calls sends each
//     worker one batch.
//   - A call to an idle worker of an otherwise idle pool goes at once: a caller making one call at a time sends
//     every call at once, alone.
func (w *remoteWorker) holdFor(c *call, backlog int) time.Duration {
	switch {
	case c.rc.endsRun:
		return 0
	case backlog >= batchBacklog:
		return batchDelay
	case w.t.pool.inFlight() > 1:
		return corkDelay
	}
	return 0
}

// corks lists the outboxes held back until a caller of the pool waits for a call (holdFor).
type corks struct {
	mu sync.Mutex
	ws []*remoteWorker
	n  atomic.Int32 // len(ws), read without the lock on every wait
}

func (k *corks) add(w *remoteWorker) {
	k.mu.Lock()
	if !w.inCork { // an outbox flushed by its timer may be corked again before anyone waits
		w.inCork = true
		k.ws = append(k.ws, w)
		k.n.Store(int32(len(k.ws)))
	}
	k.mu.Unlock()
}

// waiting sends the outboxes held back: a caller is about to wait.
func (t *remoteTransport) waiting() {
	k := &t.corks
	if k.n.Load() == 0 {
		return
	}
	var room [8]*remoteWorker
	k.mu.Lock()
	ws := append(room[:0], k.ws...)
	for _, w := range k.ws {
		w.inCork = false
	}
	clear(k.ws)
	k.ws = k.ws[:0]
	k.n.Store(0)
	k.mu.Unlock()
	for _, w := range ws {
		w.flushEarly(0)
	}
}

// flushArmed sends the outbox when its wait is over.
func (w *remoteWorker) flushArmed() {
	w.outMu.Lock()
	w.armed = false
	w.outMu.Unlock()
	w.drain(-1)
}

// flushEarly sends the outbox before its wait is over when a batch's worth waits in it, or everything the worker
// holds does (the worker has answered all it was sent, and would otherwise idle until the timer fires). left is the
// worker's backlog.
func (w *remoteWorker) flushEarly(left int) {
	w.outMu.Lock()
	if !w.armed || len(w.outbox) < left && len(w.outbox) < batchChunk || !w.flush.Stop() {
		w.outMu.Unlock()
		return // nothing waits, the worker still has work, or the timer is sending the outbox already
	}
	w.armed = false
	w.outMu.Unlock()
	w.drain(maxDrainRounds)
}

// drain sends what piled up in the outbox while this goroutine published, until it is empty.
func (w *remoteWorker) drain(rounds int) {
	for i := 0; ; i++ {
		w.outMu.Lock()
		if len(w.outbox) == 0 {
			w.flushing = false
			w.outMu.Unlock()
			return
		}
		if i == rounds {
			w.outMu.Unlock()
			go w.drain(-1) // still flushing: it is the new sender
			return
		}
		batch := w.outbox
		w.outbox = w.spare[:0]
		w.outMu.Unlock()
		for len(batch) > 0 {
			k := min(len(batch), maxBatch)
			w.publishBatch(batch[:k])
			batch = batch[k:]
		}
		w.outMu.Lock()
		w.spare = batch[:0]
		w.outMu.Unlock()
	}
}

// publishBatch sends calls in one message; one call goes alone.
func (w *remoteWorker) publishBatch(calls []*call) {
	if len(calls) == 1 {
		w.publishOne(calls[0])
		return
	}
	mux := w.t.mux
	// The body is written as the calls are registered: an array header sized for all of them, patched below when
	// some were cancelled while they waited in the outbox. An array32 header is what the patch needs room for.
	need := 5
	for _, c := range calls {
		// An entry: the map header, four keys, string headers of up to 5 bytes, and at most 13 digits each of call ID
		// and reply token.
		need += 30 + len(mux.id) + 13 + len(c.method) + len(mux.prefix) + 13 + len(c.rc.body)
		if c.rc.deadline != 0 {
			need += 8 + len(time.RFC3339Nano)
		}
	}
	buf := w.batchBody
	if cap(buf) < need {
		buf = make([]byte, 0, need)
	}
	body := buf[:5]
	n := 0
	now := time.Now().UnixNano()
	for _, c := range calls {
		if c.settled() {
			continue
		}
		c.rc.sentAt.CompareAndSwap(0, now)
		// The ID and reply subject are written from buffers on the stack: strings of their own would cost two
		// allocations per call, and the entry's encoding copies them anyway.
		var idBuf, replyBuf [64]byte
		id := mux.appendCallID(idBuf[:0], c.rc.id)
		reply := mux.appendReply(replyBuf[:0], mux.filed(c))
		e := wire.BatchCall{ID: unsafe.String(unsafe.SliceData(id), len(id)), Method: c.method,
			Reply: unsafe.String(unsafe.SliceData(reply), len(reply)), Args: c.rc.body}
		e.Deadline = c.rc.deadlineHeader()
		body = e.AppendMsgpack(body)
		n++
	}
	if n == 0 {
		return
	}
	if int64(len(body)+64) > w.t.nc.MaxPayload() { // 64: the message's headers
		// Too big together: send each alone, so one oversized call fails by itself.
		for _, c := range calls {
			if !c.settled() {
				mux.forget(c)
				w.publishOne(c)
			}
		}
		return
	}
	var room [5]byte
	hdr := msgp.AppendArrayLen(room[:0], n)
	m := &w.batchMsg
	m.Msg.Subject = w.subject
	m.Set(wire.FieldBatch, strconv.Itoa(n))
	m.Msg.Data = body[5-len(hdr):]
	copy(m.Msg.Data, hdr)
	err := w.t.nc.PublishMsg(&m.Msg)
	m.Msg.Data = nil
	if cap(body) <= maxKeptBatch {
		w.batchBody = body[:0]
	}
	if err != nil && !w.undelivered(err) {
		for _, c := range calls {
			if !c.settled() {
				w.fail(c, fmt.Errorf("client: send %s to %s: %w", c.method, w.wid, err))
			}
		}
	}
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

// publishOne sends c in a message of its own.
func (w *remoteWorker) publishOne(c *call) {
	mux := w.t.mux
	n := mux.filed(c)
	c.rc.sentAt.CompareAndSwap(0, time.Now().UnixNano())
	o := wire.GetCall(w.subject)
	o.Msg.Reply, o.Msg.Data = string(mux.appendReply(nil, n)), c.rc.body
	o.Set(wire.FieldCallID, c.callID())
	o.Set(wire.FieldMethod, c.method)
	if c.rc.urgent {
		// An urgent call goes to the control subject, whose goroutine is never busy with a call.
		o.Msg.Subject = w.t.subj.Control(w.wid)
		o.Set(wire.FieldControl, wire.ControlCall)
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
