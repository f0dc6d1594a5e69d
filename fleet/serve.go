package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/internal/actor"
	"github.com/natsfleet/natsfleet/internal/wire"
	"github.com/natsfleet/natsfleet/limits"
)

// DefaultHeartbeatInterval is the heartbeat interval of a worker whose pool or agent sets none.
const DefaultHeartbeatInterval = time.Second

// defaultLeaseBeats is a spawned worker's lease in heartbeat intervals when its spec sets none.
const defaultLeaseBeats = 10

// flushTimeout bounds the wait for the server to confirm a new worker's or agent's subscriptions.
const flushTimeout = 5 * time.Second

// defaultDrainTimeout bounds how long a stop request lets the calls a worker holds finish.
const defaultDrainTimeout = time.Minute

// serveOptions configure serve. Zero values mean the defaults noted.
type serveOptions struct {
	// Agent is the ID of the agent hosting the worker, reported in its heartbeats; default "" (hosted by no agent).
	Agent string
	// MaxCallBytes is the largest call body the worker accepts; a larger one gets an error reply matching
	// ErrPayloadTooLarge. Default: the connection's maximum payload.
	MaxCallBytes int
	// DrainTimeout bounds how long a stop request without a deadline lets the worker's calls finish before they are
	// cancelled. Default defaultDrainTimeout.
	DrainTimeout time.Duration
	// Logger receives what cannot be replied to (failed publishes, calls without a reply subject that failed).
	// Default slog.Default().
	Logger *slog.Logger
	// OnCall, when set, is told of every call the worker answers, just before the reply is published, on the
	// goroutine that replies (for an actor worker, the one running its calls): it must be quick and must not block.
	// Default nil.
	OnCall func(CallRecord)

	// onStop runs once the worker has stopped; the agent frees its capacity there.
	onStop func(*hosted)
	// agentCalls is the agent's calls subscription, which also brings the worker calls (agentcalls.go).
	agentCalls *nats.Subscription
}

// hosted is a worker served over NATS: it receives calls on its subject, answers control messages and publishes
// heartbeats until it is stopped, by Stop or by a stop request.
type hosted struct {
	nc       *nats.Conn
	spec     wire.WorkerSpec
	subjects broker.Subjects
	kind     *Kind
	w        *actor.Worker
	set      *limits.Set
	agent    string
	maxCall  int
	drain    time.Duration
	log      *slog.Logger
	onStop   func(*hosted)

	callSub, ctlSub, discSub *nats.Subscription
	agentSub                 *nats.Subscription // the agent's calls subscription, or nil
	svc                      service            // service discovery and per-method counters (micro.go)

	mu      sync.Mutex
	calls   map[string]*call // queued or running in the worker's goroutines, by call ID, so a cancel finds them
	running *call            // the call running inline in the call subscription's goroutine
	// tombs are cancels of calls still in nats.go's buffers behind an inline call, by call ID, each with the counts
	// of delivered messages after which the call can no longer come (see tombLocked).
	tombs   map[string]tomb
	refusal atomic.Pointer[refusal] // set once the worker aborts: calls still buffered fail unrun

	pace map[*method]*pace // read-only after Serve
	// The call batch being served, the subscription goroutine's alone, and the replies gathered meanwhile (batch.go).
	batch   []wire.BatchCall
	replies replyBatch
	// outcomes are the replies sent lately, kept for callers that lost some (outcomes.go, reconcile.go).
	outcomes outcomes
	// The worker's connection (conn.go), when its heartbeat goroutine last ticked, and whether it suspects its
	// callers declared it lost while it was away (fence.go).
	watch    *connWatch
	lastTick atomic.Int64
	// busyBeat is when a standing worker last beat early because a call found it idle (Unix nanoseconds).
	busyBeat atomic.Int64
	fence    fence

	stopping atomic.Bool
	stopErr  error
	done     chan struct{}
	hbStop   chan struct{}
	hbDone   chan struct{}
}

