package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/natsfleet/natsfleet/balancer"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
)

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
