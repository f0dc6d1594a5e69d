package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/limits"
)

// DefaultHeartbeatInterval is the heartbeat interval of a served worker whose WorkerSpec leaves it zero.
const DefaultHeartbeatInterval = time.Second

// flushTimeout bounds the wait for the server to confirm a new worker's or agent's subscriptions.
const flushTimeout = 5 * time.Second

// DefaultDrainTimeout bounds how long a ControlStop lets the calls a worker holds finish.
const DefaultDrainTimeout = time.Minute

// inlineBudget is the longest typical run of a method whose calls may run inline, in the goroutine that receives
// calls, instead of being handed to the worker's goroutine. While a call runs inline the calls behind it wait in
// nats.go's buffer, where a ControlCancel is applied only when they come out and heartbeats do not count them, so
// only methods that run this briefly run inline; a longer method does not notice the handoff's few microseconds.
const inlineBudget = 200 * time.Microsecond

// pace is what a worker learned of how long one method runs: a moving average of its run times.
type pace struct {
	avg atomic.Int64 // nanoseconds; -1 before the first run
}

func newPace() *pace {
	p := &pace{}
	p.avg.Store(-1)
	return p
}

// short reports whether the method's calls may run inline: it ran, and typically within inlineBudget. A method not
// yet run is not short, so a first call that runs long never blocks the calls behind it.
func (p *pace) short() bool {
	a := p.avg.Load()
	return a >= 0 && a <= int64(inlineBudget)
}

// observe adds a run of d. The average weighs the latest run 1/8: an odd slow run (a GC pause) does not send a
// short method back to the worker's goroutine, while one long call is enough to (a call of a minute lifts the
// average to over 7s).
func (p *pace) observe(d time.Duration) {
	a := p.avg.Load()
	if a < 0 {
		a = int64(d)
	} else {
		a += (int64(d) - a) / 8
	}
	p.avg.Store(a) // runs of one method seldom overlap; a lost update only delays what the average learns
}

// ServeOptions configure Serve. Zero values mean the defaults noted.
type ServeOptions struct {
	// Agent is the ID of the agent hosting the worker, reported in its heartbeats; default "" (hosted by no agent).
	Agent string
	// MaxCallBytes is the largest call body the worker accepts; a larger one gets an error reply matching
	// ErrPayloadTooLarge. Default: the connection's maximum payload.
	MaxCallBytes int
	// DrainTimeout bounds how long a ControlStop without a Fleet-Deadline header lets the worker's calls finish
	// before they are cancelled. Default DefaultDrainTimeout.
	DrainTimeout time.Duration
	// Logger receives what cannot be replied to (failed publishes, calls without a reply subject that failed).
	// Default slog.Default().
	Logger *slog.Logger
	// OnCall, when set, is told of every call the worker answers, just before the reply is published, on the
	// goroutine that replies (for an actor worker, the one running its calls): it must be quick and must not block.
	// Default nil.
	OnCall func(CallRecord)

	// onStop runs once the worker has stopped; the agent frees its capacity there.
	onStop func(*Hosted)
}

// Hosted is a worker served over NATS: it receives calls on its subject, answers control messages and publishes
// heartbeats until it is stopped, by Stop or by a ControlStop message.
type Hosted struct {
	nc       *nats.Conn
	spec     WorkerSpec
	subjects broker.Subjects
	w        *Worker
	set      *limits.Set
	agent    string
	maxCall  int
	drain    time.Duration
	log      *slog.Logger
	onStop   func(*Hosted)

	callSub, ctlSub, discSub *nats.Subscription
	svc                      service // service discovery and per-method counters (micro.go)

	mu      sync.Mutex
	calls   map[string]*call // queued or running in the worker's goroutines, by call ID, so ControlCancel finds them
	running *call            // the call running inline in the call subscription's goroutine
	// tombs are cancels of calls still in nats.go's buffer behind an inline call, by call ID, each with the count of
	// delivered messages after which the call can no longer come (see tombLocked).
	tombs   map[string]int64
	refusal atomic.Pointer[refusal] // set once the worker aborts: calls still buffered fail unrun

	pace map[*Method]*pace // read-only after Serve
	// The call batch being served, the subscription goroutine's alone, and the replies gathered meanwhile (batch.go).
	batch   []BatchCall
	replies replyBatch

	stopping atomic.Bool
	stopErr  error
	done     chan struct{}
	hbStop   chan struct{}
	hbDone   chan struct{}
}

