package client

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/msgp"
	"github.com/natsfleet/natsfleet/internal/wire"
	"github.com/natsfleet/natsfleet/limits"
)

// remoteBackend runs a pool's workers in other processes: children of this one (Process), workers spawned by agents
// (Fleet), or standing workers joined with Attach. Calls go to each worker's own subject; replies come back through
// the connection's reply mux; heartbeats tell which workers are alive.
type remoteBackend struct {
	pool   *Pool
	nc     *nats.Conn
	subj   broker.Subjects
	mux    *replyMux
	args   []byte // encoded constructor arguments
	limits []byte
	setID  string
	bucket string // KV bucket of a caller's named set; "" is the limits default
	attach bool
	plan   []string // Fleet: agent ID for each initial worker index
	seq    atomic.Uint64
	child  childEnv

	mu      sync.Mutex
	handles map[string]*remoteHandle

	hbSub    *nats.Subscription
	quit     chan struct{}
	monDone  chan struct{}
	release  func() // drops the shared embedded server, if this pool used it
	spawning bool   // holds the child spawner
	repl     sync.WaitGroup

	// Handles whose outbox holds a call to an idle worker until its caller waits (publish).
	corkMu  sync.Mutex
	corked  []*remoteHandle
	nCorked atomic.Int32
}

// remoteHandle is the pool's end of one remote worker.
type remoteHandle struct {
	be       *remoteBackend
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

	mu       sync.Mutex
	inflight map[*call]struct{}
	lost     bool
	stopping bool

	outMu    sync.Mutex
	flushing bool // a goroutine is publishing to this worker, or flush is armed to
	armed    bool // flush will drain the outbox
	flush    *time.Timer
	outbox   []*call // calls waiting for it
	spare    []*call
	inCork   bool // in be.corked; guarded by be.corkMu

	// The sender's (flushing's) alone: a batch message and its body, reused since nats.go copies what it publishes.
	batchMsg  nats.Msg
	batchN    [1]string
	batchBody []byte
}

func newRemoteBackend(ctx context.Context, p *Pool, args []any, attach bool) (*remoteBackend, error) {
	be := &remoteBackend{pool: p, nc: p.opts.Conn, attach: attach, subj: broker.Subjects{Prefix: p.opts.Prefix},
		handles: make(map[string]*remoteHandle), quit: make(chan struct{}), monDone: make(chan struct{})}
	p.runs = newBatchRuns()
	if be.nc == nil {
		if p.opts.Mode != Process {
			return nil, fmt.Errorf("%w: %s mode needs Options.Conn", ErrInvalidOptions, p.opts.Mode)
		}
		nc, url, release, err := acquireSharedServer()
		if err != nil {
			return nil, err
		}
		be.nc, be.release = nc, release
		be.child.url = url
	} else {
		be.child.url = be.nc.ConnectedUrl()
	}
	if p.opts.Mode == Process {
		acquireSpawner()
		be.spawning = true
	}
	ok := false
	defer func() {
		if !ok {
			be.shutdown()
		}
	}()
	if p.kind != nil {
		enc, err := codec.Msgpack.AppendArgs(nil, args)
		if err != nil {
			return nil, fmt.Errorf("client: encode constructor arguments of %s: %w", p.name, err)
		}
		be.args = enc
	}
	if err := be.limitsSpec(); err != nil {
		return nil, err
	}
	mux, err := acquireMux(be.nc)
	if err != nil {
		return nil, err
	}
	be.mux = mux
	be.hbSub, err = be.nc.Subscribe(be.subj.Heartbeats(p.name), be.onBeat)
	if err != nil {
		return nil, fmt.Errorf("client: subscribe to heartbeats: %w", err)
	}
	go be.monitor()
	if p.opts.Mode == Fleet && !p.opts.OnDemand && p.kind != nil {
		if err := be.planFleet(ctx); err != nil {
			return nil, err
		}
	}
	ok = true
	return be, nil
}

