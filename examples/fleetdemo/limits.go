package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/limits"
)

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
