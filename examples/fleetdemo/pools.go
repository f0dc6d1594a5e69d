package main

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/natsfleet/natsfleet/balancer"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/fleet"
)

// 1. The guide's basic example: a pool of five DataProcessors used like one worker.
func threadPool(ctx context.Context, d *runner) {
	pool := d.newPool(ctx, demo.DataProcessorKind,
		client.Options{Mode: client.Thread, MaxWorkers: 5, LoadBalancing: balancer.LeastActive}, 10)
	if pool == nil {
		return
	}
	defer d.stop(pool, "DataProcessor thread pool")

	v, err := client.Call[int](pool, "Process", 42).Result(ctx)
	d.printf("pool.Process(42) = %d", v)
	d.expect(err == nil && v == 420, "Process(42) = %d, %v; want 420", v, err)

	futs := make([]*client.Future[int], 100)
	for i := range futs {
		futs[i] = client.Call[int](pool, "Process", i)
	}
	res, err := client.Gather(ctx, futs)
	if !d.failed("gather 100 calls", err) {
		bad := 0
		for i, r := range res {
			if r != i*10 {
				bad++
			}
		}
		d.printf("100 calls: results[0..4] = %v … results[99] = %d", res[:5], res[99])
		d.expect(bad == 0, "%d of 100 results wrong", bad)
	}

	// Each worker counts what it processed; Broadcast asks every one of them.
	var counts []int
	for _, f := range pool.Broadcast("Processed") {
		n, err := f.Result(ctx)
		if d.failed("Processed", err) {
			return
		}
		counts = append(counts, n.(int))
	}
	sum := 0
	for _, n := range counts {
		sum += n
	}
	d.printf("values processed per worker: %v (sum %d)", counts, sum)
	d.expect(sum == 101, "workers processed %d values, want 101", sum)

	s := d.stats("DataProcessor thread pool", pool)
	d.printf("Pool has %d workers; algorithm %s; total dispatched %d; total active %d", s.TotalWorkers,
		s.LoadBalancer.Algorithm.Name(), s.LoadBalancer.TotalDispatched, s.LoadBalancer.TotalActive)
	d.expect(s.TotalWorkers == 5 && s.MaxWorkers == 5 && !s.OnDemand && !s.Stopped, "stats %+v", s)
	d.expect(s.LoadBalancer.Algorithm == balancer.LeastActive && s.LoadBalancer.TotalDispatched == 101 &&
		s.LoadBalancer.TotalActive == 0, "load balancer stats %+v, want LeastActiveLoad, 101 dispatched, 0 active",
		s.LoadBalancer)
}

// 2. Round robin visits workers in order; least active keeps fast calls away from a worker busy with a slow one.
func balancing(ctx context.Context, d *runner) {
	rr := d.newPool(ctx, demo.DataProcessorKind, client.Options{MaxWorkers: 5, LoadBalancing: "rr"}, 1)
	if rr == nil {
		return
	}
	var order []int
	for range 10 {
		id, err := client.Call[demo.Identity](rr, "WhoAmI").Result(ctx)
		if d.failed("WhoAmI", err) {
			break
		}
		order = append(order, id.Index)
	}
	d.printf("round robin, 10 calls went to workers %v", order)
	d.expect(slices.Equal(order, []int{0, 1, 2, 3, 4, 0, 1, 2, 3, 4}), "round robin order %v", order)
	d.stop(rr, "round robin pool")

	const fast = 20 * time.Millisecond

	// Round robin: one slow call and three fast ones submitted together; the fourth call comes back to worker 0 and
	// waits behind the slow call.
	const slow = time.Second
	pool := d.newPool(ctx, demo.SlowWorkerKind, client.Options{MaxWorkers: 3, LoadBalancing: balancer.RoundRobin})
	if pool == nil {
		return
	}
	d.printf("RoundRobin, 3 SlowWorkers: one %s call, then three %s calls, all submitted together:", slow, fast)
	start := time.Now()
	slowF := client.Call[demo.Identity](pool, "Process", slow)
	fasts := make([]*client.Future[demo.Identity], 3)
	for i := range fasts {
		fasts[i] = client.Call[demo.Identity](pool, "Process", fast)
	}
	first, err := slowF.Result(ctx)
	if !d.failed("slow call", err) {
		d.printf("  slow call   -> worker %d", first.Index)
		onSlow, lastFast := 0, time.Duration(0)
		for i, f := range fasts {
			id, err := f.Result(ctx)
			if d.failed("fast call", err) {
				break
			}
			lastFast = max(lastFast, time.Since(start))
			if id.Index == first.Index {
				onSlow++
			}
			d.printf("  fast call %d -> worker %d", i, id.Index)
		}
		d.printf("  %d fast call queued behind the slow one; the last fast call finished after %s", onSlow,
			lastFast.Round(time.Millisecond))
		d.expect(onSlow == 1 && lastFast >= slow, "round robin: %d fast calls on the slow worker, last after %s",
			onSlow, lastFast)
	}
	d.stop(pool, "round robin SlowWorker pool")

	// Least active: while one worker is busy with a long call, fast calls go to the idle ones. The long call is
	// cancelled afterwards; that it was still pending proves it kept its worker busy the whole time.
	pool = d.newPool(ctx, demo.SlowWorkerKind, client.Options{MaxWorkers: 3, LoadBalancing: balancer.LeastActive})
	if pool == nil {
		return
	}
	defer d.stop(pool, "least active SlowWorker pool")
	d.printf("LeastActiveLoad, 3 SlowWorkers: one long call, then three %s calls one after another:", fast)
	long := client.Call[demo.Identity](pool, "Process", time.Minute)
	busy := -1
	err = eventually(ctx, func() error {
		for i := range 3 {
			if ws, err := pool.WorkerStats(i); err == nil && ws.InFlight == 1 {
				busy = i
				return nil
			}
		}
		return errors.New("the long call is not running")
	})
	if d.failed("long call", err) {
		return
	}
	d.printf("  long call   -> worker %d", busy)
	onBusy := 0
	for i := range 3 {
		id, err := client.Call[demo.Identity](pool, "Process", fast).Result(ctx)
		if d.failed("fast call", err) {
			return
		}
		if id.Index == busy {
			onBusy++
		}
		d.printf("  fast call %d -> worker %d", i, id.Index)
	}
	d.expect(long.Cancel(), "the long call had ended before it was cancelled")
	d.printf("  least active sent %d fast calls to the busy worker; the long call was then cancelled", onBusy)
	d.expect(onBusy == 0, "least active sent %d fast calls to the busy worker", onBusy)
}

