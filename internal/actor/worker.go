package actor

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/natsfleet/natsfleet/limits"
)

// Options configure a worker. Zero values mean the defaults noted.
type Options struct {
	ID         string          // unique worker ID; required
	Kind       string          // the registered kind's name, for stats and CallInfo
	Index      int             // index in its pool, the limits' round-robin offset; default 0
	Concurrent bool            // run calls concurrently (asyncio mode) instead of one at a time; default false
	Limits     limits.Provider // limits the worker's methods see through fleet.Limits; default none
	// Stopped is the error calls submitted to a stopping worker fail with (fleet.ErrWorkerStopped, wrapped).
	Stopped error
	// Gate, when set, is asked before each call starts, with the time it starts at; a call it returns an error for
	// fails with it, unrun. A served worker that was frozen or cut off checks with its callers there that they still
	// count on it. It may block. Default nil: every call starts.
	Gate func(t *Task, now time.Time) error
}

// Worker hosts one instance of a kind and runs the calls submitted to it: one at a time in arrival order (actor
// semantics), or concurrently when Options.Concurrent is set. Submit never blocks. A panic in a method becomes that
// call's error and the worker keeps serving.
type Worker struct {
	inst   reflect.Value
	opts   Options
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
	_    [56]byte // callers write held on every call; the worker goroutine alone writes current

	current atomic.Pointer[Task] // the running call, one at a time
	signal  chan struct{}
	exited  chan struct{}
	calls   sync.WaitGroup // concurrent mode: calls in their own goroutines

	stats counters
}

// counters are kept apart by writer: submitted by the callers' goroutines, the rest by the worker's, so the two sides
// do not fight over one cache line on every call. In flight is submitted minus completed.
type counters struct {
	submitted atomic.Int64
	_         [56]byte
	calls     atomic.Int64 // completed
	errors    atomic.Int64
}

// Stats are a worker's counters.
type Stats struct {
	Calls    int64 // calls completed
	Errors   int64 // calls completed with an error
	InFlight int64 // queued or running
	Stopped  bool
}

// Start starts a worker that runs calls on inst, the kind's instance.
func Start(inst reflect.Value, opts Options) *Worker {
	w := &Worker{inst: inst, opts: opts, running: make(map[*Task]struct{}), signal: make(chan struct{}, 1),
		exited: make(chan struct{})}
	if opts.Limits != nil {
		w.limits = opts.Limits.ForWorker(opts.Index)
	}
	go w.loop()
	return w
}

// ID is the worker's unique ID.
func (w *Worker) ID() string { return w.opts.ID }

// Kind is the name of the worker's kind.
func (w *Worker) Kind() string { return w.opts.Kind }

// Index is the worker's index in its pool.
func (w *Worker) Index() int { return w.opts.Index }

// Limits are the limits the worker's methods share with their pool, with the worker's offset; nil for none.
func (w *Worker) Limits() limits.Provider { return w.limits }

// Instance is the hosted object.
func (w *Worker) Instance() reflect.Value { return w.inst }

// Submit queues t behind the calls already submitted. It never blocks. A worker that is stopping replies to t at
// once with an error wrapping Options.Stopped.
func (w *Worker) Submit(t *Task) {
	w.stats.submitted.Add(1)
	w.held.Add(1)
	w.mu.Lock()
	if w.closing {
		w.mu.Unlock()
		w.finish(t, nil, w.stoppedErr(), true)
		return
	}
	w.queue = append(w.queue, t)
	w.mu.Unlock()
	w.wake()
}

func (w *Worker) stoppedErr() error { return fmt.Errorf("%w: %s", w.opts.Stopped, w.opts.ID) }

// RunIfIdle runs t in the calling goroutine, as Submit would run it, when the worker is idle: not stopping, nothing
// queued and no call running (urgent calls aside). It reports whether it ran t; when it did not, the caller Submits
// t instead. A caller that receives calls in order and waits for RunIfIdle before taking the next keeps the worker's
// order: calls it Submits while one runs inline wait for it. It saves the handoff to the worker's goroutine, which
// costs more than a short method. A Concurrent worker never runs a call inline.
func (w *Worker) RunIfIdle(t *Task) bool {
	if w.opts.Concurrent {
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
	t.state.Or(claimed)
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
		w.finish(t, nil, w.stoppedErr(), false)
		return
	}
	w.calls.Add(1)
	w.mu.Unlock()
	t.state.Or(claimed)
	go func() {
		defer w.calls.Done()
		w.exec(t, false)
	}()
}

// Stats returns the worker's counters.
func (w *Worker) Stats() Stats {
	w.mu.Lock()
	stopped := w.closing
	w.mu.Unlock()
	return Stats{Calls: w.stats.calls.Load(), Errors: w.stats.errors.Load(), InFlight: w.stats.inFlight(),
		Stopped: stopped}
}

func (c *counters) inFlight() int64 { return c.submitted.Load() - c.calls.Load() }

// InFlight is the number of calls queued or running.
func (w *Worker) InFlight() int { return int(w.stats.inFlight()) }

// Load is Stats' InFlight and Calls, read without the worker's lock: a served worker reports them on every reply.
func (w *Worker) Load() Stats {
	return Stats{InFlight: w.stats.inFlight(), Calls: w.stats.calls.Load()}
}

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
	w.Abort(w.StoppedError(ctx.Err()))
	return ctx.Err()
}

// StoppedError is the error of the calls a Stop whose context ended with cause did not let finish.
func (w *Worker) StoppedError(cause error) error {
	// The caller sees this worker as package fleet's.
	return fmt.Errorf("fleet: worker %s stopped before the call finished: %w", w.opts.ID, cause)
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
		if t.Claim() {
			w.finish(t, nil, err, true)
		}
	}
	for _, t := range running {
		// Reply before cancelling: a method that returns ctx.Err() at once must not decide the call's error.
		t.Answer(nil, err)
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
			if !t.Claim() {
				continue
			}
			if w.opts.Concurrent {
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
	if t.Replied() {
		w.finish(t, nil, context.Canceled, held)
		return
	}
	if t.Ctx != nil && t.Ctx.Err() != nil {
		w.finish(t, nil, t.Ctx.Err(), held)
		return
	}
	rt, timed := t.Reply.(RunTimer)
	var start time.Time
	if timed || w.opts.Gate != nil {
		start = time.Now() // one clock read serves both: a clock read costs more than a short method on some machines
	}
	if w.opts.Gate != nil {
		if err := w.opts.Gate(t, start); err != nil {
			w.finish(t, nil, err, held)
			return
		}
	}
	if timed {
		res, err := t.Method.Run(w, t)
		rt.Ran(start, time.Now())
		w.finish(t, res, err, held)
		return
	}
	res, err := t.Method.Run(w, t)
	w.finish(t, res, err, held)
}

// Run runs t in the calling goroutine, outside the worker's queue: sync mode runs calls in the caller this way.
func (w *Worker) Run(t *Task) (any, error) { return t.Method.Run(w, t) }

func (w *Worker) finish(t *Task, res any, err error, held bool) {
	if w.opts.Concurrent {
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
	t.Answer(res, err)
}
