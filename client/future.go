package client

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/actor"
	"github.com/natsfleet/natsfleet/internal/msgp"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// call is one method call's record from submission to completion. It embeds the actor.Task handed to in-process
// workers, and is itself embedded in the Future, so a call costs one allocation for all three; what only remote or
// CallCtx calls need lives behind pointers, to keep the common record small: a pipeline of 100k calls holds 100k of
// them. The caller's arguments are Task.Values.
type call struct {
	actor.Task
	pool     *Pool
	method   string
	slot     int32 // balancer slot while dispatched, -1 otherwise
	priority int32
	state    atomic.Uint32
	waited   atomic.Bool // doneChan or whenDone was called: completion must look at done and watchers
	val      any         // the result: an in-process one, or a remote one once decoded
	err      error
	rc       *remoteCall   // remote modes
	ext      *callExt      // CallCtx, Gather, Wait, AsCompleted
	mu       sync.Mutex    // guards done, waiter, ext.watchers and ext.stop
	waiter   chan struct{} // Result's pooled wake-up channel, when it waits alone
	done     chan struct{}
}

// callExt holds what few calls need.
type callExt struct {
	ctx      context.Context // CallCtx: the caller's context
	stop     func() bool     // stops the watch on ctx
	watchers []func()        // run once when done
}

// remoteCall is what a call to a worker in another process carries.
type remoteCall struct {
	id         uint64                       // its call ID is the reply mux's id and this in base 36 (callID)
	body       []byte                       // encoded arguments
	w          atomic.Pointer[remoteWorker] // the worker it was sent to
	muxN       atomic.Uint64                // its reply mux entry while filed there, 0 once removed
	deadline   int64                        // sent as Fleet-Deadline: Unix nanoseconds, 0 for none
	verr       *fleet.ValidationError       // retries: refused results so far
	raw        []byte                       // the result, decoded lazily into the future's type (a *T in call.val)
	codec      codec.Codec
	decErr     error        // why raw did not decode
	attempt    int32        // retries: attempts made
	sentAt     atomic.Int64 // Unix nanoseconds of its first publication; 0 while it waits in the outbox
	urgent     bool         // Broadcast: run at once, beside the worker's current call, on its control subject
	resend     bool         // sent again after a reconcile found the worker never received it (wire.HeaderResend)
	idempotent bool         // CallOptions.Idempotent: it fails over when its worker is lost
	decoded    bool         // raw has been decoded, under call.mu
	endsRun    bool         // the last call of its worker's run (runs.go): what its worker holds back leaves with it
}

// deadlineHeader is the call's Fleet-Deadline value; "" for none.
func (rc *remoteCall) deadlineHeader() string {
	if rc.deadline == 0 {
		return ""
	}
	return wire.FormatDeadline(time.Unix(0, rc.deadline))
}

const (
	callPending    uint32 = iota
	callCompleting        // the first completer is writing the outcome
	callDone              // the outcome is readable
)

// closedChan is the Done channel of calls that completed before anyone asked for one.
var closedChan = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

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

// callID is the call's ID. A remote call's is made when asked for, which only cancels, progress events and calls
// sent alone do.
func (c *call) callID() string {
	if c.rc != nil {
		if w := c.rc.w.Load(); w != nil { // stored after the ID
			return string(w.t.mux.appendCallID(nil, c.rc.id))
		}
	}
	return c.CallID
}

// Reply implements actor.Replier for in-process workers.
func (c *call) Reply(_ *actor.Task, res any, err error) { c.complete(res, err) }

// complete resolves the call once; later completions (a result arriving after a cancel) are dropped.
func (c *call) complete(val any, err error) bool {
	if !c.state.CompareAndSwap(callPending, callCompleting) {
		return false
	}
	c.val, c.err = val, err
	c.resolved()
	return true
}

// completeRemote resolves the call with an encoded result (raw, in codec cd) or an error.
func (c *call) completeRemote(cd codec.Codec, raw []byte, err error) bool {
	if !c.state.CompareAndSwap(callPending, callCompleting) {
		return false
	}
	c.err = err
	if err == nil {
		c.rc.raw, c.rc.codec = raw, cd
	}
	c.resolved()
	return true
}

