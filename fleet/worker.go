package fleet

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nuid"

	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/limits"
)

// Replier receives the outcome of a Task. The worker calls Reply exactly once per task.
type Replier interface {
	Reply(t *Task, result any, err error)
}

// runTimer is implemented by a Replier that wants to know how long its task's method ran (retries included, queue
// wait excluded): a served worker decides from it which calls are short enough to run inline. Other tasks pay no
// clock reads.
type runTimer interface {
	ran(start, end time.Time)
}

// Task is one call handed to a Worker. Callers usually embed it in their own call record, so that submitting a call
// costs no allocation of its own.
type Task struct {
	Ctx    context.Context    // the call's context; nil means context.Background()
	Cancel context.CancelFunc // optional: cancels Ctx; the worker calls it when it aborts the task
	Method *Method
	// Args are the arguments converted to the method's parameter types. When nil, the worker uses Values: as they
	// are when they fit the parameters exactly (Method.Exact), which spares the conversion and the reflective call,
	// converted otherwise.
	Args   []reflect.Value
	Values []any
	CallID string
	// Progress receives the progress events of bars the method starts (fleet.Progress); nil discards them.
	Progress func(codec.Progress)
	// Retry re-runs the call when it fails; nil runs it once.
	Retry *RetryPolicy
	Reply Replier

	replied  atomic.Bool
	claimed  atomic.Bool // taken to run, or failed by Abort: whichever comes first
	bars     atomic.Int32
	attempts atomic.Int32
}

func (t *Task) reply(result any, err error) {
	if t.replied.CompareAndSwap(false, true) {
		t.Reply.Reply(t, result, err)
	}
}

// WorkerOptions configure a hosted worker. Zero values mean the defaults noted.
type WorkerOptions struct {
	ID         string          // unique worker ID; default: generated
	Index      int             // index in its pool, the limits' round-robin offset; default 0
	Concurrent bool            // run calls concurrently (asyncio mode) instead of one at a time; default false
	Limits     limits.Provider // limits the worker's methods see through fleet.Limits; default limits.Noop
}

// Worker hosts one instance of a kind and runs the calls submitted to it: one at a time in arrival order (actor
// semantics), or concurrently when WorkerOptions.Concurrent is set. Submit never blocks. A panic in a method becomes
// that call's error and the worker keeps serving.
type Worker struct {
	kind   *Kind
	inst   reflect.Value
	id     string
	index  int
	conc   bool
	limits limits.Provider

	mu      sync.Mutex
	queue   []*Task            // submitted, not yet taken by the loop
	spare   []*Task            // the loop's previous batch, reused as the next queue
	batch   []*Task            // taken by the loop; each task is claimed before it runs
	running map[*Task]struct{} // the running calls in Concurrent mode
	closing bool
	inline  bool // RunIfIdle is running a call: the loop waits for it, which keeps calls one at a time and in order
	// held counts the calls submitted (by Submit or RunIfIdle) and not yet finished; RunIfIdle runs a call only
	// when it is 0. A call is done with before it is replied to, so the caller's next call finds the worker idle.
	held atomic.Int64

	current atomic.Pointer[Task] // the running call, one at a time
	signal  chan struct{}
	exited  chan struct{}
	calls   sync.WaitGroup // concurrent mode: calls in their own goroutines

	stats workerCounters
}

// workerCounters are kept apart by writer: submitted by the callers' goroutines, the rest by the worker's, so the
// two sides do not fight over one cache line on every call. In flight is submitted minus completed.
type workerCounters struct {
	submitted atomic.Int64
	_         [56]byte
	calls     atomic.Int64 // completed
	errors    atomic.Int64
}

func (c *workerCounters) inFlight() int64 { return c.submitted.Load() - c.calls.Load() }

// WorkerStats are a worker's counters.
type WorkerStats struct {
	ID       string `json:"id" msgpack:"id"`
	Index    int    `json:"index" msgpack:"index"`
	Kind     string `json:"kind" msgpack:"kind"`
	Calls    int64  `json:"calls" msgpack:"calls"`         // calls completed
	Errors   int64  `json:"errors" msgpack:"errors"`       // calls completed with an error
	InFlight int64  `json:"in_flight" msgpack:"in_flight"` // queued or running
	Stopped  bool   `json:"stopped" msgpack:"stopped"`
	PID      int    `json:"pid" msgpack:"pid"`   // process hosting the worker
	Host     string `json:"host" msgpack:"host"` // machine hosting the worker
}

var (
	pid     = os.Getpid()
	host, _ = os.Hostname()
)

// Start builds an instance of the kind with the constructor arguments args and starts serving it.
func (k *Kind) Start(opts WorkerOptions, args ...any) (*Worker, error) {
	inst, err := k.construct(args)
	if err != nil {
		return nil, err
	}
	return k.startInstance(inst, opts), nil
}