// Serve builds a worker of spec.Kind from spec.Args and serves it on nc: calls arrive on the worker's subject
// ({prefix}.w.{id}), control messages on {prefix}.w.{id}.ctl, and a Heartbeat goes to {prefix}.hb.{kind}.{id} at
// once and then every spec.HeartbeatInterval. A standing worker (spec.Pool == "") also answers kind discovery
// requests with its heartbeat. When spec.Limits is set, the worker's methods see a limit set shared through
// JetStream KV under spec.LimitSet.
//
// The worker serves until Stop or a ControlStop message; Done is closed then.
func Serve(nc *nats.Conn, spec WorkerSpec, opts ServeOptions) (*Hosted, error) {
	if nc == nil {
		return nil, errors.New("fleet: serve: nil connection")
	}
	k, err := Lookup(spec.Kind)
	if err != nil {
		return nil, fmt.Errorf("fleet: serve: %w", err)
	}
	if spec.ID == "" {
		spec.ID = nuid.Next()
	}
	if !broker.ValidToken(spec.ID) {
		return nil, fmt.Errorf("fleet: serve: worker ID %q must contain no '.', '*', '>' or spaces", spec.ID)
	}
	if spec.Prefix == "" {
		spec.Prefix = broker.DefaultPrefix
	}
	if spec.HeartbeatInterval <= 0 {
		spec.HeartbeatInterval = DefaultHeartbeatInterval
	}
	args, err := decodeConstructorArgs(k, spec.Args)
	if err != nil {
		return nil, fmt.Errorf("fleet: serve: %w", err)
	}
	h := &Hosted{nc: nc, spec: spec, subjects: broker.Subjects{Prefix: spec.Prefix}, agent: opts.Agent,
		maxCall: opts.MaxCallBytes, drain: opts.DrainTimeout, log: opts.Logger, onStop: opts.onStop,
		calls: make(map[string]*call), done: make(chan struct{}), hbStop: make(chan struct{}),
		hbDone: make(chan struct{})}
	if h.maxCall <= 0 {
		h.maxCall = int(nc.MaxPayload())
	}
	if h.drain <= 0 {
		h.drain = DefaultDrainTimeout
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	wopts := WorkerOptions{ID: spec.ID, Index: spec.Index, Concurrent: spec.Concurrent}
	if len(spec.Limits) > 0 {
		ls, err := limits.UnmarshalLimits(spec.Limits)
		if err != nil {
			return nil, fmt.Errorf("fleet: serve: worker %s: %w", spec.ID, err)
		}
		h.set, err = limits.NewSet(limits.SetOptions{Name: spec.LimitSet, Conn: nc, Bucket: spec.LimitBucket,
			Logger: h.log}, ls...)
		if err != nil {
			return nil, fmt.Errorf("fleet: serve: worker %s: %w", spec.ID, err)
		}
		wopts.Limits = h.set
	}
	h.w, err = k.StartValues(wopts, args)
	if err != nil {
		h.closeSet()
		return nil, fmt.Errorf("fleet: serve: %w", err)
	}
	h.svc.init(k, opts.OnCall)
	h.pace = make(map[*Method]*pace, len(k.methods))
	for _, m := range k.methods {
		h.pace[m] = newPace()
	}
	if err := h.subscribe(); err != nil {
		h.unsubscribe()
		_ = h.w.Stop(context.Background()) // nothing was submitted: returns at once
		h.closeSet()
		return nil, fmt.Errorf("fleet: serve: worker %s: %w", spec.ID, err)
	}
	// Once Serve returns, the server knows the subscriptions, so a call from any connection finds the worker. A
	// connection that is reconnecting fails the flush; its subscriptions are renewed when it is back.
	_ = nc.FlushTimeout(flushTimeout)
	h.beat()
	go h.heartbeats()
	return h, nil
}

func (h *Hosted) subscribe() error {
	var err error
	if h.callSub, err = h.nc.Subscribe(h.subjects.Worker(h.spec.ID), h.onCall); err != nil {
		return err
	}
	// Pipelined calls pile up here while the worker runs earlier ones; a limit would drop them as a slow
	// consumer, and the caller would wait for a reply that never comes. Pools bound what they send instead.
	if err = h.callSub.SetPendingLimits(-1, -1); err != nil {
		return err
	}
	if h.ctlSub, err = h.nc.Subscribe(h.subjects.Control(h.spec.ID), h.onControl); err != nil {
		return err
	}
	if h.spec.Pool == "" {
		if h.discSub, err = h.nc.Subscribe(h.subjects.KindDiscover(h.spec.Kind), h.onDiscover); err != nil {
			return err
		}
	}
	return h.subscribeService()
}

func (h *Hosted) unsubscribe() {
	for _, s := range []*nats.Subscription{h.callSub, h.ctlSub, h.discSub} {
		if s != nil {
			_ = s.Unsubscribe()
		}
	}
	h.unsubscribeService()
}

func (h *Hosted) closeSet() {
	if h.set != nil {
		if err := h.set.Close(); err != nil {
			h.log.Warn("fleet: close limit set", "worker", h.spec.ID, "err", err)
		}
	}
}

// decodeConstructorArgs decodes a spec's constructor arguments into the constructor's parameter types. A variadic
// constructor's arguments may come packed (the variadic ones as one array, the last element) or flat (one element
// each), which is what encoding the arguments a Go caller passes to a variadic function produces.
func decodeConstructorArgs(k *Kind, data []byte) ([]reflect.Value, error) {
	params := k.ConstructorParams()
	vals, err := codec.Msgpack.DecodeArgs(data, params)
	if err == nil || !k.ctorVar {
		if err != nil {
			return nil, &MethodError{Kind: k.name, Method: "constructor", Err: ErrBadArguments,
				Detail: err.Error()}
		}
		return vals, nil
	}
	var raw []msgpack.RawMessage
	if len(data) > 0 {
		if uerr := codec.Msgpack.Unmarshal(data, &raw); uerr != nil {
			return nil, &MethodError{Kind: k.name, Method: "constructor", Err: ErrBadArguments, Detail: err.Error()}
		}
	}
	fixed := len(params) - 1
	if len(raw) < fixed {
		return nil, &MethodError{Kind: k.name, Method: "constructor", Err: ErrBadArguments, Detail: err.Error()}
	}
	flat := make([]reflect.Type, len(raw))
	copy(flat, params[:fixed])
	for i := fixed; i < len(raw); i++ {
		flat[i] = params[fixed].Elem()
	}
	fvals, ferr := codec.Msgpack.DecodeArgs(data, flat)
	if ferr != nil {
		return nil, &MethodError{Kind: k.name, Method: "constructor", Err: ErrBadArguments, Detail: ferr.Error()}
	}
	rest := reflect.MakeSlice(params[fixed], len(raw)-fixed, len(raw)-fixed)
	for i := fixed; i < len(raw); i++ {
		rest.Index(i - fixed).Set(fvals[i])
	}
	return append(fvals[:fixed:fixed], rest), nil
}

// ID is the worker's ID.
func (h *Hosted) ID() string { return h.spec.ID }

// Spec is the spec the worker was built from, with its defaults filled in (ID, Prefix, HeartbeatInterval).
func (h *Hosted) Spec() WorkerSpec { return h.spec }

// Worker is the worker being served.
func (h *Hosted) Worker() *Worker { return h.w }

// Done is closed once the worker has stopped, by Stop or by a ControlStop message.
func (h *Hosted) Done() <-chan struct{} { return h.done }

// Heartbeat is what the worker's next heartbeat would say.
func (h *Hosted) Heartbeat() Heartbeat {
	st := h.w.Stats()
	return Heartbeat{WorkerID: h.spec.ID, Kind: h.spec.Kind, Agent: h.agent, Pool: h.spec.Pool, Index: h.spec.Index,
		InFlight: st.InFlight, Calls: st.Calls, Interval: h.spec.HeartbeatInterval, Stopping: h.stopping.Load(),
		Batches: true}
}

// Stop stops serving: the worker leaves its subject (calls already received still run), the calls it holds finish,
// then heartbeats stop and its limit set is closed. When ctx ends first, the remaining calls are cancelled and fail
// with an error wrapping ctx's error, which Stop returns. Stop is idempotent; a second call waits for the first.
func (h *Hosted) Stop(ctx context.Context) error { return h.stop(ctx, nil) }

// stop runs the stop sequence once; stopped (optional) sees the outcome, before Done is closed when this call
// stops the worker, so a ControlStop is answered before a process that waits for Done exits.
func (h *Hosted) stop(ctx context.Context, stopped func(error)) error {
	if !h.stopping.CompareAndSwap(false, true) {
		var err error
		select {
		case <-h.done:
			err = h.stopErr
		case <-ctx.Done():
			err = ctx.Err()
		}
		if stopped != nil {
			stopped(err)
		}
		return err
	}
	// Dispatchers that see this stop sending calls before the subscription is gone.
	h.beat()
	if h.discSub != nil {
		_ = h.discSub.Unsubscribe()
	}
	// Draining, not unsubscribing: calls the client library holds for this subscription are still delivered and
	// answered, so no caller waits for a reply that never comes. The drain ends once the last of them has been
	// taken by the worker or has run inline.
	closed := h.callSub.StatusChanged(nats.SubscriptionClosed)
	if err := h.callSub.Drain(); err == nil {
		select {
		case <-closed:
		case <-ctx.Done():
			// The calls still buffered fail unrun as they come out, as the worker's queued calls do below; the
			// drain goes on without us. Behind an inline method that ignores its context they come out when it
			// returns.
			h.refusal.Store(&refusal{err: h.w.stoppedError(ctx.Err())})
		}
	} else {
		_ = h.callSub.Unsubscribe()
	}
	// The control subscription stays until the worker is drained, so its calls can still be cancelled.
	err := h.w.Stop(ctx)
	close(h.hbStop)
	<-h.hbDone
	_ = h.ctlSub.Unsubscribe()
	h.unsubscribeService()
	h.closeSet()
	h.stopErr = err
	if stopped != nil {
		stopped(err)
	}
	close(h.done)
	if h.onStop != nil {
		h.onStop(h)
	}
	return err
}

// heartbeats publishes the worker's heartbeat every interval until hbStop is closed.
func (h *Hosted) heartbeats() {
	defer close(h.hbDone)
	t := time.NewTicker(h.spec.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			h.beat()
		case <-h.hbStop:
			return
		}
	}
}

