// Command fleetdemo walks through concurry's "Worker Pools" guide with natsfleet: thread, process and fleet pools,
// load balancing, shared limits (also per customer), progress bars, a three-pool pipeline, retries and on-demand workers. Every section
// checks its own results; the program exits 1 when any check failed.
//
//	fleetdemo --nats nats://127.0.0.1:4222   # use a running server and its worker agents (what `make run` does)
//	fleetdemo                                # start an embedded server and two agents inside this process
//
// The fleet sections expect worker agents with free capacity (two with --capacity 4 in `make run`) and at least one
// agent serving standing DataProcessor workers built with multiplier 10 (--serve DataProcessor=2
// --args 'DataProcessor=[10]').
//
// Process-mode pools re-execute this program as their workers, which is why main calls fleet.ServeIfChild first.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/balancer"
	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/limits"
)

func main() {
	fleet.ServeIfChild()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// section is one part of the walkthrough.
type section struct {
	title string
	run   func(ctx context.Context, d *runner)
}

var sections = []section{
	{"Thread pool: DataProcessor (least active)", threadPool},
	{"Load balancing: round robin order, least active avoiding a busy worker", balancing},
	{"Process pool: 4 child processes, errors and panics across processes", processPool},
	{"Fleet: a pool spawned on the agents, and Attach to standing workers", fleetPools},
	{"Limits: a shared call rate and token budget, a shared connection pool", sharedLimits},
	{"Limits per customer: a budget per partition, shared by every process", partitionedLimits},
	{"Progress: bars of calls running in child processes, and a Gather bar", progress},
	{"Pipeline: Fetcher (thread) -> Processor (process) -> Storer (thread)", pipeline},
	{"Retries: FlakyWorker failing 30% of its calls", retries},
	{"On-demand pools: a fresh worker per call", onDemand},
}

// run runs every section and returns the exit code: 0 when every check passed, 1 otherwise, 2 for bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fleetdemo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("nats", "", "NATS server URL of a running fleet (default: start an embedded server and two "+
		"agents in this process)")
	timeout := fs.Duration("timeout", 90*time.Second, "deadline for the whole demo")
	sectionTimeout := fs.Duration("section-timeout", 30*time.Second, "deadline for each section")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fleetdemo: unexpected arguments %q\n", fs.Args())
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	d := &runner{out: stdout, childLog: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if *url != "" {
		nc, err := broker.Connect(broker.Options{URL: *url, Name: "fleetdemo"})
		if err != nil {
			fmt.Fprintln(stderr, "fleetdemo:", err)
			return 1
		}
		defer nc.Close()
		d.nc = nc
	} else {
		nc, shutdown, err := startLocalFleet(d.childLog)
		if err != nil {
			fmt.Fprintln(stderr, "fleetdemo:", err)
			return 1
		}
		defer shutdown()
		d.nc = nc
	}
	fmt.Fprintf(stdout, "natsfleet demo on %s\n", d.nc.ConnectedUrlRedacted())

	start := time.Now()
	for i, s := range sections {
		d.section = s.title
		if ctx.Err() != nil {
			d.failf("not run: %v", context.Cause(ctx))
			continue
		}
		fmt.Fprintf(stdout, "\n=== %d. %s ===\n", i+1, s.title)
		began := time.Now()
		sctx, scancel := context.WithTimeout(ctx, *sectionTimeout)
		s.run(sctx, d)
		scancel()
		fmt.Fprintf(stdout, "--- %d. done in %s\n", i+1, time.Since(began).Round(time.Millisecond))
	}
	fmt.Fprintf(stdout, "\n=== summary: %d sections in %s ===\n", len(sections), time.Since(start).Round(time.Millisecond))
	if len(d.failures) > 0 {
		for _, f := range d.failures {
			fmt.Fprintln(stdout, "FAILED:", f)
		}
		return 1
	}
	fmt.Fprintln(stdout, "all checks passed")
	return 0
}

