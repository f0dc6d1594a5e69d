package client

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nuid"

	"github.com/natsfleet/natsfleet/balancer"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/actor"
	"github.com/natsfleet/natsfleet/limits"
)

// Pool is a set of workers of one kind behind one handle: each call goes to one worker chosen by the pool's
// balancer and returns a Future at once. A single worker is a pool of one. Pool's methods are safe for concurrent
// use.
type Pool struct {
	kind   *fleet.Kind // nil for a pool joined with Attach
	name   string
	id     string
	opts   Options
	tr     transport
	ctx    context.Context // parent of calls' contexts; cancelled when Stop gives up waiting
	cancel context.CancelFunc
	lims   limits.Provider
	ownSet *limits.Set
	retry  retryPolicies
	sink   func(ProgressEvent)
	bars   progressView // nil without ShowProgress
	callID atomic.Uint64

	// The dispatcher's state (dispatch.go): the workers in rotation, the balancer choosing among them, and the
	// pool's own queue of calls waiting for room.
	mu        sync.Mutex
	bal       *balancer.Balancer
	slots     []worker
	slotOf    map[worker]int
	queue     callQueue
	seq       uint64
	limit     int  // per-worker in-flight cap; 0: none
	direct    bool // no per-worker cap: calls never queue, so dispatch takes no pool lock
	counted   bool // completions are reported to the balancer (Balancer.NeedsDone)
	snap      atomic.Pointer[[]worker]
	live      atomic.Int32 // workers in rotation
	runs      runPicker
	onDemand  onDemandWorkers
	calls     callCounts
	failovers atomic.Int64
	stopping  atomic.Bool

	drained   chan struct{}
	drainOnce sync.Once
	stopOnce  sync.Once
	stopErr   error
	stopped   chan struct{}

	resizeMu sync.Mutex // one Resize at a time
	health   healthState
	bg       sync.WaitGroup // background loops (health checks)
}

// callCounts count accepted and completed calls apart, by the callers' goroutines and by the workers'
// respectively, each side on a cache line of its own, so that neither side's writes evict what the other reads on
// every call; pending is their difference. A completed call is counted twice: as finished when its outcome is set,
// and as left once its waiters have been told, which is what Stop waits for; its caller may submit the next call in
// between, and guesses about bursts (inFlight) must not count it then.
type callCounts struct {
	_        [64]byte
	entered  atomic.Int64
	_        [56]byte
	left     atomic.Int64
	finished atomic.Int64
	_        [48]byte
}

// New starts a pool of workers of kind, each built with the constructor arguments args.
func New(ctx context.Context, kind *fleet.Kind, opts Options, args ...any) (*Pool, error) {
	if kind == nil {
		return nil, fmt.Errorf("%w: nil kind", ErrInvalidOptions)
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	p := newPool(kind, kind.Name(), opts)
	if opts.Mode.local() {
		if err := p.setupLimits(); err != nil {
			return nil, err
		}
		k, err := actor.Registry.Kind(kind.Name())
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
		}
		p.tr = &localTransport{pool: p, kind: k, args: args}
	} else {
		// Remote workers build the pool's limits themselves, sharing them by name through JetStream KV
		// (remoteTransport.limitsSpec).
		tr, err := newRemoteTransport(ctx, p, args, false)
		if err != nil {
			return nil, err
		}
		p.tr = tr
	}
	if err := p.startWorkers(ctx); err != nil {
		return nil, err
	}
	if opts.HealthCheck.Method != "" && !opts.OnDemand {
		p.bg.Add(1)
		go p.healthLoop()
	}
	return p, nil
}

func newPool(kind *fleet.Kind, name string, opts Options) *Pool {
	p := &Pool{kind: kind, name: name, id: nuid.Next(), opts: opts, limit: opts.MaxQueuedTasks,
		slotOf: make(map[worker]int), drained: make(chan struct{}), stopped: make(chan struct{}),
		retry: newRetryPolicies(opts.Retry)}
	p.onDemand.live = make(map[worker]struct{})
	p.health.byWorker = make(map[worker]*Health)
	if opts.Mode == Sync {
		p.limit = 0 // a sync call runs in its caller: it never waits for room
	}
	p.sink, p.bars = newProgressSink(opts)
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.bal, _ = balancer.New(opts.LoadBalancing, 0, balancer.Options{}) // opts validated the algorithm
	p.direct = p.limit == 0 && !opts.OnDemand
	// Without a cap only least-active balancing picks by in-flight counts; the others' dispatch skips Done.
	p.counted = !p.direct || p.bal.NeedsDone(0)
	p.runs.on = !opts.Mode.local() &&
		(opts.LoadBalancing == balancer.RoundRobin || opts.LoadBalancing == balancer.Random)
	return p
}

