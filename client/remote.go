package client

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/wire"
	"github.com/natsfleet/natsfleet/limits"
)

// remoteTransport runs a pool's workers in other processes: children of this one (Process, process.go), workers
// spawned by agents (Fleet, fleetmode.go), or standing workers joined with Attach. Calls go to each worker's own
// subject, alone or in batches (outbox.go); replies come back through the connection's reply mux (mux.go);
// heartbeats tell which workers are alive (liveness.go); control messages cancel, stop and ask (control.go).
type remoteTransport struct {
	pool   *Pool
	nc     *nats.Conn
	subj   broker.Subjects
	mux    *replyMux
	args   []byte // encoded constructor arguments
	limits []byte
	setID  string
	bucket string // KV bucket of a caller's named set; "" is the limits default
	attach bool
	plan   []string    // Fleet: agent ID for each initial worker index
	agents agentRoutes // Fleet: the routes through agents (route.go)
	seq    atomic.Uint64
	child  childEnv
	runs   *batchRuns

	mu      sync.Mutex
	workers map[string]*remoteWorker // by worker ID: those started, starting and joined

	hbSub    *nats.Subscription
	quit     chan struct{}
	monDone  chan struct{}
	release  func() // drops the shared embedded server, if this pool used it
	spawning bool   // holds the child spawner
	repl     sync.WaitGroup

	corks corks // outboxes held back until a caller waits (outbox.go)

	downSince    int64 // Unix nanoseconds the connection went down, 0 while up; the monitor's alone
	replacing    atomic.Int32
	lastStartErr atomic.Value // string: why the last start of a replacement failed
	reconciled   atomic.Int64 // reconciles done
	resent       atomic.Int64 // calls sent again after a reconcile
}

func newRemoteTransport(ctx context.Context, p *Pool, args []any, attach bool) (*remoteTransport, error) {
	t := &remoteTransport{pool: p, nc: p.opts.Conn, attach: attach, subj: broker.Subjects{Prefix: p.opts.Prefix},
		workers: make(map[string]*remoteWorker), quit: make(chan struct{}), monDone: make(chan struct{}),
		runs: newBatchRuns()}
	if t.nc == nil {
		if p.opts.Mode != Process {
			return nil, fmt.Errorf("%w: %s mode needs Options.Conn", ErrInvalidOptions, p.opts.Mode)
		}
		nc, url, release, err := acquireSharedServer()
		if err != nil {
			return nil, err
		}
		t.nc, t.release = nc, release
		t.child.url = url
	} else {
		t.child.url = t.nc.ConnectedUrl()
	}
	if p.opts.Mode == Process {
		acquireSpawner()
		t.spawning = true
	}
	ok := false
	defer func() {
		if !ok {
			t.shutdown()
		}
	}()
	if p.kind != nil {
		enc, err := codec.Msgpack.AppendArgs(nil, args)
		if err != nil {
			return nil, fmt.Errorf("client: encode constructor arguments of %s: %w", p.name, err)
		}
		t.args = enc
	}
	if err := t.limitsSpec(); err != nil {
		return nil, err
	}
	mux, err := acquireMux(t.nc)
	if err != nil {
		return nil, err
	}
	t.mux = mux
	t.hbSub, err = t.nc.Subscribe(t.subj.Heartbeats(p.name), t.onBeat)
	if err != nil {
		return nil, fmt.Errorf("client: subscribe to heartbeats: %w", err)
	}
	go t.monitor()
	if p.opts.Mode == Fleet && !p.opts.OnDemand && p.kind != nil {
		if err := t.planFleet(ctx); err != nil {
			return nil, err
		}
	}
	ok = true
	return t, nil
}