// runner carries what sections share and collects their failed checks.
type runner struct {
	out      io.Writer
	nc       *nats.Conn
	childLog *slog.Logger // process-mode children's output and pool warnings
	section  string

	mu       sync.Mutex
	failures []string
}

func (d *runner) printf(format string, args ...any) { fmt.Fprintf(d.out, format+"\n", args...) }

// failf records a failed check of the current section.
func (d *runner) failf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	d.mu.Lock()
	d.failures = append(d.failures, d.section+": "+msg)
	d.mu.Unlock()
	fmt.Fprintln(d.out, "ERROR:", msg)
}

// expect records a failure unless ok; it returns ok.
func (d *runner) expect(ok bool, format string, args ...any) bool {
	if !ok {
		d.failf(format, args...)
	}
	return ok
}

// failed records err, if any, and reports whether there was one.
func (d *runner) failed(what string, err error) bool {
	if err != nil {
		d.failf("%s: %v", what, err)
		return true
	}
	return false
}

// newPool starts a pool, registering its Stop; nil (failure recorded) when it cannot start.
func (d *runner) newPool(ctx context.Context, kind *fleet.Kind, opts client.Options, args ...any) *client.Pool {
	if opts.Logger == nil {
		opts.Logger = d.childLog
	}
	p, err := client.New(ctx, kind, opts, args...)
	if d.failed(fmt.Sprintf("start %s pool of %s", opts.Mode, kind.Name()), err) {
		return nil
	}
	return p
}

// stop stops a pool with a deadline and records a failure if it does not stop cleanly.
func (d *runner) stop(p *client.Pool, name string) {
	if p == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	d.failed("stop "+name, p.Stop(ctx))
	if s := p.Stats(); !s.Stopped {
		d.failf("%s: stats say stopped=false after Stop", name)
	}
}

// stats prints a pool's Stats as JSON.
func (d *runner) stats(name string, p *client.Pool) client.PoolStats {
	s := p.Stats()
	b, err := json.MarshalIndent(s, "  ", "  ")
	if d.failed("stats of "+name, err) {
		return s
	}
	d.printf("%s stats:\n  %s", name, b)
	return s
}

// eventually polls cond every 10ms until it holds or ctx ends; it returns cond's last error.
func eventually(ctx context.Context, cond func() error) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %v)", err, ctx.Err())
		case <-t.C:
		}
	}
}

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

// agentsSummary lists the fleet's agents and totals their capacity.
func agentsSummary(ctx context.Context, d *runner) (agents []fleet.AgentInfo, free, capacity, workers int) {
	agents, err := client.DiscoverAgents(ctx, d.nc, "")
	if d.failed("discover agents", err) {
		return nil, 0, 0, 0
	}
	slices.SortFunc(agents, func(a, b fleet.AgentInfo) int { return strings.Compare(a.ID, b.ID) })
	for _, a := range agents {
		free += a.Free
		capacity += a.Capacity
		workers += a.Workers
	}
	return agents, free, capacity, workers
}

func (d *runner) printAgents(agents []fleet.AgentInfo) {
	for _, a := range agents {
		d.printf("  agent %s on %s: capacity %d, free %d, workers hosted %d", a.ID, a.Host, a.Capacity, a.Free, a.Workers)
	}
}