func (h *Hosted) beat() {
	b, err := codec.Msgpack.Marshal(h.Heartbeat())
	if err == nil {
		err = h.nc.Publish(h.subjects.Heartbeat(h.spec.Kind, h.spec.ID), b)
	}
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		h.log.Warn("fleet: publish heartbeat", "worker", h.spec.ID, "err", err)
	}
}

func (h *Hosted) onDiscover(m *nats.Msg) {
	if m.Reply == "" || h.stopping.Load() {
		return
	}
	c, err := codec.ForContentType(m.Header.Get(codec.HeaderContentType))
	if err != nil {
		h.respond(m, codec.JSON, EncodeError(fmt.Errorf("%w: %w", ErrMalformed, err)), codec.StatusError)
		return
	}
	h.respond(m, c, h.Heartbeat(), codec.StatusOK)
}

func (h *Hosted) onControl(m *nats.Msg) {
	op := m.Header.Get(HeaderControl)
	if op == ControlCall {
		h.onUrgentCall(m) // answered like a call, with the call's ID and codec
		return
	}
	c, err := codec.ForContentType(m.Header.Get(codec.HeaderContentType))
	if err != nil {
		h.respond(m, codec.JSON, EncodeError(fmt.Errorf("%w: %w", ErrMalformed, err)), codec.StatusError)
		return
	}
	switch op {
	case ControlCancel:
		h.cancelCall(m.Header.Get(codec.HeaderCallID))
	case ControlStop:
		ctx, cancel := context.WithTimeout(context.Background(), h.drain)
		if dl, err := codec.ParseDeadline(m.Header.Get(codec.HeaderDeadline)); err == nil && !dl.IsZero() {
			cancel()
			ctx, cancel = context.WithDeadline(context.Background(), dl)
		}
		if m.Header.Get(HeaderAbort) == "1" {
			h.cancelAll()
		}
		// Stopping waits for the calls to drain; the subscription goroutine must go on serving cancels meanwhile.
		go func() {
			defer cancel()
			_ = h.stop(ctx, func(err error) {
				if err != nil {
					h.respond(m, c, EncodeError(err), codec.StatusError)
					return
				}
				h.respond(m, c, nil, codec.StatusOK)
			})
		}()
	case ControlStats:
		h.respond(m, c, h.w.Stats(), codec.StatusOK)
	case ControlPing:
		h.respond(m, c, nil, codec.StatusOK)
	default:
		h.respond(m, c, EncodeError(fmt.Errorf("%w: unknown %s %q (want %s, %s, %s, %s or %s)", ErrMalformed,
			HeaderControl, op, ControlCall, ControlCancel, ControlStop, ControlStats, ControlPing)), codec.StatusError)
	}
}

