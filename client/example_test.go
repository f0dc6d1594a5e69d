package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/natsfleet/natsfleet/balancer"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/fleet"
)

// The guide's first example: a pool of five DataProcessors used like one worker.
func ExampleNew() {
	ctx := context.Background()
	pool, err := client.New(ctx, demo.DataProcessorKind, client.Options{Mode: client.Thread, MaxWorkers: 5}, 10)
	if err != nil {
		panic(err)
	}
	defer pool.Close()

	future := client.Call[int](pool, "Process", 42)
	result, err := future.Result(ctx)
	fmt.Println(result, err)

	stats := pool.Stats()
	fmt.Printf("Pool has %d workers\n", stats.TotalWorkers)
	// Output:
	// 420 <nil>
	// Pool has 5 workers
}

// Round robin sends calls to worker 0, 1, 2, 3, 4, 0, 1, …
func ExampleCall_roundRobin() {
	ctx := context.Background()
	pool, _ := client.New(ctx, demo.DataProcessorKind, client.Options{MaxWorkers: 5, LoadBalancing: "rr"}, 1)
	defer pool.Close()
	for range 7 {
		id, _ := client.Call[demo.Identity](pool, "WhoAmI").Result(ctx)
		fmt.Print(id.Index, " ")
	}
	fmt.Println()
	// Output: 0 1 2 3 4 0 1
}

// With least-active balancing, fast calls avoid the worker stuck on a slow one.
func ExampleOptions_leastActive() {
	ctx := context.Background()
	pool, _ := client.New(ctx, demo.SlowWorkerKind, client.Options{MaxWorkers: 3, LoadBalancing: balancer.LeastActive})
	defer pool.Close()

	slow := client.Call[demo.Identity](pool, "Process", 500*time.Millisecond)
	onSlowWorker := 0
	for range 3 {
		id, _ := client.Call[demo.Identity](pool, "Process", 10*time.Millisecond).Result(ctx)
		if id.Index == 0 {
			onSlowWorker++
		}
	}
	first, _ := slow.Result(ctx)
	fmt.Println("slow call ran on worker", first.Index)
	fmt.Println("fast calls sent to the slow worker:", onSlowWorker)
	// Output:
	// slow call ran on worker 0
	// fast calls sent to the slow worker: 0
}

// Errors keep their identity: match them with errors.Is.
func Example_handlingExceptions() {
	ctx := context.Background()
	pool, _ := client.New(ctx, demo.RiskyWorkerKind, client.Options{MaxWorkers: 5})
	defer pool.Close()

	values := []int{1, 2, -3, 4, -5}
	futures := make([]*client.Future[int], len(values))
	for i, v := range values {
		futures[i] = client.Call[int](pool, "RiskyOperation", v)
	}
	for i, f := range futures {
		result, err := f.Result(ctx)
		if errors.Is(err, demo.ErrNegative) {
			fmt.Printf("Error: %d -> %v\n", values[i], err)
			continue
		}
		fmt.Printf("Success: %d -> %d\n", values[i], result)
	}
	// Output:
	// Success: 1 -> 2
	// Success: 2 -> 4
	// Error: -3 -> demo: negative value not allowed: -3
	// Success: 4 -> 8
	// Error: -5 -> demo: negative value not allowed: -5
}

// A ctx deadline on Result bounds the wait; the call itself goes on.
func Example_timeout() {
	ctx := context.Background()
	pool, _ := client.New(ctx, demo.SlowWorkerKind, client.Options{MaxWorkers: 3})
	defer pool.Close()

	tasks := []*client.Future[demo.Identity]{
		client.Call[demo.Identity](pool, "Process", 50*time.Millisecond),
		client.Call[demo.Identity](pool, "Process", 2*time.Second),
		client.Call[demo.Identity](pool, "Process", 50*time.Millisecond),
	}
	for i, f := range tasks {
		wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, err := f.Result(wctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			fmt.Printf("Task %d: timed out\n", i)
			f.Cancel() // stop it instead of letting it run on
			continue
		}
		fmt.Printf("Task %d: done\n", i)
	}
	// Output:
	// Task 0: done
	// Task 1: timed out
	// Task 2: done
}