// limitsSpec prepares the pool's limits for its remote workers: definitions plus the KV set name they share.
func (be *remoteBackend) limitsSpec() error {
	p := be.pool
	var ls []limits.Limit
	switch {
	case len(p.opts.Limits) > 0:
		ls, be.setID = p.opts.Limits, "pool-"+p.id
	case p.opts.LimitSet != nil:
		// Only a set shared by name can reach other processes.
		set, ok := p.opts.LimitSet.(*limits.Set)
		if !ok || set.Name() == "" {
			return fmt.Errorf("%w: %s mode shares limits through JetStream KV: LimitSet must be a *limits.Set made with a Name and Conn", ErrInvalidOptions, p.opts.Mode)
		}
		ls, be.setID, be.bucket = set.Limits(), set.Name(), set.Bucket()
	default:
		return nil
	}
	// Workers report bad limits only when they start; check them here, where the caller sees the error.
	check, err := limits.NewSet(limits.SetOptions{}, ls...)
	if err != nil {
		return fmt.Errorf("client: pool limits: %w", err)
	}
	_ = check.Close()
	b, err := limits.MarshalLimits(ls)
	if err != nil {
		return fmt.Errorf("client: pool limits: %w", err)
	}
	be.limits = b
	return nil
}

func (be *remoteBackend) spec(index int) wire.WorkerSpec {
	p := be.pool
	return wire.WorkerSpec{
		Kind:              p.name,
		ID:                p.id + "-" + strconv.Itoa(index) + "-" + strconv.FormatUint(be.seq.Add(1), 36),
		Index:             index,
		Pool:              p.id,
		Args:              be.args,
		Concurrent:        false,
		Limits:            be.limits,
		LimitSet:          be.setID,
		LimitBucket:       be.bucket,
		Prefix:            p.opts.Prefix,
		HeartbeatInterval: p.opts.HeartbeatInterval,
	}
}

func (be *remoteBackend) newHandle(id string, index int) *remoteHandle {
	h := &remoteHandle{be: be, wid: id, index: index, subject: be.subj.Worker(id), ready: make(chan struct{}),
		inflight: make(map[*call]struct{})}
	h.lastSeen.Store(time.Now().UnixNano())
	be.mu.Lock()
	be.handles[id] = h
	be.mu.Unlock()
	return h
}

func (be *remoteBackend) dropHandle(h *remoteHandle) {
	be.mu.Lock()
	delete(be.handles, h.wid)
	be.mu.Unlock()
}

func (be *remoteBackend) start(ctx context.Context, index int) (handle, error) {
	spec := be.spec(index)
	h := be.newHandle(spec.ID, index)
	var err error
	switch be.pool.opts.Mode {
	case Process:
		h.proc, err = be.spawnChild(spec)
	case Fleet:
		h.agent, err = be.spawnOnAgent(ctx, index, spec)
	}
	if err == nil {
		err = h.waitReady(ctx)
	}
	if err != nil {
		be.dropHandle(h)
		if h.proc != nil {
			h.proc.kill()
		}
		return nil, err
	}
	return h, nil
}

func (h *remoteHandle) waitReady(ctx context.Context) error {
	var exited <-chan struct{}
	if h.proc != nil {
		exited = h.proc.exited
	}
	select {
	case <-h.ready:
		return nil
	case <-exited:
		return fmt.Errorf("client: worker %s exited before serving: %w", h.wid, h.proc.exitErr())
	case <-ctx.Done():
		return fmt.Errorf("client: worker %s did not start: %w", h.wid, ctx.Err())
	}
}