// respond answers a control or discovery request; v nil means an empty body.
func (h *Hosted) respond(m *nats.Msg, c codec.Codec, v any, status string) {
	if m.Reply == "" {
		return
	}
	r := nats.NewMsg(m.Reply)
	r.Header.Set(codec.HeaderStatus, status)
	r.Header.Set(codec.HeaderContentType, c.ContentType())
	if v != nil {
		b, err := c.Marshal(v)
		if err != nil {
			h.log.Warn("fleet: encode reply", "worker", h.spec.ID, "err", err)
			return
		}
		r.Data = b
	}
	if err := h.nc.PublishMsg(r); err != nil {
		h.log.Warn("fleet: reply", "worker", h.spec.ID, "err", err)
	}
}

// cancelCall aborts the call id wherever it is: running inline, queued or running in the worker, or still in nats.go's
// buffer behind a call running inline, where it is marked to be failed unrun when it comes out.
func (h *Hosted) cancelCall(id string) {
	h.mu.Lock()
	c := h.calls[id]
	if c == nil && h.running != nil && h.running.CallID == id {
		c = h.running
	}
	if c == nil {
		h.tombLocked(id)
	}
	h.mu.Unlock()
	if c != nil {
		c.abort()
	}
}

// maxTombs bounds the cancels of buffered calls remembered at once; a flood of cancels for unknown IDs cannot grow
// the worker's memory beyond it.
const maxTombs = 4096