// StartValues is Start with constructor arguments already of the constructor's parameter types (as decoded from the
// wire).
func (k *Kind) StartValues(opts WorkerOptions, args []reflect.Value) (*Worker, error) {
	inst, err := k.constructValues(args)
	if err != nil {
		return nil, err
	}
	return k.startInstance(inst, opts), nil
}

func (k *Kind) startInstance(inst reflect.Value, opts WorkerOptions) *Worker {
	w := &Worker{kind: k, inst: inst, id: opts.ID, index: opts.Index, conc: opts.Concurrent,
		running: make(map[*Task]struct{}), signal: make(chan struct{}, 1), exited: make(chan struct{})}
	if w.id == "" {
		w.id = nuid.Next()
	}
	if opts.Limits != nil {
		w.limits = opts.Limits.ForWorker(opts.Index)
	}
	go w.loop()
	return w
}

// ID is the worker's unique ID.
func (w *Worker) ID() string { return w.id }

// Kind is the worker's kind.
func (w *Worker) Kind() *Kind { return w.kind }

// Instance is the hosted object, for tests and for sync mode, which runs methods in the caller.
func (w *Worker) Instance() any { return w.inst.Interface() }

// Submit queues t behind the calls already submitted. It never blocks. A worker that is stopping replies to t at
// once with an error matching ErrWorkerStopped.
func (w *Worker) Submit(t *Task) {
	w.stats.submitted.Add(1)
	w.held.Add(1)
	w.mu.Lock()
	if w.closing {
		w.mu.Unlock()
		w.finish(t, nil, fmt.Errorf("%w: %s", ErrWorkerStopped, w.id), true)
		return
	}
	w.queue = append(w.queue, t)
	w.mu.Unlock()
	w.wake()
}

// RunIfIdle runs t in the calling goroutine, as Submit would run it, when the worker is idle: not stopping, nothing
// queued and no call running (urgent calls aside). It reports whether it ran t; when it did not, the caller Submits
// t instead. A caller that receives calls in order and waits for RunIfIdle before taking the next keeps the worker's
// order: calls it Submits while one runs inline wait for it. It saves the handoff to the worker's goroutine, which
// costs more than a short method. A Concurrent worker never runs a call inline.
func (w *Worker) RunIfIdle(t *Task) bool {
	if w.conc {
		return false
	}
	w.mu.Lock()
	// Calls submitted are done with, one by one, before the loop takes the next batch: a finished batch leaves the
	// worker idle even before the loop is back in take.
	if w.closing || w.inline || w.held.Load() != 0 {
		w.mu.Unlock()
		return false
	}
	w.inline = true
	w.held.Add(1)
	w.mu.Unlock()
	w.stats.submitted.Add(1)
	t.claimed.Store(true)
	w.current.Store(t)
	w.exec(t, true)
	w.mu.Lock()
	w.inline = false
	// Calls submitted meanwhile, and a Stop that waits for the loop to exit, need the loop to look again.
	wake := len(w.queue) > 0 || w.closing
	w.mu.Unlock()
	if wake {
		w.wake()
	}
	return true
}