func (be *remoteBackend) onBeat(msg *nats.Msg) {
	var hb wire.Heartbeat
	if err := msgpack.Unmarshal(msg.Data, &hb); err != nil {
		return
	}
	be.mu.Lock()
	h := be.handles[hb.WorkerID]
	be.mu.Unlock()
	if h == nil {
		if be.attach && hb.Pool == "" && !hb.Stopping {
			be.join(hb)
		}
		return
	}
	h.lastSeen.Store(time.Now().UnixNano())
	h.beat.Store(&hb)
	h.readyOne.Do(func() { close(h.ready) })
}

// join adds a standing worker that announced itself to an attached pool.
func (be *remoteBackend) join(hb wire.Heartbeat) {
	p := be.pool
	p.mu.Lock()
	if p.stopping.Load() {
		p.mu.Unlock()
		return
	}
	be.mu.Lock()
	if be.handles[hb.WorkerID] != nil {
		be.mu.Unlock()
		p.mu.Unlock()
		return
	}
	h := &remoteHandle{be: be, wid: hb.WorkerID, subject: be.subj.Worker(hb.WorkerID), ready: make(chan struct{}),
		inflight: make(map[*call]struct{}), standing: true, agent: hb.Agent}
	h.lastSeen.Store(time.Now().UnixNano())
	h.beat.Store(&hb)
	h.readyOne.Do(func() { close(h.ready) })
	be.handles[hb.WorkerID] = h
	be.mu.Unlock()
	h.index = p.addLocked(h)
	next := p.drainLocked(nil)
	p.mu.Unlock()
	p.dispatchAll(next)
}

// monitor declares lost the workers whose heartbeats stopped.
func (be *remoteBackend) monitor() {
	defer close(be.monDone)
	iv := be.pool.opts.HeartbeatInterval
	t := time.NewTicker(iv / 4)
	defer t.Stop()
	for {
		select {
		case <-be.quit:
			return
		case <-t.C:
		}
		deadline := time.Now().Add(-3 * iv).UnixNano()
		be.mu.Lock()
		var silent []*remoteHandle
		for _, h := range be.handles {
			if h.lastSeen.Load() < deadline {
				silent = append(silent, h)
			}
		}
		be.mu.Unlock()
		for _, h := range silent {
			be.lose(h, fmt.Sprintf("no heartbeat for %s", 3*iv))
		}
	}
}

// lose takes a dead worker out of rotation, fails its in-flight calls with ErrWorkerLost and starts a replacement.
func (be *remoteBackend) lose(h *remoteHandle, reason string) {
	h.mu.Lock()
	if h.lost || h.stopping {
		h.mu.Unlock()
		return
	}
	h.lost = true
	calls := make([]*call, 0, len(h.inflight))
	for c := range h.inflight {
		calls = append(calls, c)
	}
	h.mu.Unlock()
	be.dropHandle(h)
	if h.proc != nil {
		h.proc.kill()
	}
	p := be.pool
	p.mu.Lock()
	slot := p.slotOf(h)
	if slot >= 0 {
		p.removeLocked(slot)
	}
	replace := !p.stopping.Load() && !h.standing && !p.opts.OnDemand
	if replace {
		be.repl.Add(1)
	}
	p.mu.Unlock()
	p.opts.Logger.Warn("client: worker lost", "pool", p.id, "worker", h.wid, "reason", reason, "in_flight", len(calls))
	err := fmt.Errorf("%w: %s: %s", ErrWorkerLost, h.wid, reason)
	for _, c := range calls {
		c.complete(nil, err)
	}
	if replace {
		go be.replace(h.index)
	} else {
		p.failQueuedIfNoWorkers()
	}
}

func (be *remoteBackend) replace(index int) {
	defer be.repl.Done()
	p := be.pool
	ctx, cancel := context.WithTimeout(p.ctx, p.opts.StartTimeout)
	defer cancel()
	h, err := be.start(ctx, index)
	if err != nil {
		p.opts.Logger.Error("client: replace lost worker", "pool", p.id, "index", index, "err", err)
		p.failQueuedIfNoWorkers()
		return
	}
	p.mu.Lock()
	if p.stopping.Load() {
		p.mu.Unlock()
		_ = h.stop(ctx)
		return
	}
	p.addLocked(h)
	next := p.drainLocked(nil)
	p.mu.Unlock()
	p.dispatchAll(next)
}