// Pool statistics with concurry's keys.
func ExamplePool_Stats() {
	ctx := context.Background()
	pool, _ := client.New(ctx, demo.DataProcessorKind, client.Options{MaxWorkers: 5, LoadBalancing: "active"}, 2)
	defer pool.Close()

	futures := make([]*client.Future[int], 100)
	for i := range futures {
		futures[i] = client.Call[int](pool, "Process", i)
	}
	for _, f := range futures {
		_, _ = f.Result(ctx)
	}
	stats := pool.Stats()
	fmt.Println("Total workers:", stats.TotalWorkers)
	fmt.Println("Max workers:", stats.MaxWorkers)
	fmt.Println("On-demand:", stats.OnDemand)
	fmt.Println("Stopped:", stats.Stopped)
	fmt.Println("Algorithm:", stats.LoadBalancer.Algorithm.Name())
	fmt.Println("Total dispatched:", stats.LoadBalancer.TotalDispatched)
	fmt.Println("Total active:", stats.LoadBalancer.TotalActive)
	// Output:
	// Total workers: 5
	// Max workers: 5
	// On-demand: false
	// Stopped: false
	// Algorithm: LeastActiveLoad
	// Total dispatched: 100
	// Total active: 0
}

// Every algorithm dispatches each call exactly once.
func Example_monitoringLoadDistribution() {
	ctx := context.Background()
	for _, alg := range []balancer.Algorithm{"round_robin", "active", "total", "random"} {
		pool, _ := client.New(ctx, demo.DataProcessorKind, client.Options{MaxWorkers: 3, LoadBalancing: alg}, 2)
		futures := make([]*client.Future[int], 30)
		for i := range futures {
			futures[i] = client.Call[int](pool, "Process", i)
		}
		for _, f := range futures {
			_, _ = f.Result(ctx)
		}
		stats := pool.Stats()
		fmt.Printf("%s: total dispatched %d\n", stats.LoadBalancer.Algorithm.Name(), stats.LoadBalancer.TotalDispatched)
		if alg == "total" {
			fmt.Println("per-worker calls:", stats.LoadBalancer.TotalCalls)
		}
		_ = pool.Close()
	}
	// Output:
	// RoundRobin: total dispatched 30
	// LeastActiveLoad: total dispatched 30
	// LeastTotalLoad: total dispatched 30
	// per-worker calls: map[0:10 1:10 2:10]
	// Random: total dispatched 30
}

// A worker whose method panics reports the panic as that call's error and keeps serving.
func Example_panic() {
	ctx := context.Background()
	pool, _ := client.New(ctx, demo.RiskyWorkerKind, client.Options{Mode: client.Sync})
	defer pool.Close()
	_, err := client.Call[int](pool, "RiskyOperation", -13).Result(ctx)
	var pe *fleet.PanicError
	fmt.Println(errors.As(err, &pe), err)
	v, err := client.Call[int](pool, "RiskyOperation", 21).Result(ctx)
	fmt.Println(v, err)
	// Output:
	// true fleet: method panicked: demo: unlucky value
	// 42 <nil>
}

// OnDone keeps a window of calls in flight, starting the next as each finishes, with no goroutine per call.
func ExampleFuture_OnDone() {
	pool, _ := client.New(context.Background(), demo.DataProcessorKind, client.Options{MaxWorkers: 4}, 10)
	defer pool.Close()

	var sum, failed atomic.Int64
	sem := make(chan struct{}, 8) // at most 8 calls in flight
	for i := range 100 {
		sem <- struct{}{}
		client.Call[int](pool, "Process", i).OnDone(func(v int, err error) {
			if err != nil {
				failed.Add(1)
			}
			sum.Add(int64(v))
			<-sem // the callback runs in the worker's goroutine: quick, never blocking
		})
	}
	for range cap(sem) {
		sem <- struct{}{} // every slot back: every callback has run
	}
	fmt.Println("sum:", sum.Load(), "failed:", failed.Load())
	// Output: sum: 49500 failed: 0
}