// limitsSpec prepares the pool's limits for its remote workers: definitions plus the KV set name they share.
func (t *remoteTransport) limitsSpec() error {
	p := t.pool
	var ls []limits.Limit
	switch {
	case len(p.opts.Limits) > 0:
		ls, t.setID = p.opts.Limits, "pool-"+p.id
	case p.opts.LimitSet != nil:
		// Only a set shared by name can reach other processes.
		set, ok := p.opts.LimitSet.(*limits.Set)
		if !ok || set.Name() == "" {
			return fmt.Errorf("%w: %s mode shares limits through JetStream KV: LimitSet must be a *limits.Set made with a Name and Conn", ErrInvalidOptions, p.opts.Mode)
		}
		ls, t.setID, t.bucket = set.Limits(), set.Name(), set.Bucket()
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
	t.limits = b
	return nil
}

func (t *remoteTransport) spec(index int) wire.WorkerSpec {
	p := t.pool
	return wire.WorkerSpec{
		Kind:              p.name,
		ID:                p.id + "-" + strconv.Itoa(index) + "-" + strconv.FormatUint(t.seq.Add(1), 36),
		Index:             index,
		Pool:              p.id,
		Args:              t.args,
		Limits:            t.limits,
		LimitSet:          t.setID,
		LimitBucket:       t.bucket,
		LimitReplicas:     p.opts.LimitReplicas,
		Prefix:            p.opts.Prefix,
		HeartbeatInterval: p.opts.HeartbeatInterval,
	}
}

func (t *remoteTransport) track(w *remoteWorker) {
	t.mu.Lock()
	t.workers[w.wid] = w
	t.mu.Unlock()
}

func (t *remoteTransport) forget(w *remoteWorker) {
	t.mu.Lock()
	if t.workers[w.wid] == w {
		delete(t.workers, w.wid)
	}
	t.mu.Unlock()
}

func (t *remoteTransport) start(ctx context.Context, index int) (worker, error) {
	spec := t.spec(index)
	w := t.newWorker(spec.ID, index)
	t.track(w)
	var err error
	switch t.pool.opts.Mode {
	case Process:
		w.proc, err = t.spawnChild(spec)
	case Fleet:
		w.agent, err = t.spawnOnAgent(ctx, index, spec)
	}
	if err == nil {
		err = w.waitReady(ctx)
	}
	if err != nil {
		t.forget(w)
		if w.proc != nil {
			w.proc.kill()
		}
		return nil, err
	}
	return w, nil
}

// prepare encodes a call's arguments for the wire.
func (t *remoteTransport) prepare(c *call) error {
	p := t.pool
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
	if p.kind != nil && p.kind.IsIdempotent(c.method) {
		c.rc.idempotent = true
	}
	if p.sink != nil {
		c.Progress = func(ev wire.Progress) { p.sink(progressEvent(c, c.rc.w.Load().wid, ev)) }
	}
	return nil
}

// run sizes runs from the pool's calls in flight and how its workers lately answered (batchRuns); after a pause the
// runs start over.
func (t *remoteTransport) run(inFlight int64, workers int) (int, bool) {
	if inFlight == 1 {
		t.runs.wake(time.Now().UnixNano())
	}
	return t.runs.size(inFlight, workers)
}

// replied records, for a pool whose calls go in runs, a reply message that answered n of its calls.
func (t *remoteTransport) replied(n int) {
	if t.pool.runs.on {
		t.runs.replied(n, time.Now().UnixNano())
	}
}

func (t *remoteTransport) report(s *PoolStats) {
	s.Replacing = int(t.replacing.Load())
	if err, ok := t.lastStartErr.Load().(string); ok && s.Replacing > 0 {
		s.StartError = err
	}
	s.Reconciles, s.Resent = t.reconciled.Load(), t.resent.Load()
}

func (t *remoteTransport) close(context.Context) error {
	t.repl.Wait() // replacements end quickly: the pool's context is cancelled
	t.shutdown()
	return nil
}

func (t *remoteTransport) shutdown() {
	select {
	case <-t.quit:
		return
	default:
		close(t.quit)
	}
	if t.hbSub != nil {
		_ = t.hbSub.Unsubscribe()
		<-t.monDone
	}
	if t.mux != nil {
		releaseMux(t.mux)
	}
	if t.release != nil {
		t.release()
	}
	if t.spawning {
		releaseSpawner()
	}
}