// prepare encodes a call's arguments for the wire.
func (be *remoteBackend) prepare(c *call) error {
	p := be.pool
	args := c.Values
	for i, a := range args {
		if rv, ok := a.(rawValue); ok && rv.codec == codec.Msgpack {
			if &args[0] == &c.Values[0] {
				args = append([]any(nil), c.Values...)
			}
			args[i] = msgpack.RawMessage(rv.raw)
		}
	}
	body, err := codec.Msgpack.AppendArgs(nil, args)
	if err != nil {
		return fmt.Errorf("%w: %s.%s: %w", fleet.ErrBadArguments, p.name, c.method, err)
	}
	if c.rc == nil {
		c.rc = &remoteCall{}
	}
	c.rc.body = body
	if c.ext != nil && c.ext.ctx != nil {
		if d, ok := c.ext.ctx.Deadline(); ok {
			c.rc.deadline = d.UnixNano()
		}
	}
	c.Retry = p.retry.forMethod(c.method)
	if p.sink != nil {
		c.Progress = func(ev wire.Progress) { p.sink(progressEvent(c, c.rc.rh.Load().wid, ev)) }
	}
	return nil
}

func (h *remoteHandle) id() string { return h.wid }

func (h *remoteHandle) send(c *call) {
	rc := c.rc
	// The call ID stays the same across retries, so a cancel reaches whichever attempt runs.
	rc.id = h.be.mux.ids.Add(1)
	rc.rh.Store(h) // publishes the ID to cancel
	h.mu.Lock()
	if h.lost {
		h.mu.Unlock()
		c.complete(nil, fmt.Errorf("%w: %s", ErrWorkerLost, h.wid))
		return
	}
	h.inflight[c] = struct{}{}
	backlog := len(h.inflight)
	h.mu.Unlock()
	if c.settled() {
		h.sent(c) // cancelled on its way
		return
	}
	h.publish(c, backlog)
}

// publish sends c to the worker, which holds backlog calls (c included). A call to an idle worker goes at once, in a
// message of its own, unless the pool has other calls pending: then it is likely the start of a burst, and waits in
// the outbox until a caller of the pool waits for a call (uncork), so the burst travels as one batch. When a backlog
// builds, calls wait in the handle's outbox and go together as one batch message, as soon as batchChunk calls wait or
// the worker has answered everything it was sent (flushEarly), and at the latest after batchDelay, so NATS's
// per-message cost is paid once per batch. The last call of a whole run (batchRuns) sends what waits at once, held back
// or not: no call of the pool's burst will join it. Senders combine too: a call published while another goroutine is
// sending to this worker joins the outbox and that goroutine sends it.
func (h *remoteHandle) publish(c *call, backlog int) {
	if hb := h.beat.Load(); c.rc.urgent || hb == nil || !hb.Batches {
		h.publishOne(c)
		return
	}
	h.outMu.Lock()
	if h.flushing {
		h.outbox = append(h.outbox, c)
		if c.rc.endsRun {
			backlog = 0 // the run is complete: nothing will join the batch
		} else if len(h.outbox) < batchChunk {
			h.outMu.Unlock()
			return
		}
		h.outMu.Unlock()
		h.flushEarly(backlog)
		return
	}
	h.flushing = true
	cork := backlog < batchBacklog && h.be.pool.inFlight() > 1
	if (backlog >= batchBacklog || cork) && !c.rc.endsRun {
		h.outbox = append(h.outbox, c)
		h.armed = true
		delay := batchDelay
		if cork {
			delay = corkDelay
		}
		if h.flush == nil {
			h.flush = time.AfterFunc(delay, h.flushArmed)
		} else {
			h.flush.Reset(delay)
		}
		h.outMu.Unlock()
		if cork {
			h.be.cork(h)
		}
		return
	}
	h.outMu.Unlock()
	h.publishOne(c)
	h.drain(maxDrainRounds)
}