// 4. Fleet mode: the pool asks the agents to start its workers; Attach joins workers an agent already serves.
func fleetPools(ctx context.Context, d *runner) {
	agents, free, capacity, standing := agentsSummary(ctx, d)
	d.printf("%d agents offer %d free workers:", len(agents), free)
	d.printAgents(agents)
	if !d.expect(len(agents) >= 2 && free >= 8, "want at least 2 agents with 8 free workers, found %d with %d", len(agents), free) {
		return
	}

	pool := d.newPool(ctx, demo.DataProcessorKind, client.Options{Mode: client.Fleet, Conn: d.nc}, 10)
	if pool == nil {
		return
	}
	s := pool.Stats()
	d.printf("fleet pool with MaxWorkers 0 took all %d free workers", s.TotalWorkers)
	d.expect(s.TotalWorkers == free, "fleet pool has %d workers, want the %d offered", s.TotalWorkers, free)
	during, nowFree, _, _ := agentsSummary(ctx, d)
	d.printAgents(during)
	d.expect(nowFree == 0, "agents still offer %d free workers while the pool holds them all", nowFree)

	futs := make([]*client.Future[int], 32)
	for i := range futs {
		futs[i] = client.Call[int](pool, "Process", i)
	}
	res, err := client.Gather(ctx, futs)
	if !d.failed("gather fleet calls", err) {
		ok := true
		for i, r := range res {
			ok = ok && r == i*10
		}
		d.printf("32 calls over the fleet: results[31] = %d", res[31])
		d.expect(ok, "fleet results %v", res)
	}
	d.stats("DataProcessor fleet pool", pool)
	d.stop(pool, "DataProcessor fleet pool")

	att, err := client.Attach(ctx, d.nc, "DataProcessor", client.Options{Logger: d.childLog})
	if d.failed("attach to standing DataProcessor workers", err) {
		return
	}
	defer d.stop(att, "attached DataProcessor pool")
	s = att.Stats()
	d.printf("attached to %d standing DataProcessor workers", s.TotalWorkers)
	d.expect(s.TotalWorkers >= 2, "attached to %d standing workers, want at least 2", s.TotalWorkers)
	v, err := client.Call[int](att, "Process", 42).Result(ctx)
	d.printf("standing workers (multiplier 10): Process(42) = %d", v)
	d.expect(err == nil && v == 420, "attached Process(42) = %d, %v; want 420", v, err)
	ids := map[string]bool{}
	for range 2 * s.TotalWorkers {
		id, err := client.Call[demo.Identity](att, "WhoAmI").Result(ctx)
		if d.failed("attached WhoAmI", err) {
			return
		}
		ids[id.ID] = true
	}
	d.printf("round robin over the standing workers reached %d of them", len(ids))
	d.expect(len(ids) == s.TotalWorkers, "calls reached %d of %d standing workers", len(ids), s.TotalWorkers)
	d.stats("attached DataProcessor pool", att)
	d.stop(att, "attached DataProcessor pool")

	// Stopping the spawned pool gives the capacity back; stopping the attached one leaves the standing workers.
	err = eventually(ctx, func() error {
		_, f, c, w := agentsSummary(ctx, d)
		if f != c || w != standing {
			return fmt.Errorf("agents offer %d of %d free with %d workers hosted, want all free and %d standing", f, c, w, standing)
		}
		return nil
	})
	if !d.failed("capacity back after stop", err) {
		d.printf("after both pools stopped: %d of %d workers free, %d standing workers still served", capacity, capacity, standing)
	}
}