// serve builds a worker of spec.Kind from spec.Args and serves it on nc: calls arrive on the worker's subject
// ({prefix}.w.{id}), control messages on {prefix}.w.{id}.ctl, and a heartbeat goes to {prefix}.hb.{kind}.{id} at
// once and then every spec.HeartbeatInterval. A standing worker (spec.Pool == "") also answers kind discovery
// requests with its heartbeat. When spec.Limits is set, the worker's methods see a limit set shared through
// JetStream KV under spec.LimitSet.
//
// The worker serves until Stop or a stop request; Done is closed then.
func serve(nc *nats.Conn, spec wire.WorkerSpec, opts serveOptions) (*hosted, error) {
	if nc == nil {
		return nil, errors.New("fleet: serve: nil connection")
	}
	k, err := Lookup(spec.Kind)
	if err != nil {
		return nil, err
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
	if spec.Lease <= 0 && spec.Pool != "" {
		spec.Lease = defaultLeaseBeats * spec.HeartbeatInterval
	}
	args, err := decodeConstructorArgs(k, spec.Args)
	if err != nil {
		return nil, err
	}
	h := &hosted{nc: nc, spec: spec, kind: k, subjects: broker.Subjects{Prefix: spec.Prefix}, agent: opts.Agent,
		maxCall: opts.MaxCallBytes, drain: opts.DrainTimeout, log: opts.Logger, onStop: opts.onStop,
		calls: make(map[string]*call), done: make(chan struct{}), hbStop: make(chan struct{}),
		hbDone: make(chan struct{}), agentSub: opts.agentCalls}
	if h.maxCall <= 0 {
		h.maxCall = int(nc.MaxPayload())
	}
	if h.drain <= 0 {
		h.drain = defaultDrainTimeout
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	h.replies.nc, h.replies.log, h.replies.owner = nc, h.log, spec.ID
	wopts := actor.Options{ID: spec.ID, Index: spec.Index, Concurrent: spec.Concurrent, Gate: h.gate}
	if len(spec.Limits) > 0 {
		ls, err := limits.UnmarshalLimits(spec.Limits)
		if err != nil {
			return nil, fmt.Errorf("fleet: serve: worker %s: %w", spec.ID, err)
		}
		h.set, err = limits.NewSet(limits.SetOptions{Name: spec.LimitSet, Conn: nc, Bucket: spec.LimitBucket,
			Replicas: spec.LimitReplicas, Logger: h.log}, ls...)
		if err != nil {
			return nil, fmt.Errorf("fleet: serve: worker %s: %w", spec.ID, err)
		}
		wopts.Limits = h.set
	}
	inst, err := k.constructValues(args)
	if err != nil {
		h.closeSet()
		return nil, err
	}
	h.w = k.startInstance(inst, wopts)
	h.svc.init(k, opts.OnCall)
	h.pace = make(map[*method]*pace, len(k.methods))
	for _, m := range k.methods {
		h.pace[m] = newPace()
	}
	h.lastTick.Store(time.Now().UnixNano())
	h.watch = watchConn(h)
	err = h.subscribe()
	if err == nil && spec.Pool != "" {
		err = h.watch.follow(h, h.subjects.PoolKeepalive(spec.Pool), spec.Lease)
	}
	if err != nil {
		h.unsubscribe()
		h.watch.unwatch(h)
		_ = h.w.Stop(context.Background()) // nothing was submitted: returns at once
		h.closeSet()
		return nil, fmt.Errorf("fleet: serve: worker %s: %w", spec.ID, err)
	}
	// Once serve returns, the server knows the subscriptions, so a call from any connection finds the worker. A
	// connection that is reconnecting fails the flush; its subscriptions are renewed when it is back.
	_ = nc.FlushTimeout(flushTimeout)
	h.beat()
	go h.heartbeats()
	return h, nil
}

func (h *hosted) subscribe() error {
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

func (h *hosted) unsubscribe() {
	for _, s := range []*nats.Subscription{h.callSub, h.ctlSub, h.discSub} {
		if s != nil {
			_ = s.Unsubscribe()
		}
	}
	h.unsubscribeService()
}

func (h *hosted) closeSet() {
	if h.set != nil {
		if err := h.set.Close(); err != nil {
			h.log.Warn("fleet: close limit set", "worker", h.spec.ID, "err", err)
		}
	}
}

// ID is the worker's ID.
func (h *hosted) ID() string { return h.spec.ID }

// Spec is the spec the worker was built from, with its defaults filled in (ID, Prefix, HeartbeatInterval).
func (h *hosted) Spec() wire.WorkerSpec { return h.spec }

// Done is closed once the worker has stopped, by Stop or by a stop request.
func (h *hosted) Done() <-chan struct{} { return h.done }

// Heartbeat is what the worker's next heartbeat would say.
func (h *hosted) Heartbeat() wire.Heartbeat {
	st := h.w.Stats()
	return wire.Heartbeat{WorkerID: h.spec.ID, Kind: h.spec.Kind, Agent: h.agent, Pool: h.spec.Pool,
		Index: h.spec.Index, InFlight: st.InFlight, Calls: st.Calls, Interval: h.spec.HeartbeatInterval,
		Stopping: h.stopping.Load(), Batches: true, Conn: h.watch.gen.Load(), AgentCalls: h.agentSub != nil}
}

// Stop stops serving: the worker leaves its subject (calls already received still run), the calls it holds finish,
// then heartbeats stop and its limit set is closed. When ctx ends first, the remaining calls are cancelled and fail
// with an error wrapping ctx's error, which Stop returns. Stop is idempotent; a second call waits for the first.
func (h *hosted) Stop(ctx context.Context) error { return h.stop(ctx, nil) }

// stop runs the stop sequence once; stopped (optional) sees the outcome, before Done is closed when this call
// stops the worker, so a stop request is answered before a process that waits for Done exits.
func (h *hosted) stop(ctx context.Context, stopped func(error)) error {
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
			h.refusal.Store(&refusal{err: h.w.StoppedError(ctx.Err())})
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
	h.watch.unwatch(h)
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
func (h *hosted) heartbeats() {
	defer close(h.hbDone)
	t := time.NewTicker(h.spec.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			// A tick far later than its interval means the process did not run meanwhile.
			if now.Sub(time.Unix(0, h.lastTick.Load())) > h.suspectFor() {
				h.suspect("its heartbeats stalled")
			}
			h.lastTick.Store(now.UnixNano())
			h.beat()
			h.endSuspicion(now)
			h.outcomes.prune(now)
		case <-h.hbStop:
			return
		}
	}
}

func (h *hosted) beat() { h.publishBeat(h.Heartbeat()) }

func (h *hosted) publishBeat(hb wire.Heartbeat) {
	b, err := codec.Msgpack.Marshal(hb)
	if err == nil {
		err = h.nc.Publish(h.subjects.Heartbeat(h.spec.Kind, h.spec.ID), b)
	}
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		h.log.Warn("fleet: publish heartbeat", "worker", h.spec.ID, "err", err)
	}
}

func (h *hosted) onDiscover(m *nats.Msg) {
	if m.Reply == "" || h.stopping.Load() {
		return
	}
	c, err := codec.ForContentType(m.Header.Get(wire.HeaderContentType))
	if err != nil {
		h.respond(m, codec.JSON, encodeError(fmt.Errorf("%w: %w", ErrMalformed, err)), wire.StatusError)
		return
	}
	h.respond(m, c, h.Heartbeat(), wire.StatusOK)
}