const (
	// batchBacklog is the backlog on a worker from which calls wait to travel in batches: a call to a worker that
	// holds no other goes at once, a call behind others waits (as Nagle's algorithm holds back small segments while
	// one is unacknowledged).
	batchBacklog = 2
	// batchDelay is the longest a call behind an unanswered one waits in the outbox for others to join it. A loop
	// submitting calls gathers dozens in that time, and it is short against a round trip under load: had the batch
	// waited until the worker answered everything before it, the worker would idle from its last reply until the
	// batch arrived. At 256 calls in flight on 4 process workers, 50 µs instead of 500 raised throughput by 15–20%
	// (BENCHMARKS.md).
	batchDelay = 50 * time.Microsecond
	// corkDelay is the longest a burst to an idle worker waits for its caller to wait (uncork); only a caller that
	// never waits meets it.
	corkDelay = 500 * time.Microsecond
	// maxDrainRounds bounds how long a caller's goroutine keeps sending others' calls before a goroutine of its
	// own takes over.
	maxDrainRounds = 8
	// batchChunk is how many waiting calls make a batch worth sending before the worker has answered all it holds.
	batchChunk = maxBatch
	// maxKeptBatch is the largest batch body a handle keeps for its next batch.
	maxKeptBatch = 1 << 20
	// maxBatch is the most calls one batch message carries.
	maxBatch = 128
)

// cork holds back h's outbox until a caller of the pool waits for a call (uncork), or its timer fires: calls
// submitted in a burst then travel together even to an idle worker.
func (be *remoteBackend) cork(h *remoteHandle) {
	be.corkMu.Lock()
	if !h.inCork { // a handle flushed by its timer may be corked again before anyone waits
		h.inCork = true
		be.corked = append(be.corked, h)
		be.nCorked.Store(int32(len(be.corked)))
	}
	be.corkMu.Unlock()
}

// uncork sends the outboxes cork held back; a caller about to wait calls it.
func (be *remoteBackend) uncork() {
	if be.nCorked.Load() == 0 {
		return
	}
	var room [8]*remoteHandle
	be.corkMu.Lock()
	hs := append(room[:0], be.corked...)
	for _, h := range be.corked {
		h.inCork = false
	}
	clear(be.corked)
	be.corked = be.corked[:0]
	be.nCorked.Store(0)
	be.corkMu.Unlock()
	for _, h := range hs {
		h.flushEarly(0)
	}
}

// flushArmed sends the outbox when its wait is over.
func (h *remoteHandle) flushArmed() {
	h.outMu.Lock()
	h.armed = false
	h.outMu.Unlock()
	h.drain(-1)
}

// flushEarly sends the outbox before its wait is over when a batch's worth waits in it, or everything the worker
// holds does (the worker has answered all it was sent, and would otherwise idle until the timer fires). left is the
// worker's backlog.
func (h *remoteHandle) flushEarly(left int) {
	h.outMu.Lock()
	if !h.armed || len(h.outbox) < left && len(h.outbox) < batchChunk || !h.flush.Stop() {
		h.outMu.Unlock()
		return // nothing waits, the worker still has work, or the timer is sending the outbox already
	}
	h.armed = false
	h.outMu.Unlock()
	h.drain(maxDrainRounds)
}

// drain sends what piled up in the outbox while this goroutine published, until it is empty.
func (h *remoteHandle) drain(rounds int) {
	for i := 0; ; i++ {
		h.outMu.Lock()
		if len(h.outbox) == 0 {
			h.flushing = false
			h.outMu.Unlock()
			return
		}
		if i == rounds {
			h.outMu.Unlock()
			go h.drain(-1) // still flushing: it is the new sender
			return
		}
		batch := h.outbox
		h.outbox = h.spare[:0]
		h.outMu.Unlock()
		for len(batch) > 0 {
			k := min(len(batch), maxBatch)
			h.publishBatch(batch[:k])
			batch = batch[k:]
		}
		h.outMu.Lock()
		h.spare = batch[:0]
		h.outMu.Unlock()
	}
}