// 5. Limits shared by every worker of a pool, wherever the workers run.
func sharedLimits(ctx context.Context, d *runner) {
	const calls, perSecond, workers = 60, 20, 4
	lims := []limits.Limit{
		limits.CallLimit{Window: time.Second, Capacity: perSecond},
		limits.RateLimit{Key: "tokens", Window: time.Second, Capacity: 2000, Algorithm: limits.GCRA},
	}
	api := d.newPool(ctx, demo.APIWorkerKind,
		client.Options{Mode: client.Fleet, Conn: d.nc, MaxWorkers: workers, Limits: lims}, "my-key")
	if api != nil {
		futs := make([]*client.Future[string], calls)
		start := time.Now()
		for i := range futs {
			futs[i] = client.Call[string](api, "CallAPI", fmt.Sprintf("Request %d", i))
		}
		res, err := client.Gather(ctx, futs)
		took := time.Since(start)
		if !d.failed("gather API calls", err) {
			ok := true
			for i, r := range res {
				ok = ok && r == fmt.Sprintf("response to Request %d", i)
			}
			d.expect(ok, "API results %v", res)
			// 20 calls fit in each one-second window: 60 calls need the windows starting at 0 s, 1 s and 2 s. Four
			// private limits would admit 80 calls/s and finish at once.
			d.printf("%d calls on %d fleet workers sharing %d calls/s (and 2000 tokens/s, GCRA): %s", calls, workers,
				perSecond, took.Round(time.Millisecond))
			d.expect(took >= 1900*time.Millisecond, "%d calls took %s: the %d/s limit was not shared", calls, took, perSecond)
		}
		d.stats("APIWorker fleet pool", api)
		d.stop(api, "APIWorker fleet pool")
	}

	// A set made with a name is shared by every process that names it: here the pool's worker processes and this
	// program, which can read its state.
	set, err := limits.NewSet(limits.SetOptions{Name: "fleetdemo-db", Conn: d.nc},
		limits.ResourceLimit{Key: "connections", Capacity: 2})
	if d.failed("create the shared connections set", err) {
		return
	}
	defer set.Close()
	db := d.newPool(ctx, demo.DatabaseWorkerKind,
		client.Options{Mode: client.Process, Conn: d.nc, MaxWorkers: workers, LimitSet: set})
	if db == nil {
		return
	}
	defer d.stop(db, "DatabaseWorker process pool")
	const queries, hold = 8, 250 * time.Millisecond
	qf := make([]*client.Future[demo.Span], queries)
	start := time.Now()
	for i := range qf {
		qf[i] = client.Call[demo.Span](db, "Query", fmt.Sprintf("SELECT %d", i), hold)
	}
	spans, err := client.Gather(ctx, qf)
	took := time.Since(start)
	if d.failed("gather queries", err) {
		return
	}
	t0 := slices.MinFunc(spans, func(a, b demo.Span) int { return int(a.Start - b.Start) }).Start
	d.printf("%d queries on %d worker processes sharing 2 connections, each holding one for %s:", queries, workers, hold)
	for i, s := range spans {
		d.printf("  query %d: holds a connection from %4d ms to %4d ms", i, s.Start-t0, s.End-t0)
	}
	peak := maxConcurrent(spans)
	d.printf("at most %d queries held a connection at once; all done in %s", peak, took.Round(time.Millisecond))
	d.expect(peak == 2, "peak concurrent holders %d, want 2", peak)
	d.expect(took >= queries/2*hold, "%d queries took %s, less than %s: more than 2 ran at once", queries, took, queries/2*hold)
	err = eventually(ctx, func() error {
		if st := set.Stats()["connections"]; st.Available != 2 {
			return fmt.Errorf("%v of 2 connections free after the queries", st.Available)
		}
		return nil
	})
	if !d.failed("connections given back", err) {
		b, _ := json.Marshal(set.Stats()["connections"])
		d.printf("the shared set as this program sees it after the queries: %s", b)
	}
	d.stats("DatabaseWorker process pool", db)
}

// partitionedLimits gives every customer its own budget: the limits are declared per partition, and each
// acquisition names its customer. Two sets sharing the name stand for two processes.
func partitionedLimits(ctx context.Context, d *runner) {
	const perCustomer = 3
	lims := []limits.Limit{limits.CallLimit{Window: time.Minute, Capacity: perCustomer, PerPartition: true}}
	// A name of its own per run, so that a rerun within the minute starts with full budgets.
	name := fmt.Sprintf("fleetdemo-customers-%d", time.Now().UnixNano())
	var sets []*limits.Set
	for range 2 {
		set, err := limits.NewSet(limits.SetOptions{Name: name, Conn: d.nc}, lims...)
		if d.failed("create the per-customer set", err) {
			return
		}
		defer set.Close()
		sets = append(sets, set)
	}
	asked := map[string]int{"acme": 5, "globex": 2, "initech": 4}
	admitted := map[string]int{}
	for _, customer := range []string{"acme", "globex", "initech"} {
		for i := range asked[customer] {
			_, err := sets[i%2].TryAcquireIn(ctx, customer, nil) // the processes take turns
			switch {
			case err == nil:
				admitted[customer]++
			case !errors.Is(err, limits.ErrWouldWait):
				d.failed("acquire for "+customer, err)
				return
			}
		}
		want := min(asked[customer], perCustomer)
		d.printf("%-8s asked %d calls through two processes, %d admitted (%d a minute per customer)", customer,
			asked[customer], admitted[customer], perCustomer)
		d.expect(admitted[customer] == want, "%s: %d calls admitted, want %d", customer, admitted[customer], want)
	}
	b, _ := json.Marshal(sets[0].StatsIn("acme")["call_count"])
	d.printf("acme's budget as one of the processes sees it: %s", b)
}