// resolved publishes the outcome just written and runs what waits for it.
func (c *call) resolved() {
	// The pool's bookkeeping comes first, so that whoever sees the call done also sees its slot freed; the call is
	// counted out last, so that Stop returns only when every accepted future is done.
	if c.pool != nil {
		c.pool.finished(c)
	}
	c.state.Store(callDone)
	// Only a call someone waits on (doneChan, whenDone) has a channel to close or watchers to run; the flag spares
	// every other call the lock. Each side writes its flag before it reads the other's, so they cannot miss each
	// other.
	if c.waited.Load() {
		c.mu.Lock()
		ch, w := c.done, c.waiter
		c.waiter = nil
		var ws []func()
		if c.ext != nil {
			ws, c.ext.watchers = c.ext.watchers, nil
		}
		c.mu.Unlock()
		if ch != nil {
			close(ch)
		}
		if w != nil {
			w <- struct{}{} // buffered: never blocks
		}
		for _, w := range ws {
			w()
		}
	}
	if c.Cancel != nil { // set only for a context made for this call
		c.Cancel()
	}
	if c.ext != nil {
		c.mu.Lock()
		stop := c.ext.stop
		c.ext.stop = nil
		c.mu.Unlock()
		if stop != nil {
			stop()
		}
	}
	if c.pool != nil {
		c.pool.leave()
	}
}

func (c *call) isDone() bool { return c.state.Load() == callDone }

// settled reports whether the call has been completed, its outcome perhaps still being published.
func (c *call) settled() bool { return c.state.Load() != callPending }

// doneChan returns the channel closed at completion, made only when someone waits: most calls in a pipeline are
// done before their result is asked for and never need one.
func (c *call) doneChan() <-chan struct{} {
	if c.isDone() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.done != nil {
			return c.done
		}
		return closedChan
	}
	c.waitingFor()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waited.Store(true)
	if c.done == nil {
		if c.isDone() {
			return closedChan
		}
		c.done = make(chan struct{})
	}
	return c.done
}

// waiters are reusable wake-up channels for Result, so a caller waiting on a call it alone waits for needs no new
// channel per call (a Done channel, once closed, cannot serve again).
var waiters = sync.Pool{New: func() any { return make(chan struct{}, 1) }}

// waitingFor tells the call's pool that a caller is about to wait for it.
func (c *call) waitingFor() {
	if c.pool != nil {
		c.pool.waiting()
	}
}

// wait blocks until the call is done.
func (c *call) wait() {
	c.waitingFor()
	c.mu.Lock()
	c.waited.Store(true)
	if c.isDone() {
		c.mu.Unlock()
		return
	}
	if c.done != nil || c.waiter != nil {
		// Someone else waits, or asked for Done: share the channel closed at completion.
		if c.done == nil {
			c.done = make(chan struct{})
		}
		ch := c.done
		c.mu.Unlock()
		<-ch
		return
	}
	w := waiters.Get().(chan struct{})
	c.waiter = w
	c.mu.Unlock()
	<-w
	waiters.Put(w)
}

// whenDone runs f once the call is done: at once if it already is.
func (c *call) whenDone(f func()) {
	c.waitingFor()
	c.mu.Lock()
	c.waited.Store(true)
	if c.isDone() {
		c.mu.Unlock()
		f()
		return
	}
	if c.ext == nil {
		c.ext = &callExt{}
	}
	c.ext.watchers = append(c.ext.watchers, f)
	c.mu.Unlock()
}

// Awaitable is what Gather, Wait and AsCompleted accept: a *Future of any result type from any pool.
type Awaitable interface {
	// Done is closed when the call has completed.
	Done() <-chan struct{}
	// Err is the call's error once done (nil before).
	Err() error
	// Cancel cancels the call; it reports whether the call was still pending.
	Cancel() bool
	// value is the result as the future's type, boxed.
	value() (any, error)
	// arg is the result as an argument of another call.
	arg() (any, error)
	base() *call
}

// Future is the pending result of a call. Its methods are safe for concurrent use.
type Future[T any] struct {
	call
}

// Done is closed when the call has completed (successfully, with an error, or cancelled).
func (f *Future[T]) Done() <-chan struct{} { return f.doneChan() }

// Err returns the call's error once it is done; nil while pending or on success.
func (f *Future[T]) Err() error {
	if !f.isDone() {
		return nil
	}
	if f.err != nil {
		return f.err
	}
	_, err := f.get()
	return err
}

