package limits_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/limits"
)

// The seed's "Shared Rate Limiting": every worker of a pool acquires from one
// set, so 100 calls and 1000 tokens per minute hold for the pool as a whole.
// A worker names the tokens it expects to use, then reports what it used.
func Example_sharedRateLimiting() {
	set, err := limits.NewSet(limits.SetOptions{},
		limits.CallLimit{Window: time.Minute, Capacity: 100},
		limits.RateLimit{Key: "tokens", Window: time.Minute, Capacity: 1000, Algorithm: limits.TokenBucket})
	if err != nil {
		panic(err)
	}
	defer set.Close()

	callAPI := func(ctx context.Context, prompt string) error {
		acq, err := set.Acquire(ctx, limits.Request{"tokens": 100})
		if err != nil {
			return err
		}
		defer acq.Release()
		used := float64(len(prompt)) // the real count comes back with the response
		return acq.Update(limits.Usage{"tokens": used})
	}

	var wg sync.WaitGroup
	for i := range 10 { // ten workers share the budget
		wg.Go(func() {
			if err := callAPI(context.Background(), fmt.Sprintf("Request %d", i)); err != nil {
				fmt.Println(err)
			}
		})
	}
	wg.Wait()
	st := set.Stats()
	fmt.Printf("calls left: %v\n", st["call_count"].Available)
	fmt.Printf("tokens left: at least %v\n", st["tokens"].Available >= 1000-10*9)
	// Output:
	// calls left: 90
	// tokens left: at least true
}

// The seed's "Resource Pooling": 20 workers, 5 database connections. A
// ResourceLimit is taken with 1 by every acquisition that does not name it.
func Example_resourcePooling() {
	set, err := limits.NewSet(limits.SetOptions{}, limits.ResourceLimit{Key: "connections", Capacity: 5})
	if err != nil {
		panic(err)
	}
	defer set.Close()

	var inUse, most atomic.Int32
	query := func(ctx context.Context) error {
		acq, err := set.Acquire(ctx, nil) // waits for a free connection
		if err != nil {
			return err
		}
		defer acq.Release()
		n := inUse.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(5 * time.Millisecond) // the query
		inUse.Add(-1)
		return nil
	}

	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() { query(context.Background()) })
	}
	wg.Wait()
	fmt.Println("most queries at once:", most.Load())
	// Output: most queries at once: 5
}

// The seed's "Per-Worker vs Shared Limits": a set per worker gives each
// worker its own 10 calls per second; one set given to every worker gives
// them 10 calls per second together.
func Example_perWorkerVsShared() {
	ctx := context.Background()
	calls := limits.CallLimit{Window: time.Second, Capacity: 10}
	admitted := func(providers []limits.Provider) int {
		n := 0
		for _, p := range providers {
			for range 10 {
				if _, err := p.TryAcquire(ctx, nil); err == nil {
					n++
				}
			}
		}
		return n
	}

	var perWorker []limits.Provider
	for range 5 {
		s, _ := limits.NewSet(limits.SetOptions{}, calls)
		defer s.Close()
		perWorker = append(perWorker, s)
	}
	shared, _ := limits.NewSet(limits.SetOptions{}, calls)
	defer shared.Close()
	sharedByAll := []limits.Provider{shared, shared, shared, shared, shared}

	fmt.Println("per-worker sets:", admitted(perWorker), "calls in the first second")
	fmt.Println("one shared set:", admitted(sharedByAll), "calls in the first second")
	// Output:
	// per-worker sets: 50 calls in the first second
	// one shared set: 10 calls in the first second
}

