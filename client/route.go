package client

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/msgp"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// route is the way calls travel to one or more workers: a subject and an outbox, where calls wait to travel together
// in one batch message. Under load NATS's cost per message (the server's routing, each process's reads, writes and
// wake-ups) is paid once per batch instead of once per call. A worker has a route of its own, on its subject; the
// workers a pool has on one agent beyond the agent's CPUs share the agent's (agent.go), so that calls to thousands of
// workers still travel in batches.
type route struct {
	t       *remoteTransport
	subject string
	agent   bool         // the agent's calls subject: every call names its worker
	held    atomic.Int64 // calls sent on it and not answered: its backlog

	outMu    sync.Mutex
	flushing bool // a goroutine is publishing on this route, or flush is armed to
	armed    bool // flush will drain the outbox
	flush    *time.Timer
	outbox   []*call // calls waiting
	spare    []*call
	inCork   bool // listed in t.corks; guarded by corks.mu

	// The sender's (flushing's) alone: the batch message and its body, reused since nats.go copies what it
	// publishes.
	batchMsg  wire.Out
	batchBody []byte
}

func newRoute(t *remoteTransport, subject string, agent bool) *route {
	return &route{t: t, subject: subject, agent: agent}
}

// agentRoutes are a fleet pool's routes through agents, and what it needs to choose them: how many of its workers it
// placed on each agent, and each agent's CPUs.
type agentRoutes struct {
	mu     sync.Mutex
	routes map[string]*route
	count  map[string]int // workers placed
	cpus   map[string]int
}

// placed counts a worker the pool places on agent a.
func (r *agentRoutes) placed(a fleet.AgentInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.count == nil {
		r.count, r.cpus = make(map[string]int), make(map[string]int)
	}
	r.count[a.ID]++
	r.cpus[a.ID] = a.CPUs
}

// chooseRoute gives the worker its route at its first heartbeat. A worker has its own, on its subject, which its
// agent serves in a goroutine of the worker's: the workers of an agent then take their calls in parallel, which
// pays up to the agent's CPUs. The pool's workers beyond that many on one agent share the agent's calls subject, so
// that their calls, however many workers they are spread over, still travel in batches.
func (w *remoteWorker) chooseRoute(hb *wire.Heartbeat) {
	t := w.t
	if !hb.AgentCalls || hb.Agent == "" || w.standing || t.pool.opts.Mode != Fleet {
		return
	}
	r := &t.agents
	r.mu.Lock()
	defer r.mu.Unlock()
	if cpus := r.cpus[hb.Agent]; cpus <= 0 || r.count[hb.Agent] <= cpus {
		return
	}
	ar := r.routes[hb.Agent]
	if ar == nil {
		if r.routes == nil {
			r.routes = make(map[string]*route)
		}
		ar = newRoute(t, t.subj.AgentCalls(hb.Agent), true)
		r.routes[hb.Agent] = ar
	}
	w.out.CompareAndSwap(nil, ar)
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

// publish sends c on the route, which holds backlog calls (c included): at once and alone, or through the outbox
// (holdFor). Senders combine: a call published while another goroutine sends on this route joins the outbox, and
// that goroutine sends it.
func (w *route) publish(c *call, backlog int) {
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
		c.rc.w.Load().publishOne(c)
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
func (w *route) holdFor(c *call, backlog int) time.Duration {
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
	ws []*route
	n  atomic.Int32 // len(ws), read without the lock on every wait
}

func (k *corks) add(w *route) {
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
	var room [8]*route
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
func (w *route) flushArmed() {
	w.outMu.Lock()
	w.armed = false
	w.outMu.Unlock()
	w.drain(-1)
}

// flushEarly sends the outbox before its wait is over when a batch's worth waits in it, or everything the worker
// holds does (the worker has answered all it was sent, and would otherwise idle until the timer fires). left is the
// worker's backlog.
func (w *route) flushEarly(left int) {
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
func (w *route) drain(rounds int) {
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
func (w *route) publishBatch(calls []*call) {
	if len(calls) == 1 {
		calls[0].rc.w.Load().publishOne(calls[0])
		return
	}
	mux := w.t.mux
	// The body is written as the calls are registered: an array header sized for all of them, patched below when
	// some were cancelled while they waited in the outbox. An array32 header is what the patch needs room for.
	need := 5
	for _, c := range calls {
		// An entry: the map header, five keys, string headers of up to 5 bytes, and at most 13 digits each of call ID
		// and reply token; the worker's ID on an agent's route.
		need += 36 + len(mux.id) + 13 + len(c.method) + len(mux.prefix) + 13 + len(c.rc.body)
		if w.agent {
			need += len(c.rc.w.Load().wid)
		}
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
		if w.agent {
			e.Worker = c.rc.w.Load().wid
		}
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
				c.rc.w.Load().publishOne(c)
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
	if err != nil {
		for _, c := range calls {
			if rw := c.rc.w.Load(); !c.settled() && !rw.undelivered(err) {
				rw.fail(c, fmt.Errorf("client: send %s to %s: %w", c.method, rw.wid, err))
			}
		}
	}
}