// Result waits for the call and returns its result. When ctx ends first it returns ctx's error and the call goes
// on (use Cancel to stop it).
func (f *Future[T]) Result(ctx context.Context) (T, error) {
	if !f.isDone() {
		if cd := ctx.Done(); cd == nil {
			f.wait() // a context that never ends needs no select
		} else {
			select {
			case <-f.doneChan():
			case <-cd:
				var zero T
				return zero, ctx.Err()
			}
		}
	}
	return f.get()
}

// OnDone arranges for fn to receive the call's result once the call is done, as concurry's add_done_callback does:
// at once, in the calling goroutine, when it already is; otherwise in the goroutine that completes the call: the
// worker's in thread mode, the one reading the pool's replies in process and fleet modes. So fn must be quick and
// must not block, as a nats.go message handler must not; in particular it must not wait for another remote call,
// whose reply would come through the goroutine it holds. Hand slow work to a goroutine of your own. A future's
// callbacks run in the order they were registered, after its Done channel is closed; Stop, which waits for the calls
// it accepted, waits for the callbacks registered by then too. OnDone counts as waiting for the call: calls held
// back to travel together with it leave at once.
func (f *Future[T]) OnDone(fn func(T, error)) { f.whenDone(func() { fn(f.get()) }) }

// Cancel cancels the call: a queued call is never sent, a running one has its method's context cancelled, wherever
// it runs. The future fails with context.Canceled at once; a result that arrives later is dropped. Cancel reports
// whether the future was still pending.
func (f *Future[T]) Cancel() bool { return f.cancel(context.Canceled) }

func (c *call) cancel(cause error) bool {
	if !c.complete(nil, cause) {
		return false
	}
	if c.pool != nil {
		c.pool.cancelled(c)
	}
	return true
}

func (f *Future[T]) base() *call { return &f.call }

func (f *Future[T]) get() (T, error) {
	if f.err != nil {
		var zero T
		return zero, f.err
	}
	if f.rc == nil || f.rc.raw == nil {
		return f.local()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	rc := f.rc
	if !rc.decoded {
		rc.decoded = true
		// Decoded into a T of its own, kept by pointer: an interface holds a pointer without another allocation.
		v := new(T)
		var err error
		if x, ok := decodeInteger[T](rc.codec, rc.raw); ok {
			*v = x
		} else {
			err = rc.codec.Unmarshal(rc.raw, v)
		}
		if err != nil {
			rc.decErr = fmt.Errorf("client: decode result of %s into %T: %w", f.method, *v, err)
		} else {
			f.val = v
		}
	}
	if v, ok := f.val.(*T); ok {
		return *v, rc.decErr
	}
	var zero T
	return zero, rc.decErr
}

// decodeInteger decodes an int or int64 result without the msgpack decoder (msgp.DecodeInteger).
func decodeInteger[T any](cd codec.Codec, raw []byte) (T, bool) {
	if cd != codec.Msgpack {
		var zero T
		return zero, false
	}
	return msgp.DecodeInteger[T](raw)
}

// local reads an in-process result as T: as it is, or coerced where Go would convert without loss.
func (f *Future[T]) local() (T, error) {
	var zero T
	if f.val == nil {
		return zero, nil
	}
	if v, ok := f.val.(T); ok {
		return v, nil
	}
	t := reflect.TypeFor[T]()
	if v, ok := actor.Coerce(reflect.ValueOf(f.val), t); ok {
		return v.Interface().(T), nil
	}
	return zero, fmt.Errorf("%w: result of %s is %T, not assignable to %s", ErrResultType, f.method, f.val, t)
}

func (f *Future[T]) value() (any, error) {
	v, err := f.get()
	if err != nil {
		return nil, err
	}
	return v, nil
}

func (f *Future[T]) arg() (any, error) {
	if f.err != nil {
		return nil, f.err
	}
	if f.rc != nil && f.rc.raw != nil && reflect.TypeFor[T]().Kind() == reflect.Interface {
		// A remote result travelling on to another call keeps its encoding; it is decoded into the next method's
		// parameter type, not guessed.
		return rawValue{raw: f.rc.raw, codec: f.rc.codec}, nil
	}
	return f.value()
}

// rawValue is an encoded result passed as an argument to another call.
type rawValue struct {
	raw   []byte
	codec codec.Codec
}
