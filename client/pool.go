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
	"github.com/natsfleet/natsfleet/limits"
)

// handle is the pool's end of one worker, wherever it runs.
type handle interface {
	id() string
	// send hands the call to the worker; it never blocks. A failure completes the call.
	send(c *call)
	// stop drains and stops the worker (see Pool.Stop for the ctx rules).
	stop(ctx context.Context) error
	stats() fleet.WorkerStats
}

// backend starts workers for one mode.
type backend interface {
	start(ctx context.Context, index int) (handle, error)
	// prepare readies a call for its workers before dispatch (argument conversion for in-process workers, encoding
	// for remote ones); an error fails the call without dispatching it.
	prepare(c *call) error
	close(ctx context.Context) error
}

// Pool is a set of workers of one kind behind one handle: each call goes to one worker chosen by the pool's
// balancer and returns a Future at once. A single worker is a pool of one. Pool's methods are safe for concurrent
// use.
type Pool struct {
	kind   *fleet.Kind
	name   string
	id     string
	opts   Options
	limit  int // per-worker in-flight cap; 0: none
	be     backend
	ctx    context.Context // parent of calls' contexts; cancelled when Stop gives up waiting
	cancel context.CancelFunc
	lims   limits.Provider
	ownSet *limits.Set
	retry  retryPolicies
	sink   func(ProgressEvent)
	bars   progressView // nil without ShowProgress
	callID atomic.Uint64

	mu       sync.Mutex
	bal      *balancer.Balancer
	slots    []handle
	queue    callQueue
	seq      uint64
	direct   bool // no per-worker cap: calls never queue, so dispatch takes no pool lock
	counted  bool // completions are reported to the balancer (Balancer.NeedsDone)
	stopping atomic.Bool
	// Accepted and completed calls are counted apart, by the callers' goroutines and by the workers' respectively,
	// each side on a cache line of its own, so that neither side's writes evict what the other reads on every call
	// (stopping, the other counter); pending is their difference. A completed call is counted twice: as finished when
	// its outcome is set, and as left once its waiters have been told, which is what Stop waits for; its caller may
	// submit the next call in between, and guesses about bursts (inFlight) must not count it then.
	_              [64]byte
	entered        atomic.Int64
	_              [56]byte
	left           atomic.Int64
	finishedN      atomic.Int64
	_              [48]byte
	snap           atomic.Pointer[[]handle]
	live           atomic.Int32 // workers in rotation
	runs           *batchRuns   // remote modes: calls go to workers in runs
	onDemandActive int
	onDemandTotal  uint64
	onDemand       map[handle]struct{}
	onDemandWG     sync.WaitGroup
	drained        chan struct{}
	drainOnce      sync.Once

	stopOnce sync.Once
	stopErr  error
	stopped  chan struct{}

	syncMu sync.Mutex // Sync mode: calls run inline, one at a time

	resizeMu  sync.Mutex         // one Resize at a time
	health    map[handle]*Health // guarded by mu
	unhealthy atomic.Int64       // workers replaced after failing health checks
	bg        sync.WaitGroup     // background loops (health checks)
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
	switch opts.Mode {
	case Sync, Asyncio, Thread:
		if err := p.setupLimits(); err != nil {
			return nil, err
		}
		p.be = &localBackend{pool: p, args: args}
	default:
		// Remote workers build the pool's limits themselves, sharing them by name through JetStream KV
		// (see remoteBackend.limitsSpec).
		be, err := newRemoteBackend(ctx, p, args, false)
		if err != nil {
			return nil, err
		}
		p.be = be
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
		drained: make(chan struct{}), stopped: make(chan struct{}), onDemand: make(map[handle]struct{}),
		retry: newRetryPolicies(opts.Retry), health: make(map[handle]*Health)}
	p.sink, p.bars = newProgressSink(opts)
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.bal, _ = balancer.New(opts.LoadBalancing, 0, balancer.Options{}) // opts validated the algorithm
	p.direct = opts.MaxQueuedTasks == 0 && !opts.OnDemand && opts.Mode != Sync
	// Without a cap only least-active balancing picks by in-flight counts; the others' dispatch skips Done.
	p.counted = !p.direct || p.bal.NeedsDone(0)
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

func (p *Pool) startWorkers(ctx context.Context) error {
	n := p.opts.MaxWorkers
	if p.opts.OnDemand {
		n = 0
	}
	ctx, cancel := context.WithTimeout(ctx, p.opts.StartTimeout)
	defer cancel()
	hs := make([]handle, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { hs[i], errs[i] = p.be.start(ctx, i) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, h := range hs {
			if h != nil {
				_ = h.stop(context.Background())
			}
		}
		_ = p.be.close(context.Background())
		p.closeLimits()
		return fmt.Errorf("client: start %d %s workers of %s: %w", n, p.opts.Mode, p.name, err)
	}
	p.mu.Lock()
	for _, h := range hs {
		p.addLocked(h)
	}
	p.mu.Unlock()
	return nil
}

// addLocked puts a started worker into rotation.
func (p *Pool) addLocked(h handle) int {
	i := p.bal.Add()
	if i == len(p.slots) {
		p.slots = append(p.slots, h)
	} else {
		p.slots[i] = h
	}
	p.publishSlotsLocked()
	return i
}

// removeLocked takes slot i out of rotation.
func (p *Pool) removeLocked(i int) {
	p.bal.Remove(i)
	p.slots[i] = nil
	p.publishSlotsLocked()
}

// publishSlotsLocked gives the lock-free dispatch path a fresh copy of the slots.
func (p *Pool) publishSlotsLocked() {
	s := append([]handle(nil), p.slots...)
	p.snap.Store(&s)
	n := 0
	for _, h := range s {
		if h != nil {
			n++
		}
	}
	p.live.Store(int32(n))
}

// enter counts an accepted call; it fails once the pool is stopping.
func (p *Pool) enter() bool {
	p.entered.Add(1)
	if p.stopping.Load() {
		p.leave()
		return false
	}
	return true
}

// leave counts a completed call and lets Stop go on after the last one.
func (p *Pool) leave() {
	if n := p.left.Add(1); p.stopping.Load() && n == p.entered.Load() {
		p.drainOnce.Do(func() { close(p.drained) })
	}
}

// pending is the number of accepted calls not completed.
func (p *Pool) pending() int64 { return p.entered.Load() - p.left.Load() }

// inFlight is the number of accepted calls whose outcome is not set yet: pending without the calls whose callers may
// already have their results.
func (p *Pool) inFlight() int64 { return p.entered.Load() - p.finishedN.Load() }

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
}

// CallWith is Call with per-call options.
func CallWith[R any](p *Pool, o CallOptions, method string, args ...any) *Future[R] {
	f := newFuture[R](p)
	p.initCall(&f.call, method, args)
	f.priority = int32(max(min(o.Priority, math.MaxInt32), math.MinInt32))
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
	p.mu.Lock()
	hs := make([]handle, 0, len(p.slots))
	for _, h := range p.slots {
		if h != nil {
			hs = append(hs, h)
		}
	}
	p.mu.Unlock()
	futs := make([]*Future[any], len(hs))
	for i, h := range hs {
		futs[i] = p.sendUrgent(h, method, args...)
	}
	return futs
}

// sendUrgent calls method on the worker behind h at once, beside its current call.
func (p *Pool) sendUrgent(h handle, method string, args ...any) *Future[any] {
	f := newFuture[any](p)
	c := &f.call
	p.initCall(c, method, args)
	if err := p.be.prepare(c); err != nil {
		p.reject(c, err)
		return f
	}
	if !p.enter() {
		p.reject(c, ErrPoolStopped)
		return f
	}
	switch h := h.(type) {
	case localHandle:
		if p.opts.Mode == Sync {
			res, err := h.w.Run(&c.Task)
			c.complete(res, err)
			return f
		}
		h.w.SubmitUrgent(&c.Task)
	case *remoteHandle:
		c.rc.urgent = true
		h.send(c)
	}
	return f
}

// remoteRecord is the record of a call to a worker in another process: its remote part comes in the same allocation.
type remoteRecord[R any] struct {
	f  Future[R]
	rc remoteCall
}

// newFuture allocates a call's record.
func newFuture[R any](p *Pool) *Future[R] {
	if p.opts.Mode.local() {
		return &Future[R]{}
	}
	r := &remoteRecord[R]{}
	r.f.rc = &r.rc
	return &r.f
}

func (p *Pool) initCall(c *call, method string, args []any) {
	c.pool, c.method, c.Values, c.slot = p, method, args, -1
	c.Task.Reply = c
}

// submit accepts the call: runs it inline (Sync), dispatches it, or queues it.
func (p *Pool) submit(c *call) {
	if p.opts.UnwrapFutures == UnwrapOn {
		if deps := findFutures(c.Values); deps != nil {
			if !p.enter() { // the call counts as accepted while it waits for its arguments
				p.reject(c, ErrPoolStopped)
				return
			}
			go p.awaitArgs(c, deps)
			return
		}
	}
	p.accept(c, false)
}

// reject fails a call the pool never accepted.
func (p *Pool) reject(c *call, err error) {
	c.pool = nil
	c.complete(nil, err)
}

func (p *Pool) awaitArgs(c *call, deps []Awaitable) {
	for _, d := range deps {
		select {
		case <-d.Done():
		case <-c.doneChan(): // cancelled while waiting
			return
		case <-p.ctx.Done():
			c.complete(nil, fmt.Errorf("%w: stopped while waiting for argument futures", ErrPoolStopped))
			return
		}
	}
	args, err := substitute(c.Values)
	if err != nil {
		c.complete(nil, fmt.Errorf("client: argument of %s: %w", c.method, err))
		return
	}
	c.Values = args
	p.accept(c, true)
}

func (p *Pool) accept(c *call, counted bool) {
	if err := p.be.prepare(c); err != nil {
		if counted {
			c.complete(nil, err)
		} else {
			p.reject(c, err)
		}
		return
	}
	if !counted && !p.enter() {
		p.reject(c, ErrPoolStopped)
		return
	}
	if p.opts.Mode == Sync {
		p.runInline(c)
		return
	}
	if p.direct {
		slot, ok := p.pick(c, 0)
		if !ok {
			c.complete(nil, fmt.Errorf("%w: %s", ErrNoWorkers, p.name))
			return
		}
		c.slot = int32(slot)
		(*p.snap.Load())[slot].send(c)
		return
	}
	p.mu.Lock()
	if p.queue.len() == 0 {
		if h, ok := p.pickLocked(c); ok {
			p.mu.Unlock()
			p.dispatch(h, c)
			return
		}
	}
	if !p.opts.OnDemand && p.bal.Len() == 0 {
		p.mu.Unlock()
		c.complete(nil, fmt.Errorf("%w: %s", ErrNoWorkers, p.name))
		return
	}
	p.seq++
	p.queue.push(c, time.Now().UnixNano()-int64(c.priority)*int64(p.opts.PriorityAging), p.seq)
	p.mu.Unlock()
}

// pickLocked chooses the worker for c, or reports that none has room.
func (p *Pool) pickLocked(c *call) (handle, bool) {
	if p.opts.OnDemand {
		if p.opts.MaxWorkers > 0 && p.onDemandActive >= p.opts.MaxWorkers {
			return nil, false
		}
		p.onDemandActive++
		p.onDemandWG.Add(1)
		return nil, true
	}
	slot, ok := p.pick(c, p.limit)
	if !ok {
		return nil, false
	}
	c.slot = int32(slot)
	return p.slots[slot], true
}

// pick has the balancer choose c's worker among those with fewer than limit calls in flight (0: no cap); calls to
// batching workers go in runs (batchRuns).
func (p *Pool) pick(c *call, limit int) (int, bool) {
	if p.runs == nil || c.rc == nil {
		return p.bal.Pick(limit)
	}
	n := p.inFlight()
	if n == 1 {
		p.runs.wake(time.Now().UnixNano())
	}
	run, whole := p.runs.size(n, int(p.live.Load()))
	slot, last, ok := p.bal.PickRun(limit, run)
	c.rc.endsRun = last && whole
	return slot, ok
}

func (p *Pool) dispatch(h handle, c *call) {
	if h == nil {
		go p.runOnDemand(c)
		return
	}
	h.send(c)
}

// finished is called once per accepted call when it completes, before its outcome is published: it frees the call's
// slot and dispatches what the freed slot makes room for. The call is counted out (leave) after publication.
func (p *Pool) finished(c *call) {
	p.finishedN.Add(1)
	if c.rc != nil {
		if h := c.rc.rh.Load(); h != nil {
			h.sent(c)
		}
	}
	if p.direct {
		if c.slot >= 0 && p.counted {
			p.bal.Done(int(c.slot))
		}
		return
	}
	p.mu.Lock()
	if c.slot >= 0 {
		p.bal.Done(int(c.slot))
		c.slot = -1
	}
	var room [4]dispatchable // a completion frees one slot: the calls it lets go fit here without an allocation
	next := p.drainLocked(room[:0])
	p.mu.Unlock()
	p.dispatchAll(next)
}

// dispatchable is a queued call and the worker picked for it.
type dispatchable struct {
	c *call
	h handle
}

// drainLocked takes from the queue the calls that workers now have room for, appending them to dst.
func (p *Pool) drainLocked(dst []dispatchable) []dispatchable {
	for p.queue.len() > 0 {
		n := p.queue.peek()
		if n.settled() {
			p.queue.pop()
			continue
		}
		h, ok := p.pickLocked(n)
		if !ok {
			break
		}
		p.queue.pop()
		dst = append(dst, dispatchable{n, h})
	}
	return dst
}

// dispatchAll dispatches what drainLocked took; the caller no longer holds p.mu.
func (p *Pool) dispatchAll(ds []dispatchable) {
	for _, d := range ds {
		p.dispatch(d.h, d.c)
	}
}

// cancelRemote tells the worker running c to cancel it, where the worker is in another process.
func (p *Pool) cancelRemote(c *call) {
	if rb, ok := p.be.(*remoteBackend); ok {
		rb.cancel(c)
	}
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
	p.mu.Lock()
	hs := make([]handle, 0, len(p.slots)+len(p.onDemand))
	for h := range p.onDemand {
		hs = append(hs, h)
	}
	for i, h := range p.slots {
		if h != nil {
			hs = append(hs, h)
			p.removeLocked(i)
		}
	}
	p.mu.Unlock()
	if err != nil {
		p.abort(fmt.Errorf("%w before the call finished: %w", ErrPoolStopped, err), hs)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(hs))
	for i, h := range hs {
		wg.Go(func() { errs[i] = h.stop(ctx) })
	}
	wg.Wait()
	p.onDemandWG.Wait()
	p.cancel()
	p.bg.Wait()
	errs = append(errs, p.be.close(ctx))
	p.closeLimits()
	if p.bars != nil {
		p.bars.close()
	}
	if err != nil {
		return err
	}
	return errors.Join(errs...)
}

// abort fails the queued calls and the running ones, whose methods' contexts it cancels.
func (p *Pool) abort(err error, hs []handle) {
	p.mu.Lock()
	var queued []*call
	for p.queue.len() > 0 {
		queued = append(queued, p.queue.pop())
	}
	p.mu.Unlock()
	for _, c := range queued {
		c.complete(nil, err)
	}
	// In-process calls fail with err before their contexts are cancelled, so a method returning ctx.Err() does not
	// decide the call's error; remote handles fail theirs in stop.
	for _, h := range hs {
		if lh, ok := h.(localHandle); ok {
			lh.w.Abort(err)
		}
	}
	p.cancel()
}

func (p *Pool) nextCallID() uint64 { return p.callID.Add(1) }