// A named set on a NATS connection is shared by every process that names it:
// here two sets, as two processes would have, share one budget through
// JetStream KV.
func ExampleNewSet_shared() {
	dir, _ := os.MkdirTemp("", "limits-example")
	defer os.RemoveAll(dir)
	srv, _ := server.NewServer(&server.Options{Port: server.RANDOM_PORT, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	go srv.Start()
	defer srv.WaitForShutdown()
	defer srv.Shutdown()
	srv.ReadyForConnections(10 * time.Second)

	ctx := context.Background()
	var conns []*nats.Conn
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	open := func() *limits.Set { // one per process in real life
		nc, err := nats.Connect(srv.ClientURL())
		if err != nil {
			panic(err)
		}
		conns = append(conns, nc)
		s, err := limits.NewSet(limits.SetOptions{Name: "openai", Conn: nc},
			limits.CallLimit{Window: time.Minute, Capacity: 3},
			limits.ResourceLimit{Key: "connections", Capacity: 2})
		if err != nil {
			panic(err)
		}
		return s
	}
	a, b := open(), open()
	defer a.Close()
	defer b.Close()

	for _, s := range []*limits.Set{a, b, a} {
		acq, err := s.Acquire(ctx, limits.Request{"connections": 0})
		if err != nil {
			panic(err)
		}
		acq.Release()
	}
	_, err := b.TryAcquire(ctx, limits.Request{"connections": 0})
	fmt.Println("fourth call:", errors.Is(err, limits.ErrWouldWait))
	// Output: fourth call: true
}

// A budget per customer: a limit declared PerPartition gives each partition
// of the set, named by AcquireIn, its own budget, made the first time it is
// named and forgotten once nothing in it counts any more.
func ExampleSet_AcquireIn() {
	set, err := limits.NewSet(limits.SetOptions{},
		limits.CallLimit{Window: time.Minute, Capacity: 2, PerPartition: true},
		limits.ResourceLimit{Key: "connections", Capacity: 1, PerPartition: true})
	if err != nil {
		panic(err)
	}
	defer set.Close()

	ctx := context.Background()
	for _, customer := range []string{"acme", "acme", "acme", "globex"} {
		acq, err := set.TryAcquireIn(ctx, customer, nil) // a call and a connection of this customer's
		if errors.Is(err, limits.ErrWouldWait) {
			fmt.Println(customer+":", "over its budget")
			continue
		}
		fmt.Println(customer+":", "admitted")
		acq.Release()
	}
	fmt.Println("acme calls left:", set.StatsIn("acme")["call_count"].Available)
	fmt.Println("globex calls left:", set.StatsIn("globex")["call_count"].Available)
	fmt.Println("partitions:", set.Stats()["call_count"].Extra["partitions"])
	// Output:
	// acme: admitted
	// acme: admitted
	// acme: over its budget
	// globex: admitted
	// acme calls left: 0
	// globex calls left: 1
	// partitions: 2
}

// A pool spreads acquisitions over sets, for example one per account; each
// worker's view starts its round robin at its own index.
func ExampleNewPool() {
	ctx := context.Background()
	var regions []*limits.Set
	for range 3 {
		s, _ := limits.NewSet(limits.SetOptions{}, limits.CallLimit{Window: time.Minute, Capacity: 100})
		defer s.Close()
		regions = append(regions, s)
	}
	pool, err := limits.NewPool(limits.PoolOptions{}, regions...)
	if err != nil {
		panic(err)
	}
	worker2 := pool.ForWorker(2)
	for range 4 {
		worker2.Acquire(ctx, nil)
	}
	for i, s := range regions {
		fmt.Printf("region %d: %v calls\n", i, s.Stats()["call_count"].Extra["current_requests"])
	}
	// Output:
	// region 0: 1 calls
	// region 1: 1 calls
	// region 2: 2 calls
}

// Update reports what was actually used: token bucket and GCRA give the rest
// back on Release. Release always returns what it can, and says which
// updates were missing.
func ExampleAcquisition_Update() {
	ctx := context.Background()
	clock := func() time.Time { return time.Unix(0, 0) } // frozen: no refill in this example
	set, _ := limits.NewSet(limits.SetOptions{Clock: clock},
		limits.RateLimit{Key: "tokens", Window: time.Minute, Capacity: 1000, Algorithm: limits.GCRA})
	defer set.Close()

	acq, _ := set.Acquire(ctx, limits.Request{"tokens": 300})
	acq.Update(limits.Usage{"tokens": 120})
	acq.Release()
	fmt.Println("after using 120 of 300:", set.Stats()["tokens"].Available)

	acq, _ = set.Acquire(ctx, limits.Request{"tokens": 300})
	err := acq.Release() // the call failed before Update
	fmt.Println(err)
	fmt.Println("counted as used:", set.Stats()["tokens"].Available)
	// Output:
	// after using 120 of 300: 880
	// limits: acquisition released without update of ["tokens"] (counted as fully used)
	// counted as used: 580
}

// Limits travel to child processes and remote agents as JSON.
func ExampleMarshalLimits() {
	b, _ := limits.MarshalLimits([]limits.Limit{
		limits.CallLimit{Window: time.Minute, Capacity: 100},
		limits.ResourceLimit{Key: "connections", Capacity: 5},
	})
	fmt.Println(string(b))
	ls, _ := limits.UnmarshalLimits(b)
	fmt.Println(len(ls), ls[1].LimitKey())
	// Output:
	// [{"type":"call_limit","window":60,"capacity":100,"algorithm":"sliding_window"},{"type":"resource_limit","key":"connections","capacity":5}]
	// 2 connections
}