// tombLocked remembers a cancel of a call the worker has not received, if the call subscription holds messages it
// may be among; the mark lasts until the subscription has delivered them all.
func (h *Hosted) tombLocked(id string) {
	pending, _, err := h.callSub.Pending()
	if err != nil || pending == 0 {
		return // the call was answered already (the cancel came late) or never sent
	}
	delivered, err := h.callSub.Delivered()
	if err != nil {
		return
	}
	h.pruneTombsLocked(delivered)
	if len(h.tombs) >= maxTombs {
		h.log.Warn("fleet: too many cancels of calls not yet received; dropping one", "worker", h.spec.ID,
			"call", id)
		return
	}
	if h.tombs == nil {
		h.tombs = make(map[string]int64)
	}
	// pending counts the message in the callback too, so the buffered ones are among the next pending deliveries.
	h.tombs[id] = delivered + int64(pending)
}

// takeTombLocked reports whether the call id, just delivered, was cancelled while it waited in the buffer.
func (h *Hosted) takeTombLocked(id string) bool {
	delivered, err := h.callSub.Delivered()
	if err == nil {
		h.pruneTombsLocked(delivered - 1) // this call's own mark has not expired yet
	}
	if _, ok := h.tombs[id]; ok {
		delete(h.tombs, id)
		return true
	}
	return false
}

func (h *Hosted) pruneTombsLocked(delivered int64) {
	for id, last := range h.tombs {
		if last <= delivered {
			delete(h.tombs, id)
		}
	}
}

// cancelAll aborts every call the worker holds, and makes the calls still buffered fail unrun when they come out.
func (h *Hosted) cancelAll() {
	h.mu.Lock()
	h.refusal.Store(&refusal{cancel: true})
	cs := make([]*call, 0, len(h.calls)+1)
	for _, c := range h.calls {
		cs = append(cs, c)
	}
	if h.running != nil {
		cs = append(cs, h.running)
	}
	h.mu.Unlock()
	for _, c := range cs {
		c.abort()
	}
}

// refusal says why calls that come out of the subscription's buffer from now on fail unrun: the worker is aborting.
type refusal struct {
	cancel bool  // a ControlStop with Fleet-Abort: each call is cancelled
	err    error // otherwise every call fails with err: the stop's deadline passed
}

func (r *refusal) errFor(id string) error {
	if r.cancel {
		return cancelledError(id)
	}
	return r.err
}

func cancelledError(id string) error {
	return fmt.Errorf("fleet: call %s cancelled: %w", id, context.Canceled)
}

