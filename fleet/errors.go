package fleet

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/natsfleet/natsfleet/internal/wire"
)

// Errors of workers and agents. They keep their identity across processes: a caller matches them with errors.Is
// whatever mode the worker runs in.
var (
	// ErrUnknownMethod: the kind has no callable method of that name.
	ErrUnknownMethod = errors.New("fleet: unknown method")
	// ErrBadArguments: the arguments do not fit the method's parameters (count or types), or could not be decoded.
	ErrBadArguments = errors.New("fleet: bad arguments")
	// ErrUnknownKind: no kind is registered under that name in the process that was asked to build it.
	ErrUnknownKind = errors.New("fleet: unknown kind")
	// ErrWorkerStopped: the worker was stopped before it ran the call.
	ErrWorkerStopped = errors.New("fleet: worker stopped")
	// ErrPayloadTooLarge: a message exceeded the connection's maximum payload.
	ErrPayloadTooLarge = errors.New("fleet: payload too large")
	// ErrMalformed: a message to a worker could not be read (bad headers or body).
	ErrMalformed = errors.New("fleet: malformed message")
	// ErrNoCapacity: an agent refused to start a worker because all the capacity it offers is in use.
	ErrNoCapacity = errors.New("fleet: agent has no free capacity")
)

// MethodError says which method of which kind a call failed on; it matches its Err (ErrUnknownMethod,
// ErrBadArguments, ErrMalformed) with errors.Is.
type MethodError struct {
	Kind, Method string
	Err          error
	Detail       string
}

func (e *MethodError) Error() string {
	s := e.Err.Error() + " " + e.Kind + "." + e.Method
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

func (e *MethodError) Unwrap() error { return e.Err }

// PanicError is what a call returns when its method panicked; the worker keeps serving.
type PanicError struct {
	Value any
	Stack string
}

func newPanicError(v any) *PanicError { return &PanicError{Value: v, Stack: string(debug.Stack())} }

func (e *PanicError) Error() string { return fmt.Sprintf("fleet: method panicked: %v", e.Value) }

// Unwrap lets errors.Is see an error value the method panicked with.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// RemoteError is an error that crossed a process boundary: the worker's error type name, message and, for panics,
// the worker's stack. When the worker's error matched a sentinel registered with RegisterError on both sides,
// errors.Is(remoteErr, thatSentinel) holds.
type RemoteError struct {
	Type    string
	Message string
	Stack   string
	Code    string // the registered sentinel's name on the wire; "" for none
	Err     error  // the registered sentinel, or nil
}

func (e *RemoteError) Error() string { return e.Message }

func (e *RemoteError) Unwrap() error { return e.Err }

func init() {
	for _, e := range []struct {
		code string
		err  error
	}{
		{"fleet.ErrUnknownMethod", ErrUnknownMethod},
		{"fleet.ErrBadArguments", ErrBadArguments},
		{"fleet.ErrUnknownKind", ErrUnknownKind},
		{"fleet.ErrWorkerStopped", ErrWorkerStopped},
		{"fleet.ErrPayloadTooLarge", ErrPayloadTooLarge},
		{"fleet.ErrMalformed", ErrMalformed},
		{"fleet.ErrNoCapacity", ErrNoCapacity},
		{"context.Canceled", context.Canceled},
		{"context.DeadlineExceeded", context.DeadlineExceeded},
	} {
		wire.RegisterSentinel(e.code, e.err)
	}
}

// RegisterError makes a sentinel error keep its identity across processes: a method that returns it (or wraps it)
// in a worker process gives the caller an error for which errors.Is(err, sentinel) holds. Both sides must register
// it, as package-level code does when the worker binary and the client share the package that declares it.
// The error's message is its identity on the wire, so two registered sentinels must not share a message;
// RegisterError panics then, as it does for a nil error.
func RegisterError(sentinel error) {
	if sentinel == nil {
		panic("fleet: RegisterError(nil)")
	}
	wire.RegisterSentinel(sentinel.Error(), sentinel)
}

// encodeError describes err for the wire.
func encodeError(err error) wire.Error {
	e := wire.Error{Type: fmt.Sprintf("%T", err), Message: err.Error()}
	var re *RemoteError
	if errors.As(err, &re) {
		// An error relayed from another worker keeps its original description.
		e.Type, e.Stack, e.Code = re.Type, re.Stack, re.Code
		return e
	}
	var pe *PanicError
	if errors.As(err, &pe) {
		e.Stack = pe.Stack
	}
	e.Code = wire.SentinelCode(err)
	return e
}

// decodeError rebuilds an error from its wire description.
func decodeError(e wire.Error) error {
	return &RemoteError{Type: e.Type, Message: e.Message, Stack: e.Stack, Code: e.Code, Err: wire.Sentinel(e.Code)}
}
