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

	mu    sync.Mutex
	calls map[string]*call // queued or running, by call ID, so ControlCancel can find them

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
		InFlight: st.InFlight, Calls: st.Calls, Interval: h.spec.HeartbeatInterval, Stopping: h.stopping.Load()}
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
	// answered (by the worker, or with ErrWorkerStopped), so no caller waits for a reply that never comes.
	closed := h.callSub.StatusChanged(nats.SubscriptionClosed)
	if err := h.callSub.Drain(); err == nil {
		select {
		case <-closed:
		case <-ctx.Done():
			_ = h.callSub.Unsubscribe()
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
	c, err := codec.ForContentType(m.Header.Get(codec.HeaderContentType))
	if err != nil {
		h.respond(m, codec.JSON, EncodeError(fmt.Errorf("%w: %w", ErrMalformed, err)), codec.StatusError)
		return
	}
	switch op := m.Header.Get(HeaderControl); op {
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
		h.respond(m, c, EncodeError(fmt.Errorf("%w: unknown %s %q (want %s, %s, %s or %s)", ErrMalformed,
			HeaderControl, op, ControlCancel, ControlStop, ControlStats, ControlPing)), codec.StatusError)
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

func (h *Hosted) cancelCall(id string) {
	h.mu.Lock()
	c := h.calls[id]
	h.mu.Unlock()
	if c != nil {
		c.abort()
	}
}

func (h *Hosted) cancelAll() {
	h.mu.Lock()
	cs := make([]*call, 0, len(h.calls))
	for _, c := range h.calls {
		cs = append(cs, c)
	}
	h.mu.Unlock()
	for _, c := range cs {
		c.abort()
	}
}

// call is one call received over NATS: the Task it becomes and where its reply goes, in one allocation.
type call struct {
	Task
	h     *Hosted
	inbox string // reply subject; "" drops the outcome
	trace string
	codec codec.Codec
	start time.Time // arrival at the worker
}

// Reply sends the call's outcome to its caller.
func (c *call) Reply(_ *Task, res any, err error) {
	h := c.h
	h.mu.Lock()
	if h.calls[c.CallID] == c {
		delete(h.calls, c.CallID)
	}
	h.mu.Unlock()
	c.Cancel() // releases the deadline's timer
	h.record(c.Method, c.start, err)
	if c.inbox == "" {
		if err != nil {
			h.log.Debug("fleet: call without reply subject failed", "worker", h.spec.ID, "method",
				c.Method.name, "err", err)
		}
		return
	}
	h.reply(c.inbox, c.CallID, c.trace, c.codec, res, err)
}

// abort cancels the call's context and answers the caller at once: a queued call would otherwise wait for its
// turn to be dropped, and a running method may take a moment to notice. The worker's own reply comes later and is
// ignored (a task is replied to once).
func (c *call) abort() {
	c.Cancel()
	c.Task.reply(nil, fmt.Errorf("fleet: call %s cancelled: %w", c.CallID, context.Canceled))
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

func (h *Hosted) onCall(m *nats.Msg) {
	start := time.Now()
	id := m.Header.Get(codec.HeaderCallID)
	if id == "" {
		id = nuid.Next()
	}
	trace := m.Header.Get(codec.HeaderTraceparent)
	cd, err := codec.ForContentType(m.Header.Get(codec.HeaderContentType))
	if err != nil {
		// The caller's codec is unknown; JSON is the one a person reading the reply can decode.
		h.reject(m, start, nil, id, trace, codec.JSON, fmt.Errorf("%w: %w", ErrMalformed, err))
		return
	}
	if len(m.Data) > h.maxCall {
		h.reject(m, start, nil, id, trace, cd, fmt.Errorf(
			"%w: call body of %d bytes exceeds the worker's limit of %d", ErrPayloadTooLarge, len(m.Data), h.maxCall))
		return
	}
	name := m.Header.Get(codec.HeaderMethod)
	if name == "" {
		h.reject(m, start, nil, id, trace, cd, fmt.Errorf("%w: missing %s header", ErrMalformed,
			codec.HeaderMethod))
		return
	}
	deadline, err := codec.ParseDeadline(m.Header.Get(codec.HeaderDeadline))
	if err != nil {
		h.reject(m, start, nil, id, trace, cd, fmt.Errorf("%w: %w", ErrMalformed, err))
		return
	}
	method, err := h.w.kind.Method(name)
	if err != nil {
		h.reject(m, start, nil, id, trace, cd, err)
		return
	}
	args, err := cd.DecodeArgs(m.Data, method.params)
	if err != nil {
		if errors.Is(err, codec.ErrMalformed) {
			err = &MethodError{Kind: h.w.kind.name, Method: name, Err: ErrMalformed, Detail: err.Error()}
		} else {
			err = method.BadArguments(err)
		}
		h.reject(m, start, method, id, trace, cd, err)
		return
	}
	c := &call{h: h, inbox: m.Reply, trace: trace, codec: cd, start: start}
	c.Method, c.Args, c.CallID, c.Task.Reply = method, args, id, c
	if deadline.IsZero() {
		c.Ctx, c.Task.Cancel = context.WithCancel(context.Background())
	} else {
		c.Ctx, c.Task.Cancel = context.WithDeadline(context.Background(), deadline)
	}
	// Only a method that takes a context can start a progress bar.
	if m.Reply != "" && method.hasCtx {
		c.Progress = c.progress
	}
	h.mu.Lock()
	h.calls[id] = c
	h.mu.Unlock()
	if m.Header.Get(HeaderUrgent) != "" {
		h.w.SubmitUrgent(&c.Task)
		return
	}
	h.w.Submit(&c.Task)
}

// reject answers a call that could not be submitted; method is nil when the call named none of the kind's.
func (h *Hosted) reject(m *nats.Msg, start time.Time, method *Method, id, trace string, cd codec.Codec, err error) {
	h.record(method, start, err)
	if m.Reply == "" {
		h.log.Debug("fleet: bad call without reply subject", "worker", h.spec.ID, "err", err)
		return
	}
	h.reply(m.Reply, id, trace, cd, nil, err)
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