// call is one call received over NATS: the Task it becomes and where its reply goes, in one allocation.
type call struct {
	Task
	h       *Hosted
	inbox   string // reply subject; "" drops the outcome
	trace   string
	codec   codec.Codec
	start   time.Time // arrival at the worker
	pace    *pace     // its method's
	batched bool      // it came in a call batch
	arg     [1]any    // Task.Values of a method called directly
	// took is the time from arrival to the end of its run, once it ran: its reply records it without reading the
	// clock again. Atomic, since a cancel may answer the call while it runs.
	took atomic.Int64
}

// Reply sends the call's outcome to its caller.
func (c *call) Reply(_ *Task, res any, err error) {
	h := c.h
	h.mu.Lock()
	if h.running == c {
		h.running = nil
	} else if h.calls[c.CallID] == c {
		delete(h.calls, c.CallID)
	}
	h.mu.Unlock()
	if c.Cancel != nil {
		c.Cancel() // releases the deadline's timer
	}
	took := time.Duration(c.took.Load())
	if took == 0 {
		took = time.Since(c.start)
	}
	h.record(c.Method, took, err)
	if c.inbox == "" {
		if err != nil {
			h.log.Debug("fleet: call without reply subject failed", "worker", h.spec.ID, "method",
				c.Method.name, "err", err)
		}
		return
	}
	h.answer(c.inbox, c.CallID, c.trace, c.codec, c.batched, res, err)
}

func (c *call) ran(start, end time.Time) {
	c.pace.observe(end.Sub(start))
	c.took.Store(int64(end.Sub(c.start)))
}

// abort cancels the call: see fail.
func (c *call) abort() { c.fail(cancelledError(c.CallID)) }

// fail cancels the call's context, if it has one, and answers the caller with err at once: a queued call would
// otherwise wait for its turn to be dropped, and a running method may take a moment to notice (one without a context
// runs to its end; its result is dropped). The worker's own reply comes later and is ignored (a task is replied to
// once); a call not yet started is skipped.
func (c *call) fail(err error) {
	// Reply before cancelling: a method that returns ctx.Err() at once must not decide the call's error.
	c.Task.reply(nil, err)
	if c.Cancel != nil {
		c.Cancel()
	}
}

func (c *call) progress(p codec.Progress) {
	o := getOutMsg(c.inbox, c.CallID, c.trace, c.codec, codec.StatusProgress)
	defer o.put()
	var err error
	if o.msg.Data, err = c.codec.AppendMarshal(o.buf[:0], p); err == nil {
		o.buf = o.msg.Data
		err = c.h.nc.PublishMsg(&o.msg)
	}
	if err != nil {
		c.h.log.Debug("fleet: publish progress", "worker", c.h.spec.ID, "call", c.CallID, "err", err)
	}
}

// callIn is what a call says: a call message's headers and body, or an entry of a call batch.
type callIn struct {
	id, method, contentType, deadline, trace string
	reply                                    string // the reply subject; "" drops the outcome
	body                                     []byte
	urgent                                   bool
	batch                                    bool // the message is a call batch (HeaderBatch)
	batched                                  bool // the call came in a batch: its reply may go in a reply batch
}

// readCall reads a call message, its headers in one pass over the header map.
func readCall(m *nats.Msg) callIn {
	in := callIn{reply: m.Reply, body: m.Data}
	for k, v := range m.Header {
		if len(v) == 0 {
			continue
		}
		switch k {
		case codec.HeaderCallID:
			in.id = v[0]
		case codec.HeaderMethod:
			in.method = v[0]
		case codec.HeaderContentType:
			in.contentType = v[0]
		case codec.HeaderDeadline:
			in.deadline = v[0]
		case codec.HeaderTraceparent:
			in.trace = v[0]
		case HeaderUrgent:
			in.urgent = v[0] != ""
		case HeaderBatch:
			in.batch = true
		}
	}
	return in
}

// onCall serves the call subject: one call, or a batch of them (onBatch).
func (h *Hosted) onCall(m *nats.Msg) {
	start := time.Now()
	in := readCall(m)
	if in.batch {
		h.onBatch(m, start)
		return
	}
	if c := h.accept(&in, start); c != nil {
		h.dispatch(c, in.urgent)
	}
}

