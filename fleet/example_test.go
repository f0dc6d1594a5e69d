package fleet_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/client"
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

// A sentinel a method returns keeps its identity in the caller, whatever process the worker runs in, once both
// sides register it. Here the worker runs on an agent, as it would on another machine of the fleet.
func ExampleRegisterError() {
	srv, err := broker.StartEmbedded(broker.EmbeddedOptions{Port: -1})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect()
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	agent, err := fleet.StartAgent(nc, fleet.AgentOptions{Capacity: 1})
	if err != nil {
		panic(err)
	}
	defer agent.Stop(context.Background())

	ctx := context.Background()
	pool, err := client.New(ctx, CounterKind, client.Options{Mode: client.Fleet, Conn: nc}, 40)
	if err != nil {
		panic(err)
	}
	defer pool.Stop(ctx)
	n, err := client.Call[int](pool, "Add", 2).Result(ctx)
	fmt.Println(n, err)
	_, err = client.Call[int](pool, "Add", -1).Result(ctx)
	var re *fleet.RemoteError
	fmt.Println(errors.Is(err, ErrNegativeStep), errors.As(err, &re))
	// Output:
	// 42 <nil>
	// true true
}