// setupLimits builds the limits in-process workers share: one in-memory set for the pool, or the caller's.
func (p *Pool) setupLimits() error {
	switch {
	case p.opts.LimitSet != nil:
		p.lims = p.opts.LimitSet
	case len(p.opts.Limits) > 0:
		set, err := limits.NewSet(limits.SetOptions{Logger: p.opts.Logger}, p.opts.Limits...)
		if err != nil {
			return fmt.Errorf("client: pool limits: %w", err)
		}
		p.lims, p.ownSet = set, set
	}
	return nil
}

func (p *Pool) closeLimits() {
	if p.ownSet != nil {
		_ = p.ownSet.Close()
	}
}

// startWorkers starts the pool's first workers; if any cannot start, it stops the others and fails.
func (p *Pool) startWorkers(ctx context.Context) error {
	n := p.opts.MaxWorkers
	if p.opts.OnDemand {
		n = 0
	}
	ctx, cancel := context.WithTimeout(ctx, p.opts.StartTimeout)
	defer cancel()
	ws := make([]worker, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { ws[i], errs[i] = p.startWorker(ctx, i) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		p.cancel() // ends what the transport still runs for the pool
		for _, w := range ws {
			if w != nil {
				_ = w.stop(context.Background())
			}
		}
		_ = p.tr.close(context.Background())
		p.closeLimits()
		return fmt.Errorf("client: start %d %s workers of %s: %w", n, p.opts.Mode, p.name, err)
	}
	p.admitAll(ws)
	return nil
}

// startAttempts bounds the tries to start each of a new pool's workers: a worker whose constructor fails, or whose
// process dies as it starts, is tried a few times, never in a loop.
const startAttempts = 3

// startWorker starts worker i, trying again after a short backoff when it fails.
func (p *Pool) startWorker(ctx context.Context, i int) (worker, error) {
	wait := replaceBackoff
	for attempt := 1; ; attempt++ {
		w, err := p.tr.start(ctx, i)
		if err == nil || attempt == startAttempts || ctx.Err() != nil {
			return w, err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, err
		}
		wait *= 3
	}
}

// Call calls method on one of the pool's workers with args and returns its future at once. The future's value is
// the method's result as any; client.Call gives a typed future.
func (p *Pool) Call(method string, args ...any) *Future[any] {
	return Call[any](p, method, args...)
}

// Call calls method on one of the pool's workers with args and returns a future of its result as R. It never blocks:
// calls that find every worker busy (see Options.MaxQueuedTasks) wait in the pool's queue. Futures among args are
// resolved first, without blocking the caller (see Options.UnwrapFutures).
func Call[R any](p *Pool, method string, args ...any) *Future[R] {
	f := newFuture[R](p)
	p.initCall(&f.call, method, args)
	p.submit(&f.call)
	return f
}

// CallOptions are per-call settings.
type CallOptions struct {
	// Priority orders calls waiting in the pool's queue: higher first, with aging (see Options.PriorityAging) so low
	// priorities are delayed, never starved. Calls wait in the queue only when workers are at their
	// MaxQueuedTasks. Default 0.
	Priority int
	// Idempotent lets the call fail over: if its worker is lost while it is in flight, the pool sends it to another
	// worker instead of failing it with ErrWorkerLost (see fleet.Kind.Idempotent, which marks a method so for every
	// call). Process and fleet pools only. Default false.
	Idempotent bool
}

// CallWith is Call with per-call options.
func CallWith[R any](p *Pool, o CallOptions, method string, args ...any) *Future[R] {
	f := newFuture[R](p)
	p.initCall(&f.call, method, args)
	f.priority = int32(max(min(o.Priority, math.MaxInt32), math.MinInt32))
	if o.Idempotent && f.rc != nil {
		f.rc.idempotent = true
	}
	p.submit(&f.call)
	return f
}

// CallCtx is Call with a context: when ctx ends the call is cancelled (on the worker too) and its future fails with
// ctx's error; ctx's deadline becomes the method's deadline wherever it runs.
func CallCtx[R any](ctx context.Context, p *Pool, method string, args ...any) *Future[R] {
	f := newFuture[R](p)
	p.initCall(&f.call, method, args)
	c := &f.call
	if ctx.Done() == nil {
		p.submit(c)
		return f
	}
	if err := ctx.Err(); err != nil {
		p.reject(c, err)
		return f
	}
	c.ext = &callExt{ctx: ctx}
	p.submit(c)
	// The watch starts once the call is accepted, so a cancel never races with its acceptance; a ctx that ended
	// meanwhile runs the cancel at once.
	stop := context.AfterFunc(ctx, func() { c.cancel(ctx.Err()) })
	c.mu.Lock()
	if c.isDone() {
		c.mu.Unlock()
		stop()
		return f
	}
	c.ext.stop = stop
	c.mu.Unlock()
	return f
}

// Broadcast calls method with args on every worker of the pool and returns one future per worker, in worker order.
// It is for control: the call goes outside the balancer (which neither counts nor delays it) and runs at once,
// beside the call the worker is busy with rather than behind its queue, so the method must be safe to run
// concurrently with the kind's other methods (an atomic flag, a guarded setting). The guide's graceful shutdown
// tells every busy worker to stop early this way.
func (p *Pool) Broadcast(method string, args ...any) []*Future[any] {
	ws := p.workers()
	futs := make([]*Future[any], len(ws))
	for i, w := range ws {
		futs[i] = p.sendUrgent(w, method, args...)
	}
	return futs
}

// sendUrgent calls method on w at once, beside its current call.
func (p *Pool) sendUrgent(w worker, method string, args ...any) *Future[any] {
	f := newFuture[any](p)
	c := &f.call
	p.initCall(c, method, args)
	if err := p.tr.prepare(c); err != nil {
		p.reject(c, err)
		return f
	}
	if !p.enter() {
		p.reject(c, ErrPoolStopped)
		return f
	}
	w.sendUrgent(c)
	return f
}

// Stop stops the pool: new calls fail with ErrPoolStopped, calls already accepted (queued or running) finish, then
// the workers stop. When ctx ends first, calls still queued fail with an error wrapping ctx's error, running calls
// have their methods' contexts cancelled and fail the same way, and Stop returns ctx's error. Stop is idempotent;
// a second Stop waits for the first to finish or for its own ctx.
func (p *Pool) Stop(ctx context.Context) error {
	p.stopOnce.Do(func() {
		p.stopErr = p.doStop(ctx)
		close(p.stopped)
	})
	select {
	case <-p.stopped:
		return p.stopErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the pool without a deadline: Stop(context.Background()).
func (p *Pool) Close() error { return p.Stop(context.Background()) }

func (p *Pool) doStop(ctx context.Context) error {
	p.mu.Lock()
	p.stopping.Store(true)
	p.mu.Unlock()
	if p.pending() == 0 {
		p.drainOnce.Do(func() { close(p.drained) })
	}
	var err error
	select {
	case <-p.drained:
	case <-ctx.Done():
		err = ctx.Err()
	}
	ws := p.dropAll()
	if err != nil {
		p.abort(fmt.Errorf("%w before the call finished: %w", ErrPoolStopped, err), ws)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(ws))
	for i, w := range ws {
		wg.Go(func() { errs[i] = w.stop(ctx) })
	}
	wg.Wait()
	p.onDemand.wg.Wait()
	p.cancel()
	p.bg.Wait()
	errs = append(errs, p.tr.close(ctx))
	p.closeLimits()
	if p.bars != nil {
		p.bars.close()
	}
	if err != nil {
		return err
	}
	return errors.Join(errs...)
}

// abort fails the queued calls and those the workers hold, whose methods' contexts it cancels.
func (p *Pool) abort(err error, ws []worker) {
	p.mu.Lock()
	var queued []*call
	for p.queue.len() > 0 {
		queued = append(queued, p.queue.pop())
	}
	p.mu.Unlock()
	for _, c := range queued {
		c.complete(nil, err)
	}
	for _, w := range ws {
		w.abort(err)
	}
	p.cancel()
}

func (p *Pool) nextCallID() uint64 { return p.callID.Add(1) }
