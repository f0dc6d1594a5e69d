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
)

// call is one method call's record from submission to completion. It embeds the fleet.Task handed to in-process
// workers, and is itself embedded in the Future, so a call costs one allocation for all three; what only remote or
// CallCtx calls need lives behind pointers, to keep the common record small.
type call struct {
	fleet.Task
	pool     *Pool
	method   string
	args     []any
	priority int
	seq      uint64 // arrival order, for the queue
	slot     int    // balancer slot while dispatched, -1 otherwise
	worker   string // ID of the worker it was sent to
	state    atomic.Uint32
	ownCtx   bool // Task.Ctx was made for this call and Task.Cancel cancels it
	val      any
	raw      []byte // remote result, decoded lazily into the future's type
	codec    codec.Codec
	err      error
	rc       *remoteCall // remote modes
	cx       *callCtx    // CallCtx
	mu       sync.Mutex  // guards done and watchers
	done     chan struct{}
	watchers []func() // run once when done (Gather, Wait, AsCompleted)
}

// remoteCall is what a call to a worker in another process carries.
type remoteCall struct {
	body     []byte        // encoded arguments
	rh       atomic.Pointer[remoteHandle] // the worker it was sent to
	muxN     uint64        // its reply mux entry
	deadline time.Time     // sent as Fleet-Deadline
	attempt  int                    // retries: attempts made
	verr     *fleet.ValidationError // retries: refused results so far
}

// callCtx ties a call to the caller's context.
type callCtx struct {
	ctx  context.Context
	stop func() bool // stops the watch on ctx
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

// Reply implements fleet.Replier for in-process workers.
func (c *call) Reply(_ *fleet.Task, res any, err error) { c.complete(res, nil, err) }

// complete resolves the call once; later completions (a result arriving after a cancel) are dropped.
func (c *call) complete(val any, raw []byte, err error) bool {
	if !c.state.CompareAndSwap(callPending, callCompleting) {
		return false
	}
	c.val, c.raw, c.err = val, raw, err
	c.state.Store(callDone)
	c.mu.Lock()
	ch, ws := c.done, c.watchers
	c.watchers = nil
	c.mu.Unlock()
	if ch != nil {
		close(ch)
	}
	for _, w := range ws {
		w()
	}
	if c.ownCtx {
		c.Cancel()
	}
	if c.cx != nil {
		c.cx.stop()
	}
	if c.pool != nil {
		c.pool.finished(c)
	}
	return true
}

func (c *call) isDone() bool { return c.state.Load() == callDone }

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
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		if c.isDone() {
			return closedChan
		}
		c.done = make(chan struct{})
	}
	return c.done
}

// whenDone runs f once the call is done: at once if it already is.
func (c *call) whenDone(f func()) {
	c.mu.Lock()
	if c.isDone() {
		c.mu.Unlock()
		f()
		return
	}
	c.watchers = append(c.watchers, f)
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
	once    sync.Once
	result  T
	decErr  error
	decoded bool
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
		select {
		case <-f.doneChan():
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		}
	}
	return f.get()
}

// Cancel cancels the call: a queued call is never sent, a running one has its method's context cancelled, wherever
// it runs. The future fails with context.Canceled at once; a result that arrives later is dropped. Cancel reports
// whether the future was still pending.
func (f *Future[T]) Cancel() bool { return f.cancel(context.Canceled) }

func (c *call) cancel(cause error) bool {
	if !c.complete(nil, nil, cause) {
		return false
	}
	if c.pool != nil {
		c.pool.cancelRemote(c)
	}
	return true
}

func (f *Future[T]) base() *call { return &f.call }

func (f *Future[T]) get() (T, error) {
	if f.err != nil {
		var zero T
		return zero, f.err
	}
	f.once.Do(f.decode)
	return f.result, f.decErr
}

func (f *Future[T]) decode() {
	switch {
	case f.raw != nil:
		f.decErr = f.codec.Unmarshal(f.raw, &f.result)
		if f.decErr != nil {
			f.decErr = fmt.Errorf("client: decode result of %s into %T: %w", f.method, f.result, f.decErr)
		}
	case f.val == nil:
	default:
		if v, ok := f.val.(T); ok {
			f.result = v
			return
		}
		t := reflect.TypeFor[T]()
		if v, ok := fleet.Coerce(reflect.ValueOf(f.val), t); ok {
			f.result = v.Interface().(T)
			return
		}
		f.decErr = fmt.Errorf("%w: result of %s is %T, not assignable to %s", ErrResultType, f.method, f.val, t)
	}
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
	if f.raw != nil && reflect.TypeFor[T]().Kind() == reflect.Interface {
		// A remote result travelling on to another call keeps its encoding; it is decoded into the next method's
		// parameter type, not guessed.
		return rawValue{raw: f.raw, codec: f.codec}, nil
	}
	return f.value()
}

// rawValue is an encoded result passed as an argument to another call.
type rawValue struct {
	raw   []byte
	codec codec.Codec
}
