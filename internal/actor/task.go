package actor

import (
	"context"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/natsfleet/natsfleet/internal/wire"
)

// Method is one callable method of a registered kind, as package fleet resolved it at registration.
type Method interface {
	Name() string
	// Params are the argument types a caller passes (without the context).
	Params() []reflect.Type
	// TakesContext reports whether the method's first parameter is a context.Context.
	TakesContext() bool
	// Exact reports whether args fit the parameters as they are and the method is called without reflection: a Task
	// may then carry them in Values and leave Args nil.
	Exact(args []any) bool
	// Args converts caller arguments to the parameter types; an error matches fleet.ErrBadArguments.
	Args(args []any) ([]reflect.Value, error)
	// BadArguments wraps a decoding error of the method's arguments into an error matching fleet.ErrBadArguments.
	BadArguments(err error) error
	// Run runs t on w's instance in the calling goroutine, with t.Retry's attempts. A panic becomes the call's error.
	Run(w *Worker, t *Task) (any, error)
}

// Replier receives the outcome of a Task. The worker calls Reply exactly once per task.
type Replier interface {
	Reply(t *Task, result any, err error)
}

// RunTimer is implemented by a Replier that wants to know how long its task's method ran (retries included, queue
// wait excluded): a served worker decides from it which calls are short enough to run inline. Other tasks pay no
// clock reads.
type RunTimer interface {
	Ran(start, end time.Time)
}

// RetryPolicy re-runs a failed call on the worker that ran it.
type RetryPolicy struct {
	// Attempts is the total number of runs, the first included; below 2 nothing is retried.
	Attempts int
	// Retry reports whether err is worth another attempt.
	Retry func(err error) bool
	// Wait is the pause before attempt n+1 after n failed attempts (n ≥ 1).
	Wait func(n int) time.Duration
	// Until validates a result; a non-nil error makes the attempt a failure. Nil accepts every result.
	Until func(result any) error
	// Sleep waits d or until ctx ends; nil sleeps on the real clock. Tests inject a clock here.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Task is one call handed to a Worker. Callers embed it in their own call record, so that submitting a call costs no
// allocation of its own.
type Task struct {
	Ctx    context.Context    // the call's context; nil means context.Background()
	Cancel context.CancelFunc // optional: cancels Ctx; the worker calls it when it aborts the task
	Method Method
	// Args are the arguments converted to the method's parameter types. When nil, the method takes Values: as they
	// are when they fit exactly (Method.Exact), converted otherwise.
	Args   []reflect.Value
	Values []any
	CallID string
	// Progress receives the progress events of bars the method starts (fleet.Progress); nil discards them.
	Progress func(wire.Progress)
	// Retry re-runs the call when it fails; nil runs it once.
	Retry *RetryPolicy
	Reply Replier

	// state holds the flags below in one word, and bars numbers the progress bars the method starts: a pipeline
	// holds a task per call in flight, so the record stays small.
	state atomic.Uint32
	bars  atomic.Int32
}

const (
	replied uint32 = 1 << iota // answered
	claimed                    // taken to run, or failed by Abort: whichever comes first
)

// Claim takes the task to run or to fail; it reports false when it was taken already.
func (t *Task) Claim() bool { return t.state.Or(claimed)&claimed == 0 }

// Replied reports whether the task has been answered: a task answered before it started was cancelled.
func (t *Task) Replied() bool { return t.state.Load()&replied != 0 }

// Answer replies to the task once; later answers are dropped.
func (t *Task) Answer(result any, err error) {
	if t.state.Or(replied)&replied == 0 {
		t.Reply.Reply(t, result, err)
	}
}

// NextBar numbers a progress bar the task's method starts: 1, 2, …
func (t *Task) NextBar() int32 { return t.bars.Add(1) }
