package fleet_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/natsfleet/natsfleet/fleet"
)

// Counter is a worker: a stateful object whose exported methods are called one at a time.
type Counter struct{ n int }

func NewCounter(start int) *Counter { return &Counter{n: start} }

// Add adds d and returns the new count.
func (c *Counter) Add(ctx context.Context, d int) (int, error) {
	if d < 0 {
		return c.n, ErrNegativeStep
	}
	c.n += d
	return c.n, nil
}

var ErrNegativeStep = errors.New("counter: negative step")

// Registering at package level lets every process that links this package build Counters by name.
var CounterKind = fleet.Register("ExampleCounter", NewCounter)

func init() { fleet.RegisterError(ErrNegativeStep) }

func ExampleRegister() {
	fmt.Println(CounterKind.Name(), CounterKind.Methods())
	k, err := fleet.Lookup("ExampleCounter")
	fmt.Println(k == CounterKind, err)
	// Output:
	// ExampleCounter [Add]
	// true <nil>
}

// A Worker hosts one instance; Run executes a call in the calling goroutine (Submit queues it behind others).
func ExampleKind_Start() {
	w, err := CounterKind.Start(fleet.WorkerOptions{ID: "c1"}, 40)
	if err != nil {
		panic(err)
	}
	defer w.Stop(context.Background())
	add, _ := CounterKind.Method("Add")
	args, _ := add.Args([]any{2})
	n, err := w.Run(&fleet.Task{Method: add, Args: args})
	fmt.Println(n, err)

	_, err = CounterKind.Method("Sub")
	fmt.Println(errors.Is(err, fleet.ErrUnknownMethod))
	_, err = add.Args([]any{"two"})
	fmt.Println(err)
	// Output:
	// 42 <nil>
	// true
	// fleet: bad arguments ExampleCounter.Add: argument 0: string is not assignable to int; expected (int)
}

// An error crossing a process boundary keeps its identity when it is registered.
func ExampleRegisterError() {
	wire := fleet.EncodeError(fmt.Errorf("step -1: %w", ErrNegativeStep))
	err := fleet.DecodeError(wire)
	fmt.Println(wire.Code, errors.Is(err, ErrNegativeStep))
	// Output: counter: negative step true
}