// publishBatch sends calls in one message; one call goes alone.
func (h *remoteHandle) publishBatch(calls []*call) {
	if len(calls) == 1 {
		h.publishOne(calls[0])
		return
	}
	be := h.be
	// The body is written as the calls are registered: an array header sized for all of them, patched below when
	// some were cancelled while they waited in the outbox. An array32 header is what the patch needs room for.
	need := 5
	for _, c := range calls {
		// An entry: the map header, four keys, string headers of up to 5 bytes, and at most 13 digits each of call ID
		// and reply token.
		need += 30 + len(be.mux.id) + 13 + len(c.method) + len(be.mux.prefix) + 13 + len(c.rc.body)
		if c.rc.deadline != 0 {
			need += 8 + len(time.RFC3339Nano)
		}
	}
	buf := h.batchBody
	if cap(buf) < need {
		buf = make([]byte, 0, need)
	}
	body := buf[:5]
	n := 0
	for _, c := range calls {
		if c.settled() {
			continue
		}
		// The ID and reply subject are written from buffers on the stack: strings of their own would cost two
		// allocations per call, and the entry's encoding copies them anyway.
		var idBuf, replyBuf [64]byte
		id := be.mux.appendCallID(idBuf[:0], c.rc.id)
		reply := be.mux.appendReply(replyBuf[:0], be.mux.register(c))
		e := wire.BatchCall{ID: unsafe.String(unsafe.SliceData(id), len(id)), Method: c.method,
			Reply: unsafe.String(unsafe.SliceData(reply), len(reply)), Args: c.rc.body}
		e.Deadline = c.rc.deadlineHeader()
		body = e.AppendMsgpack(body)
		n++
	}
	if n == 0 {
		return
	}
	size := len(body) + 64 // and the message's headers
	fail := func(err error) {
		for _, c := range calls {
			if !c.settled() {
				be.mux.forget(c)
				c.complete(nil, fmt.Errorf("client: send %s to %s: %w", c.method, h.wid, err))
			}
		}
	}
	if int64(size) > be.nc.MaxPayload() {
		// Too big together: send each alone, so one oversized call fails by itself.
		for _, c := range calls {
			if !c.settled() {
				be.mux.forget(c)
				h.publishOne(c)
			}
		}
		return
	}
	var room [5]byte
	hdr := msgp.AppendArrayLen(room[:0], n)
	msg := &h.batchMsg
	if msg.Header == nil {
		msg.Header = nats.Header{wire.HeaderBatch: h.batchN[:]}
	}
	msg.Subject, msg.Data, h.batchN[0] = h.subject, body[5-len(hdr):], strconv.Itoa(n)
	copy(msg.Data, hdr)
	err := be.nc.PublishMsg(msg)
	msg.Data = nil
	if cap(body) <= maxKeptBatch {
		h.batchBody = body[:0]
	}
	if err != nil {
		fail(err)
	}
}

// publishOne sends c in a message of its own.
func (h *remoteHandle) publishOne(c *call) {
	be := h.be
	n := be.mux.register(c)
	om := outMsgs.Get().(*outMsg)
	msg := om.fill(h.subject, string(be.mux.appendReply(nil, n)), c)
	err := be.nc.PublishMsg(msg)
	om.put()
	if err != nil {
		be.mux.forget(c)
		if errors.Is(err, nats.ErrMaxPayload) {
			err = fmt.Errorf("%w: %w", fleet.ErrPayloadTooLarge, err)
		}
		c.complete(nil, fmt.Errorf("client: send %s to %s: %w", c.method, h.wid, err))
	}
}