func (w *Worker) wake() {
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// SubmitUrgent runs t at once in its own goroutine, beside the call the worker is running and ahead of its queue:
// for control methods (a shutdown flag) that must reach a busy worker. Such methods must be safe to run
// concurrently with the others. Stop waits for them.
func (w *Worker) SubmitUrgent(t *Task) {
	w.stats.submitted.Add(1)
	w.mu.Lock()
	if w.closing {
		w.mu.Unlock()
		w.finish(t, nil, fmt.Errorf("%w: %s", ErrWorkerStopped, w.id), false)
		return
	}
	w.calls.Add(1)
	w.mu.Unlock()
	t.claimed.Store(true)
	go func() {
		defer w.calls.Done()
		w.exec(t, false)
	}()
}

// Stats returns the worker's counters.
func (w *Worker) Stats() WorkerStats {
	w.mu.Lock()
	stopped := w.closing
	w.mu.Unlock()
	return WorkerStats{ID: w.id, Index: w.index, Kind: w.kind.name, Calls: w.stats.calls.Load(),
		Errors: w.stats.errors.Load(), InFlight: w.stats.inFlight(), Stopped: stopped, PID: pid, Host: host}
}

// InFlight is the number of calls queued or running.
func (w *Worker) InFlight() int { return int(w.stats.inFlight()) }

// Stop lets the calls already submitted finish, then stops the worker. When ctx ends first, calls still queued fail
// with an error wrapping ctx's error, running calls have their context cancelled and fail the same way (a method
// that ignores its context keeps its goroutine until it returns; its result is dropped), and Stop returns ctx's
// error. Stop is idempotent.
func (w *Worker) Stop(ctx context.Context) error {
	w.mu.Lock()
	w.closing = true
	w.mu.Unlock()
	w.wake()
	select {
	case <-w.exited:
		w.calls.Wait()
		return nil
	case <-ctx.Done():
	}
	w.Abort(w.stoppedError(ctx.Err()))
	return ctx.Err()
}

// stoppedError is the error of the calls a Stop whose context ended with cause did not let finish.
func (w *Worker) stoppedError(cause error) error {
	return fmt.Errorf("fleet: worker %s stopped before the call finished: %w", w.id, cause)
}

// Abort stops the worker without waiting: queued and running calls fail with err at once and running methods have
// their contexts cancelled.
func (w *Worker) Abort(err error) {
	w.mu.Lock()
	w.closing = true
	queued := append(w.queue, w.batch...)
	w.queue = nil
	running := make([]*Task, 0, len(w.running)+1)
	if t := w.current.Load(); t != nil {
		running = append(running, t)
	}
	for t := range w.running {
		running = append(running, t)
	}
	w.mu.Unlock()
	for _, t := range queued {
		if t.claimed.CompareAndSwap(false, true) {
			w.finish(t, nil, err, true)
		}
	}
	for _, t := range running {
		// Reply before cancelling: a method that returns ctx.Err() at once must not decide the call's error.
		t.reply(nil, err)
		if t.Cancel != nil {
			t.Cancel()
		}
	}
	w.wake()
}

// take waits for submitted calls and takes them all at once, so the loop pays one lock per batch, not per call. It
// waits while a call runs inline, and returns nil once the worker is closing with nothing queued or running inline.
func (w *Worker) take() []*Task {
	w.mu.Lock()
	defer w.mu.Unlock()
	clear(w.batch)
	w.spare, w.batch = w.batch[:0], nil
	for len(w.queue) == 0 || w.inline {
		if w.closing && len(w.queue) == 0 && !w.inline {
			return nil
		}
		w.mu.Unlock()
		<-w.signal
		w.mu.Lock()
	}
	w.batch, w.queue = w.queue, w.spare
	w.spare = nil
	return w.batch
}

func (w *Worker) loop() {
	defer close(w.exited)
	for {
		batch := w.take()
		if batch == nil {
			return
		}
		for _, t := range batch {
			// Abort may have failed the task already.
			if !t.claimed.CompareAndSwap(false, true) {
				continue
			}
			if w.conc {
				w.mu.Lock()
				w.running[t] = struct{}{}
				w.mu.Unlock()
				w.calls.Add(1)
				go func() {
					defer w.calls.Done()
					w.exec(t, true)
				}()
				continue
			}
			w.current.Store(t)
			w.exec(t, true)
		}
	}
}

// exec runs t, or skips it when it was cancelled before it started. held says t counts in w.held (it was not
// submitted urgent).
func (w *Worker) exec(t *Task, held bool) {
	// A task replied to before it started was cancelled; one without a context can only be skipped.
	if t.replied.Load() {
		w.finish(t, nil, context.Canceled, held)
		return
	}
	if t.Ctx != nil && t.Ctx.Err() != nil {
		w.finish(t, nil, t.Ctx.Err(), held)
		return
	}
	if rt, ok := t.Reply.(runTimer); ok {
		start := time.Now()
		res, err := w.Run(t)
		rt.ran(start, time.Now())
		w.finish(t, res, err, held)
		return
	}
	res, err := w.Run(t)
	w.finish(t, res, err, held)
}

func (w *Worker) finish(t *Task, res any, err error, held bool) {
	if w.conc {
		w.mu.Lock()
		delete(w.running, t)
		w.mu.Unlock()
	} else {
		w.current.CompareAndSwap(t, nil)
	}
	if err != nil {
		w.stats.errors.Add(1)
	}
	w.stats.calls.Add(1)
	if held {
		w.held.Add(-1)
	}
	t.reply(res, err)
}

// Invoke runs t's method on the worker's instance in the calling goroutine, outside the worker's queue; sync mode
// uses it to run calls inline. A panic becomes a *PanicError.
func (w *Worker) Invoke(ctx context.Context, t *Task) (res any, err error) {
	m := t.Method
	defer func() {
		if r := recover(); r != nil {
			res, err = nil, newPanicError(r)
		}
	}()
	if m.hasCtx {
		ctx = context.WithValue(ctx, envKey{}, &callEnv{worker: w, task: t})
	}
	if t.Args == nil && m.Exact(t.Values) {
		return m.direct(w.inst.UnsafePointer(), ctx, t.Values)
	}
	// Most methods take few arguments: their call frame is built on the stack.
	var buf [8]reflect.Value
	args := buf[:0]
	args = append(args, w.inst)
	if m.hasCtx {
		args = append(args, reflect.ValueOf(ctx))
	}
	if t.Args == nil {
		var aerr error
		if args, aerr = m.AppendArgs(args, t.Values); aerr != nil {
			return nil, aerr
		}
	} else {
		args = append(args, t.Args...)
	}
	out := m.fn.Call(args)
	if m.hasErr {
		if e := out[len(out)-1]; !e.IsNil() {
			return nil, e.Interface().(error)
		}
	}
	if m.hasResult {
		return out[0].Interface(), nil
	}
	return nil, nil
}