// maxConcurrent is the largest number of spans that overlap at one instant; a span ending when another starts does
// not overlap it.
func maxConcurrent(spans []demo.Span) int {
	type edge struct {
		at    int64
		delta int
	}
	edges := make([]edge, 0, 2*len(spans))
	for _, s := range spans {
		edges = append(edges, edge{s.Start, 1}, edge{s.End, -1})
	}
	slices.SortFunc(edges, func(a, b edge) int {
		if a.at != b.at {
			return int(a.at - b.at)
		}
		return a.delta - b.delta // ends first
	})
	cur, peak := 0, 0
	for _, e := range edges {
		cur += e.delta
		peak = max(peak, cur)
	}
	return peak
}

// 6. Progress reported by methods running in child processes, drawn here; and a bar for a Gather.
func progress(ctx context.Context, d *runner) {
	var mu sync.Mutex
	final := map[string]client.ProgressEvent{}
	events := 0
	pool := d.newPool(ctx, demo.ProgressWorkerKind, client.Options{Mode: client.Process, Conn: d.nc, MaxWorkers: 4,
		ShowProgress: true,
		Progress: func(ev client.ProgressEvent) {
			mu.Lock()
			defer mu.Unlock()
			events++
			if ev.Done {
				final[ev.Bar] = ev
			}
		}})
	if pool == nil {
		return
	}
	// On a terminal the bars redraw in place. Elsewhere (CI, a log file) the client prints one line per completed
	// bar; tap stderr to check that.
	tap, err := tapStderr()
	if d.failed("tap stderr", err) {
		d.stop(pool, "ProgressWorker process pool")
		return
	}
	d.printf("4 batches of 10 items, 100 ms per item, in 4 worker processes (bars on stderr):")
	futs := make([]*client.Future[[]int], 4)
	for i := range futs {
		futs[i] = client.Call[[]int](pool, "ProcessItems", []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 100*time.Millisecond)
	}
	res, err := client.Gather(ctx, futs)
	d.stop(pool, "ProgressWorker process pool") // draws the bars' last state before we print
	d.checkBars(tap, "Processing", 4)
	if !d.failed("gather batches", err) {
		want := []int{0, 2, 4, 6, 8, 10, 12, 14, 16, 18}
		for i, r := range res {
			d.expect(slices.Equal(r, want), "batch %d = %v, want %v", i, r, want)
		}
	}
	mu.Lock()
	d.printf("received %d progress events; %d bars completed", events, len(final))
	d.expect(len(final) == 4, "%d bars completed, want 4", len(final))
	for _, ev := range final {
		d.expect(ev.N == 10 && ev.Total == 10 && ev.Desc == "Processing" && ev.WorkerID != "",
			"final event of bar %s: %+v", ev.Bar, ev)
	}
	mu.Unlock()

	slow := d.newPool(ctx, demo.SlowWorkerKind, client.Options{Mode: client.Thread, MaxWorkers: 5})
	if slow == nil {
		return
	}
	defer d.stop(slow, "SlowWorker thread pool")
	if tap, err = tapStderr(); d.failed("tap stderr", err) {
		return
	}
	d.printf("Gather of 50 calls of 100 ms on 5 thread workers, with its own bar (stderr):")
	sf := make([]*client.Future[demo.Identity], 50)
	for i := range sf {
		sf[i] = client.Call[demo.Identity](slow, "Process", 100*time.Millisecond)
	}
	var seen []int
	ids, err := client.Gather(ctx, sf, client.ShowGatherProgress("gather"),
		client.OnGatherProgress(func(done, total int) { seen = append(seen, done) }))
	d.checkBars(tap, "gather", 1)
	if !d.failed("gather with a bar", err) {
		d.printf("gathered %d results; progress callback saw %d updates, last %d/50", len(ids), len(seen), seen[len(seen)-1])
		d.expect(len(ids) == 50 && len(seen) > 0 && seen[len(seen)-1] == 50, "gather progress %v", seen)
	}
}