// outMsg is a reusable call message: PublishMsg encodes the message before it returns, so its struct, header map
// and value slices serve the next call instead of being allocated for each.
type outMsg struct {
	msg                           nats.Msg
	id, method, control, deadline [1]string
}

var outMsgs = sync.Pool{New: func() any {
	om := &outMsg{}
	om.msg.Header = make(nats.Header, 4)
	return om
}}

func (om *outMsg) fill(subject, reply string, c *call) *nats.Msg {
	m := &om.msg
	m.Subject, m.Reply, m.Data = subject, reply, c.rc.body
	om.id[0], om.method[0] = c.callID(), c.method
	m.Header[wire.HeaderCallID] = om.id[:]
	m.Header[wire.HeaderMethod] = om.method[:]
	if c.rc.urgent {
		// An urgent call goes to the control subject, whose goroutine is never busy with a call.
		h := c.rc.rh.Load() // set before the call is published
		m.Subject = h.be.subj.Control(h.wid)
		om.control[0] = wire.ControlCall
		m.Header[wire.HeaderControl] = om.control[:]
	}
	if c.rc.deadline != 0 {
		om.deadline[0] = c.rc.deadlineHeader()
		m.Header[wire.HeaderDeadline] = om.deadline[:]
	}
	return m
}

func (om *outMsg) put() {
	clear(om.msg.Header)
	om.msg.Data = nil
	om.id[0], om.method[0], om.deadline[0] = "", "", ""
	outMsgs.Put(om)
}

// sent is called when a call on this worker completes.
func (h *remoteHandle) sent(c *call) {
	h.mu.Lock()
	delete(h.inflight, c)
	left := len(h.inflight)
	h.mu.Unlock()
	h.be.mux.forget(c)
	if left > 0 {
		h.flushEarly(left)
	}
}

// cancel asks the worker to cancel c.
func (be *remoteBackend) cancel(c *call) {
	if c.rc == nil {
		return
	}
	h := c.rc.rh.Load()
	if h == nil {
		return // not sent yet: send drops it
	}
	msg := &nats.Msg{Subject: be.subj.Control(h.wid), Header: nats.Header{
		wire.HeaderControl: []string{wire.ControlCancel},
		wire.HeaderCallID:  []string{c.callID()},
	}}
	_ = be.nc.PublishMsg(msg)
}

func (h *remoteHandle) stats() fleet.WorkerStats {
	be := h.be
	msg := &nats.Msg{Subject: be.subj.Control(h.wid), Header: nats.Header{wire.HeaderControl: []string{wire.ControlStats}}}
	reply, err := be.nc.RequestMsg(msg, 2*time.Second)
	var ws fleet.WorkerStats
	if err == nil && msgpack.Unmarshal(reply.Data, &ws) == nil {
		return ws
	}
	// An unreachable worker still reports what its last heartbeat said.
	ws = fleet.WorkerStats{ID: h.wid, Index: h.index, Kind: be.pool.name}
	if hb := h.beat.Load(); hb != nil {
		ws.Calls, ws.InFlight = hb.Calls, hb.InFlight
	}
	h.mu.Lock()
	ws.Stopped = h.lost || h.stopping
	h.mu.Unlock()
	return ws
}