// dispatch runs a call received on the call subject. It runs inline, in the subscription's goroutine, when the worker
// is idle and its method typically runs within inlineBudget: the calls behind it wait in nats.go's buffer meanwhile,
// in order. Otherwise it is handed to the worker's goroutine. Urgent calls run at once in their own goroutine, but
// only once this goroutine reaches them; the control subject takes them without that wait (ControlCall).
func (h *Hosted) dispatch(c *call, urgent bool) {
	switch {
	case urgent:
		h.admit(c, false, true)
		h.w.SubmitUrgent(&c.Task)
	case c.pace.short():
		h.admit(c, true, true)
		if h.w.RunIfIdle(&c.Task) {
			return
		}
		// The worker is busy: queue the call behind its work, where ControlCancel finds it by ID.
		h.mu.Lock()
		if h.running == c {
			h.running = nil
		}
		if !c.replied.Load() {
			h.calls[c.CallID] = c
		}
		h.mu.Unlock()
		h.w.Submit(&c.Task)
	default:
		h.admit(c, false, true)
		h.w.Submit(&c.Task)
	}
}

// onUrgentCall serves a ControlCall: a call that runs at once, beside the worker's running call, even while a call
// runs inline and blocks the call subject.
func (h *Hosted) onUrgentCall(m *nats.Msg) {
	start := time.Now()
	in := readCall(m)
	c := h.accept(&in, start)
	if c == nil {
		return
	}
	h.admit(c, false, false)
	h.w.SubmitUrgent(&c.Task)
}

// admit registers c where ControlCancel finds it (as the inline call, or by ID), then fails it unrun if it was
// cancelled while it waited in the call subscription's buffer (fromCallSub) or if the worker is aborting; the worker
// still takes it, so its counters see it, and skips it.
func (h *Hosted) admit(c *call, inline, fromCallSub bool) {
	h.mu.Lock()
	cancelled := fromCallSub && len(h.tombs) > 0 && h.takeTombLocked(c.CallID)
	if inline {
		h.running = c
	} else {
		h.calls[c.CallID] = c
	}
	h.mu.Unlock()
	switch r := h.refusal.Load(); {
	case cancelled:
		c.abort()
	case r != nil:
		c.fail(r.errFor(c.CallID))
	}
}

// accept reads a call into a call record, or answers it with an error and returns nil.
func (h *Hosted) accept(in *callIn, start time.Time) *call {
	if in.id == "" {
		in.id = nuid.Next()
	}
	cd, err := codec.ForContentType(in.contentType)
	if err != nil {
		// The caller's codec is unknown; JSON is the one a person reading the reply can decode.
		h.reject(in, start, nil, codec.JSON, fmt.Errorf("%w: %w", ErrMalformed, err))
		return nil
	}
	if len(in.body) > h.maxCall {
		h.reject(in, start, nil, cd, fmt.Errorf("%w: call body of %d bytes exceeds the worker's limit of %d",
			ErrPayloadTooLarge, len(in.body), h.maxCall))
		return nil
	}
	if in.method == "" {
		h.reject(in, start, nil, cd, fmt.Errorf("%w: missing %s header", ErrMalformed, codec.HeaderMethod))
		return nil
	}
	deadline, err := codec.ParseDeadline(in.deadline)
	if err != nil {
		h.reject(in, start, nil, cd, fmt.Errorf("%w: %w", ErrMalformed, err))
		return nil
	}
	method, err := h.w.kind.Method(in.method)
	if err != nil {
		h.reject(in, start, nil, cd, err)
		return nil
	}
	c := &call{h: h, inbox: in.reply, trace: in.trace, codec: cd, start: start, pace: h.pace[method],
		batched: in.batched}
	c.Method, c.CallID, c.Task.Reply = method, in.id, c
	if a, ok := directArg(method, cd, in.body); ok {
		c.arg[0] = a
		c.Values = c.arg[:]
	} else if c.Args, err = cd.DecodeArgs(in.body, method.params); err != nil {
		if errors.Is(err, codec.ErrMalformed) {
			err = &MethodError{Kind: h.w.kind.name, Method: in.method, Err: ErrMalformed, Detail: err.Error()}
		} else {
			err = method.BadArguments(err)
		}
		h.reject(in, start, method, cd, err)
		return nil
	}
	// A method without a context cannot see a cancel or a deadline while it runs; the worker skips such a call if it
	// was answered (cancelled) before it started, and checks a deadline before starting it, which needs a context.
	switch {
	case !deadline.IsZero():
		c.Ctx, c.Task.Cancel = context.WithDeadline(context.Background(), deadline)
	case method.hasCtx:
		c.Ctx, c.Task.Cancel = context.WithCancel(context.Background())
	}
	// Only a method that takes a context can start a progress bar.
	if in.reply != "" && method.hasCtx {
		c.Progress = c.progress
	}
	return c
}