// checkBars stops tap and checks that at least n lines of what it saw name the bar desc. Without a tap (stderr is
// a terminal) there is nothing to check: the bars were drawn in place.
func (d *runner) checkBars(tap *stderrTap, desc string, n int) {
	if tap == nil {
		return
	}
	got := 0
	for line := range strings.Lines(tap.stop()) {
		if strings.Contains(line, desc) {
			got++
		}
	}
	d.printf("stderr is not a terminal: %d lines of %q bars written there", got, desc)
	d.expect(got >= n, "stderr is not a terminal and the client wrote %d lines of %q bars there, want at least %d "+
		"(one per completed bar, as client's progress renderer documents for non-terminal outputs)", got, desc, n)
}

// stderrTap copies what this process writes to file descriptor 2, where the client draws its bars, into a buffer
// on its way to the real stderr.
type stderrTap struct {
	// orig is the real stderr, duplicated. It is closed through this one *os.File only: a second File on the same
	// descriptor would close it again when collected, after the number was reused for, say, a NATS socket.
	orig *os.File
	w    *os.File // the pipe's write end, now also descriptor 2
	buf  bytes.Buffer
	done chan struct{}
}

// tapStderr starts a tap, or returns nil when stderr is a terminal (a pipe in between would stop the bars from
// redrawing in place).
func tapStderr() (*stderrTap, error) {
	if fi, err := os.Stderr.Stat(); err != nil || fi.Mode()&os.ModeCharDevice != 0 {
		return nil, nil
	}
	orig, err := syscall.Dup(2)
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		syscall.Close(orig)
		return nil, err
	}
	if err := syscall.Dup2(int(w.Fd()), 2); err != nil {
		syscall.Close(orig)
		r.Close()
		w.Close()
		return nil, err
	}
	t := &stderrTap{orig: os.NewFile(uintptr(orig), "stderr"), w: w, done: make(chan struct{})}
	go func() {
		defer close(t.done)
		defer r.Close()
		_, _ = io.Copy(io.MultiWriter(t.orig, &t.buf), r)
	}()
	return t, nil
}

// stop puts the real stderr back and returns what went through the tap.
func (t *stderrTap) stop() string {
	_ = syscall.Dup2(int(t.orig.Fd()), 2)
	t.w.Close() // with descriptor 2 restored, the pipe's last write end: the copy sees EOF
	<-t.done
	t.orig.Close()
	return t.buf.String()
}