// stop stops the worker: drained by a control message, or cancelled first when ctx has ended. Standing workers
// joined with Attach are left running.
func (h *remoteHandle) stop(ctx context.Context) error {
	h.mu.Lock()
	h.stopping = true
	var calls []*call
	abort := ctx.Err() != nil
	if abort {
		for c := range h.inflight {
			calls = append(calls, c)
		}
	}
	h.mu.Unlock()
	for _, c := range calls {
		c.cancel(fmt.Errorf("%w before the call finished: %w", ErrPoolStopped, ctx.Err()))
	}
	h.be.dropHandle(h)
	if h.standing {
		return nil
	}
	hdr := nats.Header{wire.HeaderControl: []string{wire.ControlStop}}
	if abort {
		hdr[wire.HeaderAbort] = []string{"1"}
	}
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok && !abort {
		timeout = max(time.Until(dl), time.Second)
	}
	var err error
	if h.be.nc.IsConnected() {
		_, err = h.be.nc.RequestMsg(&nats.Msg{Subject: h.be.subj.Control(h.wid), Header: hdr}, timeout)
	} else {
		// Nobody can be told; a child learns from its stdin closing.
		err = nats.ErrConnectionClosed
	}
	if h.proc != nil {
		return h.proc.stop(timeout)
	}
	if err != nil && !errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("client: stop worker %s: %w", h.wid, err)
	}
	return nil
}

func (be *remoteBackend) close(ctx context.Context) error {
	be.repl.Wait() // replacements end quickly: the pool's context is cancelled
	be.shutdown()
	return nil
}

func (be *remoteBackend) shutdown() {
	select {
	case <-be.quit:
		return
	default:
		close(be.quit)
	}
	if be.hbSub != nil {
		_ = be.hbSub.Unsubscribe()
		<-be.monDone
	}
	if be.mux != nil {
		releaseMux(be.mux)
	}
	if be.release != nil {
		be.release()
	}
	if be.spawning {
		releaseSpawner()
	}
}

// slotOf finds h's balancer slot; -1 when it has none. The caller holds p.mu.
func (p *Pool) slotOf(h handle) int {
	for i, s := range p.slots {
		if s == h {
			return i
		}
	}
	return -1
}

// failQueuedIfNoWorkers fails the waiting calls of a pool that has lost its last worker, so nothing waits forever.
func (p *Pool) failQueuedIfNoWorkers() {
	p.mu.Lock()
	if p.bal.Len() > 0 || p.opts.OnDemand {
		p.mu.Unlock()
		return
	}
	var queued []*call
	for p.queue.len() > 0 {
		queued = append(queued, p.queue.pop())
	}
	p.mu.Unlock()
	for _, c := range queued {
		c.complete(nil, fmt.Errorf("%w: %s", ErrNoWorkers, p.name))
	}
}

// remoteReply completes a remote call, or, when its retry policy says so, sends it again to the same worker: retries
// of remote calls are driven from here because predicates cannot travel to another process. The call keeps its
// slot meanwhile, so the pool's statistics count it once.
func (c *call) remoteReply(cd codec.Codec, raw []byte, err error) {
	rp := c.Retry
	if rp == nil || c.rc.rh.Load() == nil {
		c.completeRemote(cd, raw, err)
		return
	}
	rc := c.rc
	rc.attempt++
	if err == nil && rp.Until != nil {
		var v any
		if derr := cd.Unmarshal(raw, &v); derr != nil {
			err = derr
		} else if uerr := rp.Until(v); uerr != nil {
			if rc.verr == nil {
				rc.verr = &fleet.ValidationError{Method: c.method}
			}
			rc.verr.Results = append(rc.verr.Results, v)
			rc.verr.Errors = append(rc.verr.Errors, uerr)
			err = rc.verr
		}
	}
	if err == nil || int(rc.attempt) >= rp.Attempts || (err != rc.verr && rp.Retry != nil && !rp.Retry(err)) {
		c.completeRemote(cd, raw, err)
		return
	}
	d := time.Duration(0)
	if rp.Wait != nil {
		d = rp.Wait(int(rc.attempt))
	}
	sleep := rp.Sleep
	go func() {
		var serr error
		if sleep != nil {
			serr = sleep(c.pool.ctx, d)
		} else {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-c.pool.ctx.Done():
				serr = c.pool.ctx.Err()
			}
			t.Stop()
		}
		if serr != nil {
			c.complete(nil, err)
			return
		}
		if !c.settled() {
			rc.rh.Load().publish(c, 0)
		}
	}()
}