// reject answers a call that could not be submitted; method is nil when the call named none of the kind's.
func (h *Hosted) reject(in *callIn, start time.Time, method *Method, cd codec.Codec, err error) {
	h.record(method, time.Since(start), err)
	if in.reply == "" {
		h.log.Debug("fleet: bad call without reply subject", "worker", h.spec.ID, "err", err)
		return
	}
	h.answer(in.reply, in.id, in.trace, cd, in.batched, nil, err)
}

// answer sends a call's outcome: into the reply batch being gathered, when the call came in a batch and one is open,
// or in a message of its own.
func (h *Hosted) answer(subject, id, trace string, cd codec.Codec, batched bool, res any, err error) {
	if batched && h.replies.add(subject, res, err) {
		return
	}
	h.reply(subject, id, trace, cd, res, err)
}

// reply publishes a call's result or error. The message, its headers and its body buffer are pooled.
func (h *Hosted) reply(subject, id, trace string, cd codec.Codec, res any, err error) {
	o := getOutMsg(subject, id, trace, cd, codec.StatusOK)
	defer o.put()
	if err == nil {
		var eerr error
		if o.msg.Data, eerr = cd.AppendMarshal(o.buf[:0], res); eerr == nil {
			o.buf = o.msg.Data
			if err = h.nc.PublishMsg(&o.msg); err == nil {
				return
			}
			if !errors.Is(err, nats.ErrMaxPayload) {
				h.log.Warn("fleet: reply", "worker", h.spec.ID, "call", id, "err", err)
				return
			}
			err = fmt.Errorf("%w: result of %d bytes exceeds the connection's maximum payload of %d",
				ErrPayloadTooLarge, len(o.msg.Data), h.nc.MaxPayload())
		} else {
			err = eerr
		}
	}
	o.status[0] = codec.StatusError
	var eerr error
	if o.msg.Data, eerr = cd.AppendMarshal(o.buf[:0], EncodeError(err)); eerr != nil {
		h.log.Warn("fleet: encode error reply", "worker", h.spec.ID, "call", id, "err", eerr)
		return
	}
	o.buf = o.msg.Data
	if perr := h.nc.PublishMsg(&o.msg); perr != nil {
		h.log.Warn("fleet: reply", "worker", h.spec.ID, "call", id, "err", perr)
	}
}

// outMsg is a reusable reply: nats.Msg copies what it publishes, so its header values and body buffer serve the
// next reply. Each header value is a one-element array the header map points into, so setting it allocates
// nothing.
type outMsg struct {
	msg                       nats.Msg
	id, status, ctype, traceV [1]string
	buf                       []byte
}

// maxPooledBuf keeps an occasional huge result from pinning its buffer in the pool.
const maxPooledBuf = 64 << 10

var outMsgs = sync.Pool{New: func() any {
	o := &outMsg{buf: make([]byte, 0, 256)}
	o.msg.Header = make(nats.Header, 4)
	o.msg.Header[codec.HeaderCallID] = o.id[:]
	o.msg.Header[codec.HeaderStatus] = o.status[:]
	o.msg.Header[codec.HeaderContentType] = o.ctype[:]
	return o
}}

func getOutMsg(subject, id, trace string, cd codec.Codec, status string) *outMsg {
	o := outMsgs.Get().(*outMsg)
	o.msg.Subject = subject
	o.id[0], o.status[0], o.ctype[0] = id, status, cd.ContentType()
	if trace != "" {
		o.traceV[0] = trace
		o.msg.Header[codec.HeaderTraceparent] = o.traceV[:]
	}
	return o
}

func (o *outMsg) put() {
	if o.traceV[0] != "" {
		delete(o.msg.Header, codec.HeaderTraceparent)
		o.traceV[0] = ""
	}
	o.msg.Data, o.msg.Subject, o.id[0] = nil, "", ""
	if cap(o.buf) > maxPooledBuf {
		return
	}
	outMsgs.Put(o)
}