// 7. Futures passed from pool to pool: the chain is built at once and resolves as each stage finishes.
func pipeline(ctx context.Context, d *runner) {
	fetcher := d.newPool(ctx, demo.FetcherKind, client.Options{Mode: client.Thread, MaxWorkers: 10})
	processor := d.newPool(ctx, demo.ProcessorKind, client.Options{Mode: client.Process, MaxWorkers: 4, Conn: d.nc})
	storer := d.newPool(ctx, demo.StorerKind, client.Options{Mode: client.Thread, MaxWorkers: 5})
	defer d.stop(fetcher, "Fetcher pool")
	defer d.stop(processor, "Processor pool")
	defer d.stop(storer, "Storer pool")
	if fetcher == nil || processor == nil || storer == nil {
		return
	}
	urls := make([]string, 8)
	for i := range urls {
		urls[i] = fmt.Sprintf("http://example.com/%d", i)
	}
	start := time.Now()
	stored := make([]*client.Future[string], len(urls))
	for i, url := range urls {
		fetched := client.Call[demo.Document](fetcher, "Fetch", url)
		processed := client.Call[demo.Document](processor, "Process", fetched) // a future as an argument
		stored[i] = client.Call[string](storer, "Store", processed)
	}
	submitted := time.Since(start)
	d.printf("built %d three-stage chains in %s without waiting", len(urls), submitted.Round(time.Microsecond))
	d.expect(submitted < time.Second, "submitting the pipeline took %s: a call blocked the caller", submitted)
	for i, f := range stored {
		rec, err := f.Result(ctx)
		if d.failed("pipeline "+urls[i], err) {
			continue
		}
		d.printf("Stored: %s", rec)
		want := regexp.MustCompile(`^record-\d+:` + regexp.QuoteMeta(urls[i]) + `:3$`)
		d.expect(want.MatchString(rec), "stored %q, want record-N:%s:3", rec, urls[i])
	}
	d.printf("pipeline done in %s", time.Since(start).Round(time.Millisecond))
	d.stats("Processor process pool", processor)
}

// 8. Retries run where the worker runs; the pool counts each call once.
func retries(ctx context.Context, d *runner) {
	const failRate, attempts = 0.3, 5
	pool := d.newPool(ctx, demo.FlakyWorkerKind, client.Options{Mode: client.Thread, MaxWorkers: 5,
		Retry: client.RetryConfig{Attempts: attempts, Wait: 10 * time.Millisecond}},
		failRate)
	if pool == nil {
		return
	}
	defer d.stop(pool, "FlakyWorker pool")
	items := []string{"hello", "world", "foo", "bar", "natsfleet", "retries", "run", "where", "the", "worker", "runs",
		"and", "count", "once", "in", "the", "pool", "stats", "of", "concurry"}
	futs := make([]*client.Future[string], len(items))
	for i, it := range items {
		futs[i] = client.Call[string](pool, "FlakyOperation", it)
	}
	ok, exhausted := 0, 0
	var results []string
	for i, f := range futs {
		r, err := f.Result(ctx)
		switch {
		case err == nil:
			ok++
			results = append(results, r)
			d.expect(r == strings.ToUpper(items[i]), "FlakyOperation(%q) = %q", items[i], r)
		case errors.Is(err, demo.ErrTemporary):
			// Five failures in a row happen to 0.3^5 = 0.24% of calls; the attempt count below must show them.
			exhausted++
			d.printf("FlakyOperation(%q) failed all %d attempts: %v", items[i], attempts, err)
		default:
			d.failf("FlakyOperation(%q): %v", items[i], err)
		}
	}
	d.printf("results: %v", results)
	var runs int64
	for _, f := range pool.Broadcast("Attempts") {
		n, err := f.Result(ctx)
		if d.failed("Attempts", err) {
			return
		}
		runs += n.(int64)
	}
	d.printf("%d of %d calls succeeded (%d exhausted their %d attempts) after %d runs of the method in total",
		ok, len(items), exhausted, attempts, runs)
	// Each success ran 1 to 5 times, each exhausted call exactly 5 times.
	d.expect(runs >= int64(ok+attempts*exhausted) && runs <= int64(attempts*len(items)),
		"%d runs for %d successes and %d exhausted calls: retries did not run as configured", runs, ok, exhausted)
	d.expect(ok >= len(items)-1, "%d of %d calls failed after %d attempts", exhausted, len(items), attempts)
	s := d.stats("FlakyWorker pool", pool)
	// Retries and Broadcast bypass the balancer: it counts each call once.
	d.expect(s.LoadBalancer.TotalDispatched == uint64(len(items)),
		"total dispatched %d, want %d", s.LoadBalancer.TotalDispatched, len(items))
}