// 3. The same kinds in child processes: results, errors that keep their identity, and a panic's stack.
func processPool(ctx context.Context, d *runner) {
	pool := d.newPool(ctx, demo.DataProcessorKind, client.Options{Mode: client.Process, MaxWorkers: 4, Conn: d.nc}, 10)
	if pool == nil {
		return
	}
	defer d.stop(pool, "DataProcessor process pool")
	v, err := client.Call[int](pool, "Process", 42).Result(ctx)
	d.printf("process pool: Process(42) = %d", v)
	d.expect(err == nil && v == 420, "Process(42) = %d, %v; want 420", v, err)

	seen := map[int]string{}
	var order []int
	for range 8 {
		id, err := client.Call[demo.Identity](pool, "WhoAmI").Result(ctx)
		if d.failed("WhoAmI", err) {
			return
		}
		seen[id.Index] = id.ID
		order = append(order, id.Index)
	}
	d.printf("8 calls went to workers %v; worker IDs:", order)
	for i := range 4 {
		d.printf("  worker %d: %s", i, seen[i])
	}
	d.expect(len(seen) == 4, "8 round-robin calls reached %d distinct workers, want 4", len(seen))

	futs := make([]*client.Future[int], 40)
	for i := range futs {
		futs[i] = client.Call[int](pool, "Process", i)
	}
	res, err := client.Gather(ctx, futs)
	if !d.failed("gather 40 calls", err) {
		ok := true
		for i, r := range res {
			ok = ok && r == i*10
		}
		d.expect(ok, "process pool results %v", res)
	}
	d.stats("DataProcessor process pool", pool)

	risky := d.newPool(ctx, demo.RiskyWorkerKind, client.Options{Mode: client.Process, MaxWorkers: 4, Conn: d.nc})
	if risky == nil {
		return
	}
	defer d.stop(risky, "RiskyWorker process pool")
	values := []int{1, 2, -3, 4, -5}
	rfuts := make([]*client.Future[int], len(values))
	for i, v := range values {
		rfuts[i] = client.Call[int](risky, "RiskyOperation", v)
	}
	for i, f := range rfuts {
		r, err := f.Result(ctx)
		var re *fleet.RemoteError
		switch {
		case err == nil:
			d.printf("Success: %d -> %d", values[i], r)
			d.expect(values[i] >= 0 && r == 2*values[i], "RiskyOperation(%d) = %d", values[i], r)
		case errors.Is(err, demo.ErrNegative) && errors.As(err, &re):
			d.printf("Error: %d -> %v  (errors.Is(err, demo.ErrNegative) = true, remote type %s)", values[i], err, re.Type)
			d.expect(values[i] < 0, "RiskyOperation(%d) failed: %v", values[i], err)
		default:
			d.failf("RiskyOperation(%d): %v, want a *fleet.RemoteError matching demo.ErrNegative", values[i], err)
		}
	}

	_, err = client.Call[int](risky, "RiskyOperation", -13).Result(ctx)
	var re *fleet.RemoteError
	if d.expect(errors.As(err, &re) && re.Type == "*fleet.PanicError" && strings.Contains(re.Stack, "RiskyOperation"),
		"RiskyOperation(-13) = %v, want a RemoteError of a panic with the worker's stack", err) {
		stack := strings.Split(strings.TrimSpace(re.Stack), "\n")
		d.printf("Panic: -13 -> %v\n  remote type %s; worker stack (first lines):\n    %s", err, re.Type,
			strings.Join(stack[:min(4, len(stack))], "\n    "))
	}
	v, err = client.Call[int](risky, "RiskyOperation", 5).Result(ctx)
	d.printf("after the panic the worker keeps serving: RiskyOperation(5) = %d", v)
	d.expect(err == nil && v == 10, "RiskyOperation(5) after a panic = %d, %v", v, err)
	d.stats("RiskyWorker process pool", risky)
}