// 9. On-demand pools start a worker per call and stop it after.
func onDemand(ctx context.Context, d *runner) {
	for _, opts := range []client.Options{
		{Mode: client.Thread, OnDemand: true, MaxWorkers: 3},
		{Mode: client.Fleet, OnDemand: true, MaxWorkers: 2, Conn: d.nc},
	} {
		name := fmt.Sprintf("on-demand %s pool", opts.Mode)
		pool := d.newPool(ctx, demo.DataProcessorKind, opts, 10)
		if pool == nil {
			return
		}
		s := pool.Stats()
		d.printf("%s before any call: total_workers %d, algorithm %s", name, s.TotalWorkers, s.LoadBalancer.Algorithm.Name())
		d.expect(s.TotalWorkers == 0 && s.LoadBalancer.Algorithm == balancer.Random,
			"%s: total_workers %d, algorithm %s; want 0 and Random", name, s.TotalWorkers, s.LoadBalancer.Algorithm.Name())
		futs := make([]*client.Future[int], 8)
		for i := range futs {
			futs[i] = client.Call[int](pool, "Process", i)
		}
		peak := 0
		for i, f := range client.AsCompleted(ctx, futs) {
			peak = max(peak, pool.Stats().OnDemandActive)
			v, err := f.Result(ctx)
			d.expect(err == nil && v == i*10, "%s: Process(%d) = %d, %v", name, i, v, err)
		}
		d.printf("%s: 8 calls done, at most %d on-demand workers seen alive (cap %d)", name, peak, opts.MaxWorkers)
		d.expect(peak <= opts.MaxWorkers, "%s: %d on-demand workers alive, cap %d", name, peak, opts.MaxWorkers)
		err := eventually(ctx, func() error {
			if s := pool.Stats(); s.OnDemandActive != 0 || s.TotalWorkers != 0 {
				return fmt.Errorf("on_demand_active %d, total_workers %d", s.OnDemandActive, s.TotalWorkers)
			}
			return nil
		})
		d.failed(name+": workers not gone when idle", err)
		s = d.stats(name, pool)
		d.expect(s.OnDemand && !s.Stopped, "%s: stats %+v", name, s)
		d.stop(pool, name)
	}
}

// startLocalFleet starts what `make run` starts as processes, inside this one: an embedded NATS server with
// JetStream and two agents offering 4 workers each, one of them serving 2 standing DataProcessors.
func startLocalFleet(logger *slog.Logger) (*nats.Conn, func(), error) {
	srv, err := broker.StartEmbedded(broker.EmbeddedOptions{})
	if err != nil {
		return nil, nil, err
	}
	var conns []*nats.Conn
	var agents []*fleet.Agent
	shutdown := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, a := range agents {
			_ = a.Stop(ctx)
		}
		for _, nc := range conns {
			nc.Close()
		}
		srv.Shutdown()
	}
	for i := range 2 {
		nc, err := broker.Connect(broker.Options{URL: srv.ClientURL()})
		if err != nil {
			shutdown()
			return nil, nil, err
		}
		conns = append(conns, nc)
		a, err := fleet.StartAgent(nc, fleet.AgentOptions{Capacity: 4, Logger: logger})
		if err != nil {
			shutdown()
			return nil, nil, err
		}
		agents = append(agents, a)
		if i == 0 {
			if err := a.Serve("DataProcessor", 2, 10); err != nil {
				shutdown()
				return nil, nil, err
			}
		}
	}
	nc, err := broker.Connect(broker.Options{URL: srv.ClientURL(), Name: "fleetdemo"})
	if err != nil {
		shutdown()
		return nil, nil, err
	}
	conns = append(conns, nc)
	return nc, shutdown, nil
}
