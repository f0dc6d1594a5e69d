package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/testutil"
)

var allModes = []client.Mode{client.Sync, client.Asyncio, client.Thread, client.Process, client.Fleet}

// modeOptions returns options for a pool in mode; Fleet mode gets a server and an agent of its own.
func modeOptions(t *testing.T, mode client.Mode) client.Options {
	t.Helper()
	opts := client.Options{Mode: mode}
	if mode == client.Fleet {
		srv := testutil.StartServer(t, broker.EmbeddedOptions{})
		startAgent(t, srv.ClientURL(), "--capacity", "8")
		opts.Conn = testutil.Connect(t, srv.ClientURL())
	}
	if mode == client.Thread || mode == client.Process || mode == client.Fleet {
		opts.MaxWorkers = 2
	}
	return opts
}

func TestPipelineOfThreePools(t *testing.T) {
	fetcher := newPool(t, demo.FetcherKind, client.Options{Mode: client.Thread, MaxWorkers: 10})
	processor := newPool(t, demo.ProcessorKind, client.Options{Mode: client.Process, MaxWorkers: 4})
	storer := newPool(t, demo.StorerKind, client.Options{Mode: client.Thread, MaxWorkers: 5})

	urls := []string{"http://example.com/1", "http://example.com/2", "http://example.com/3"}
	start := time.Now()
	stored := make([]*client.Future[string], len(urls))
	for i, url := range urls {
		fetched := client.Call[demo.Document](fetcher, "Fetch", url)
		processed := client.Call[demo.Document](processor, "Process", fetched) // unwrapped before dispatch
		stored[i] = client.Call[string](storer, "Store", processed)
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Fatalf("building the pipeline took %s; calls must not wait for their argument futures", d)
	}
	for i, f := range stored {
		got := result(t, f)
		want := fmt.Sprintf(":%s:3", urls[i])
		if !strings.HasPrefix(got, "record-") || !strings.HasSuffix(got, want) {
			t.Fatalf("stored %q, want record-N%s", got, want)
		}
	}

	// A failed upstream call fails the downstream one with the upstream error.
	risky := newPool(t, demo.RiskyWorkerKind, client.Options{Mode: client.Process, MaxWorkers: 1})
	bad := client.Call[int](risky, "RiskyOperation", -1)
	down := client.Call[int](risky, "RiskyOperation", bad)
	if _, err := down.Result(context.Background()); !errors.Is(err, demo.ErrNegative) {
		t.Fatalf("downstream of a failed future = %v, want the upstream ErrNegative", err)
	}
}

func TestFuturesInsideSlicesAndMaps(t *testing.T) {
	for _, mode := range []client.Mode{client.Thread, client.Process} {
		t.Run(string(mode), func(t *testing.T) {
			dp := newPool(t, demo.DataProcessorKind, client.Options{Mode: mode, MaxWorkers: 2}, 2)
			pw := newPool(t, demo.ProgressWorkerKind, client.Options{Mode: mode, MaxWorkers: 1})
			items := []*client.Future[int]{client.Call[int](dp, "Process", 1), client.Call[int](dp, "Process", 2)}
			got := result(t, client.Call[[]int](pw, "ProcessItems", items, time.Duration(0)))
			if !slices.Equal(got, []int{4, 8}) {
				t.Fatalf("ProcessItems of a slice of futures = %v, want [4 8]", got)
			}
		})
	}
}

func TestGatherWaitAsCompletedInEveryMode(t *testing.T) {
	for _, mode := range allModes {
		t.Run(string(mode), func(t *testing.T) {
			opts := modeOptions(t, mode)
			risky := newPool(t, demo.RiskyWorkerKind, opts)
			ctx := context.Background()
			futs := []*client.Future[int]{
				client.Call[int](risky, "RiskyOperation", 1),
				client.Call[int](risky, "RiskyOperation", -2),
				client.Call[int](risky, "RiskyOperation", 3),
				client.Call[int](risky, "RiskyOperation", -4),
			}
			if _, err := client.Gather(ctx, futs); !errors.Is(err, demo.ErrNegative) || !strings.Contains(err.Error(), "-2") {
				t.Fatalf("Gather error = %v, want the first failure in input order (-2)", err)
			}
			vals, err := client.Gather(ctx, futs, client.AllErrors())
			var ge *client.GatherError
			if !errors.As(err, &ge) || ge.Errs[0] != nil || ge.Errs[1] == nil || ge.Errs[2] != nil || ge.Errs[3] == nil {
				t.Fatalf("Gather(AllErrors) error = %v, want failures at 1 and 3", err)
			}
			if vals[0] != 2 || vals[2] != 6 {
				t.Fatalf("Gather(AllErrors) values = %v, want 2 and 6 at 0 and 2", vals)
			}
			ok := []*client.Future[int]{client.Call[int](risky, "RiskyOperation", 5), client.Call[int](risky, "RiskyOperation", 6)}
			if vals, err := client.Gather(ctx, ok); err != nil || !slices.Equal(vals, []int{10, 12}) {
				t.Fatalf("Gather = %v, %v; want [10 12]", vals, err)
			}

			slow := newPool(t, demo.SlowWorkerKind, opts)
			if mode == client.Sync {
				return // sync calls are done when Call returns: nothing to wait for
			}
			mixed := []*client.Future[demo.Identity]{
				client.Call[demo.Identity](slow, "Process", 2*time.Second),
				client.Call[demo.Identity](slow, "Process", 10*time.Millisecond),
			}
			done, notDone, err := client.Wait(ctx, mixed, client.FirstCompleted)
			if err != nil || len(done) != 1 || len(notDone) != 1 || done[0] != mixed[1] {
				t.Fatalf("Wait(FirstCompleted) = %d done, %d not done, %v; want the fast call done", len(done), len(notDone), err)
			}
			var order []int
			for i := range client.AsCompleted(ctx, mixed) {
				order = append(order, i)
			}
			if !slices.Equal(order, []int{1, 0}) {
				t.Fatalf("AsCompleted order = %v, want [1 0]", order)
			}
			short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			late := []*client.Future[demo.Identity]{client.Call[demo.Identity](slow, "Process", time.Second)}
			if _, err := client.Gather(short, late); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Gather past its deadline = %v, want DeadlineExceeded", err)
			}
			late[0].Cancel()
		})
	}
}

// A window of calls kept in flight with OnDone, one started as each finishes, gets every result and every error, in
// every mode: a remote call's callback runs in the goroutine reading the pool's replies.
func TestOnDoneWindowInEveryMode(t *testing.T) {
	const calls, window = 300, 32
	for _, mode := range allModes {
		t.Run(string(mode), func(t *testing.T) {
			risky := newPool(t, demo.RiskyWorkerKind, modeOptions(t, mode))
			sem := make(chan struct{}, window)
			var ok, failed, wrong atomic.Int64
			for i := range calls {
				v := i + 1
				if i%10 == 0 {
					v = -v
				}
				sem <- struct{}{}
				client.Call[int](risky, "RiskyOperation", v).OnDone(func(got int, err error) {
					switch {
					case v > 0 && err == nil && got == 2*v:
						ok.Add(1)
					case v < 0 && errors.Is(err, demo.ErrNegative) && got == 0:
						failed.Add(1)
					default:
						wrong.Add(1)
					}
					<-sem
				})
			}
			timeout := time.After(20 * time.Second)
			for range window {
				select {
				case sem <- struct{}{}:
				case <-timeout:
					t.Fatalf("callbacks missing after 20s: %d ok, %d failed so far", ok.Load(), failed.Load())
				}
			}
			if ok.Load() != 270 || failed.Load() != 30 || wrong.Load() != 0 {
				t.Fatalf("%d ok, %d failed, %d wrong; want 270, 30, 0", ok.Load(), failed.Load(), wrong.Load())
			}
		})
	}
}

func TestRetriesInEveryMode(t *testing.T) {
	for _, mode := range allModes {
		t.Run(string(mode), func(t *testing.T) {
			opts := modeOptions(t, mode)
			var mu sync.Mutex
			var waits []time.Duration
			opts.Retry = client.RetryConfig{Attempts: 12, Wait: time.Millisecond, NoJitter: true,
				On: []error{demo.ErrTemporary},
				Sleep: func(ctx context.Context, d time.Duration) error {
					mu.Lock()
					waits = append(waits, d)
					mu.Unlock()
					return nil
				}}
			p := newPool(t, demo.FlakyWorkerKind, opts, 0.3)
			futs := make([]*client.Future[string], 40)
			for i := range futs {
				futs[i] = client.Call[string](p, "FlakyOperation", fmt.Sprintf("item%d", i))
			}
			got, err := client.Gather(context.Background(), futs)
			if err != nil {
				t.Fatalf("with 12 attempts every call should succeed: %v", err)
			}
			for i, v := range got {
				if v != fmt.Sprintf("ITEM%d", i) {
					t.Fatalf("call %d = %q", i, v)
				}
			}
			var attempts int64
			for _, f := range p.Broadcast("Attempts") {
				v, err := f.Result(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				attempts += toInt64(v)
			}
			mu.Lock()
			retries := len(waits)
			mu.Unlock()
			// Each retry sleeps once: the workers ran every call once plus once per retry.
			if attempts != int64(40+retries) || retries == 0 {
				t.Fatalf("workers ran %d attempts with %d retries for 40 calls; want 40+retries and some retries at 30%% failures", attempts, retries)
			}
			if d := p.Stats().LoadBalancer.TotalDispatched; d != 40 && mode != client.Sync {
				t.Fatalf("total_dispatched = %d, want 40: retries are not dispatched again", d)
			}
			// Exponential waits from 1 ms, exact without jitter.
			mu.Lock()
			defer mu.Unlock()
			for _, w := range waits {
				if w != time.Millisecond && w != 2*time.Millisecond && w != 4*time.Millisecond && w%time.Millisecond != 0 {
					t.Fatalf("unexpected wait %s", w)
				}
			}
		})
	}
}

func toInt64(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case int:
		return int64(n)
	case int8:
		return int64(n)
	case int16:
		return int64(n)
	case int32:
		return int64(n)
	case uint8:
		return int64(n)
	case uint16:
		return int64(n)
	case uint32:
		return int64(n)
	case uint64:
		return int64(n)
	}
	panic(fmt.Sprintf("not an integer: %T", v))
}

func TestRetryValidatorAndPerMethod(t *testing.T) {
	for _, mode := range []client.Mode{client.Thread, client.Process} {
		t.Run(string(mode), func(t *testing.T) {
			var waits []time.Duration
			var mu sync.Mutex
			sleep := func(ctx context.Context, d time.Duration) error {
				mu.Lock()
				waits = append(waits, d)
				mu.Unlock()
				return nil
			}
			p := newPool(t, demo.DataProcessorKind, client.Options{Mode: mode, MaxWorkers: 1, Retry: client.RetryConfig{
				Methods: map[string]client.RetryConfig{
					"Process": {Attempts: 3, Wait: 100 * time.Millisecond, NoJitter: true, Sleep: sleep,
						Until: func(r any) error {
							if toInt64(r) < 1000 {
								return errors.New("too small")
							}
							return nil
						}},
				},
			}}, 10)
			_, err := client.Call[int](p, "Process", 7).Result(context.Background())
			var ve *fleet.ValidationError
			if !errors.As(err, &ve) || ve.Attempts() != 3 || len(ve.Results) != 3 || toInt64(ve.Results[2]) != 70 {
				t.Fatalf("validation error = %v (%+v), want 3 attempts with results 70", err, ve)
			}
			mu.Lock()
			got := slices.Clone(waits)
			mu.Unlock()
			if !slices.Equal(got, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}) {
				t.Fatalf("exponential waits = %v, want [100ms 200ms]", got)
			}
			// Other methods have no retry configured.
			if n := result(t, client.Call[int](p, "Processed")); n != 3 {
				t.Fatalf("Processed = %d, want 3 (one per attempt)", n)
			}
		})
	}
}

func TestCancelReachesTheWorker(t *testing.T) {
	for _, mode := range []client.Mode{client.Asyncio, client.Thread, client.Process, client.Fleet} {
		t.Run(string(mode), func(t *testing.T) {
			opts := modeOptions(t, mode)
			opts.MaxWorkers = 1
			if mode == client.Asyncio {
				opts.MaxWorkers = 0
			}
			p := newPool(t, demo.SlowWorkerKind, opts)
			waitInFlight := func(n int64, within time.Duration) {
				t.Helper()
				testutil.Eventually(t, within, func() error {
					ws, err := p.WorkerStats(0)
					if err != nil {
						return err
					}
					if ws.InFlight != n {
						return fmt.Errorf("worker holds %d calls, want %d", ws.InFlight, n)
					}
					return nil
				})
			}
			f := client.Call[demo.Identity](p, "Process", time.Minute)
			waitInFlight(1, 10*time.Second)
			start := time.Now()
			if !f.Cancel() {
				t.Fatal("Cancel returned false")
			}
			waitInFlight(0, 2*time.Second)
			if d := time.Since(start); d > 100*time.Millisecond {
				t.Fatalf("cancelled method stopped after %s, want within 100ms", d)
			}
			if !errors.Is(f.Err(), context.Canceled) {
				t.Fatalf("cancelled future error = %v", f.Err())
			}

			// An expired ctx cancels the same way.
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			g := client.CallCtx[demo.Identity](ctx, p, "Process", time.Minute)
			if _, err := g.Result(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("call past its ctx deadline = %v, want DeadlineExceeded", err)
			}
			waitInFlight(0, 2*time.Second)

			// A method that ignores its context keeps running; its result is dropped.
			s := client.Call[int](p, "Stubborn", 500*time.Millisecond)
			waitInFlight(1, 10*time.Second)
			s.Cancel()
			ws, err := p.WorkerStats(0)
			if err != nil || ws.InFlight != 1 {
				t.Fatalf("stubborn method after cancel: in flight %d, %v; want reported as still running", ws.InFlight, err)
			}
			waitInFlight(0, 5*time.Second)
			if v, err := s.Result(context.Background()); v != 0 || !errors.Is(err, context.Canceled) {
				t.Fatalf("stubborn result = %d, %v; want dropped (0, Canceled)", v, err)
			}
		})
	}
}

func TestOnDemandPools(t *testing.T) {
	for _, mode := range []client.Mode{client.Thread, client.Process, client.Fleet} {
		t.Run(string(mode), func(t *testing.T) {
			opts := modeOptions(t, mode)
			opts.OnDemand, opts.MaxWorkers = true, 2
			p := newPool(t, demo.SlowWorkerKind, opts)
			s := p.Stats()
			if s.TotalWorkers != 0 || !s.OnDemand || s.LoadBalancer.Algorithm.Name() != "Random" {
				t.Fatalf("on-demand stats = %+v, want 0 workers, random balancing", s)
			}
			start := time.Now()
			futs := make([]*client.Future[demo.Identity], 6)
			for i := range futs {
				futs[i] = client.Call[demo.Identity](p, "Process", 200*time.Millisecond)
			}
			if d := time.Since(start); d > 50*time.Millisecond {
				t.Fatalf("6 on-demand calls took %s to submit; calls over the cap must queue, not block", d)
			}
			peak := 0
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(5 * time.Millisecond):
					}
					peak = max(peak, p.Stats().OnDemandActive)
				}
			})
			ids := map[string]bool{}
			for _, f := range futs {
				ids[result(t, f).ID] = true
			}
			close(stop)
			wg.Wait()
			if len(ids) != 6 {
				t.Fatalf("6 on-demand calls ran on %d workers, want a fresh worker each", len(ids))
			}
			if peak > 2 || peak == 0 {
				t.Fatalf("peak on_demand_active = %d, want at most the cap 2", peak)
			}
			// Six 200 ms calls two at a time take three rounds.
			if d := time.Since(start); d < 600*time.Millisecond {
				t.Fatalf("6 calls capped at 2 at a time took %s, want ≥ 600ms", d)
			}
			testutil.Eventually(t, 10*time.Second, func() error {
				s := p.Stats()
				if s.OnDemandActive != 0 || s.TotalWorkers != 0 || s.LoadBalancer.TotalDispatched != 6 {
					return fmt.Errorf("after the calls: %+v, want 0 active, 0 workers, 6 dispatched", s)
				}
				return nil
			})
		})
	}
}

func TestStopWithCallsInFlight(t *testing.T) {
	for _, mode := range []client.Mode{client.Thread, client.Process, client.Fleet} {
		t.Run(string(mode), func(t *testing.T) {
			opts := modeOptions(t, mode)
			opts.MaxWorkers, opts.MaxQueuedTasks = 2, 1
			p, err := client.New(context.Background(), demo.SlowWorkerKind, opts)
			if err != nil {
				t.Fatal(err)
			}
			quick := client.Call[demo.Identity](p, "Process", 50*time.Millisecond)
			long := make([]*client.Future[demo.Identity], 4)
			for i := range long {
				long[i] = client.Call[demo.Identity](p, "Process", time.Minute)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			start := time.Now()
			if err := p.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Stop = %v, want DeadlineExceeded", err)
			}
			if d := time.Since(start); d > 15*time.Second {
				t.Fatalf("Stop took %s", d)
			}
			if err := quick.Err(); err != nil {
				t.Fatalf("a call that fit in Stop's deadline failed: %v", err)
			}
			for i, f := range long {
				select {
				case <-f.Done():
				default:
					t.Fatalf("call %d still pending after Stop", i)
				}
				if err := f.Err(); !errors.Is(err, client.ErrPoolStopped) || !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("call %d error = %v, want ErrPoolStopped wrapping DeadlineExceeded", i, err)
				}
			}
		})
	}
}

func TestGracefulShutdownWithBroadcast(t *testing.T) {
	for _, mode := range []client.Mode{client.Thread, client.Process} {
		t.Run(string(mode), func(t *testing.T) {
			p := newPool(t, demo.GracefulWorkerKind, client.Options{Mode: mode, MaxWorkers: 3})
			items := make([]int, 100)
			futs := make([]*client.Future[[]int], 3)
			for i := range futs {
				futs[i] = client.Call[[]int](p, "LongTask", items, 20*time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond) // let the tasks get going: this is what the seed's signal handler does
			acks := p.Broadcast("Shutdown")
			if len(acks) != 3 {
				t.Fatalf("Broadcast reached %d workers, want 3", len(acks))
			}
			for _, a := range acks {
				if _, err := a.Result(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := p.Stop(ctx); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			for i, f := range futs {
				out, err := f.Result(ctx)
				if err != nil || len(out) == 0 || len(out) >= 100 {
					t.Fatalf("task %d returned %d items, %v; want it stopped early after some work", i, len(out), err)
				}
			}
		})
	}
}

func TestProgressFromEveryMode(t *testing.T) {
	for _, mode := range allModes {
		t.Run(string(mode), func(t *testing.T) {
			opts := modeOptions(t, mode)
			var mu sync.Mutex
			events := map[string][]client.ProgressEvent{}
			opts.Progress = func(ev client.ProgressEvent) {
				mu.Lock()
				events[ev.Bar] = append(events[ev.Bar], ev)
				mu.Unlock()
			}
			p := newPool(t, demo.ProgressWorkerKind, opts)
			items := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
			got := result(t, client.Call[[]int](p, "ProcessItems", items, 30*time.Millisecond))
			if len(got) != 10 || got[9] != 20 {
				t.Fatalf("ProcessItems = %v", got)
			}
			testutil.Eventually(t, 5*time.Second, func() error {
				mu.Lock()
				defer mu.Unlock()
				if len(events) != 1 {
					return fmt.Errorf("%d bars, want 1", len(events))
				}
				for _, evs := range events {
					last := evs[len(evs)-1]
					if !last.Done || last.N != 10 || last.Total != 10 {
						return fmt.Errorf("last event %+v, want done at 10/10", last)
					}
				}
				return nil
			})
			mu.Lock()
			for bar, evs := range events {
				for i := 1; i < len(evs); i++ {
					if evs[i].Seq <= evs[i-1].Seq || evs[i].N < evs[i-1].N {
						t.Fatalf("bar %s events out of order: %+v then %+v", bar, evs[i-1], evs[i])
					}
				}
				// 10 steps 30 ms apart at most one event per 100 ms, plus the first and the last.
				if len(evs) < 2 || len(evs) > 6 {
					t.Fatalf("bar %s sent %d events for 10 steps over 300ms", bar, len(evs))
				}
				if evs[0].Method != "ProcessItems" || evs[0].Desc != "Processing" {
					t.Fatalf("first event %+v", evs[0])
				}
			}
			clear(events)
			mu.Unlock()

			// A tight loop cannot flood the connection.
			slow := newPool(t, demo.SlowWorkerKind, opts)
			if n := result(t, client.Call[int](slow, "Count", 200_000)); n != 200_000 {
				t.Fatalf("Count = %d", n)
			}
			testutil.Eventually(t, 5*time.Second, func() error {
				mu.Lock()
				defer mu.Unlock()
				for _, evs := range events {
					if last := evs[len(evs)-1]; last.Done && last.N == 200_000 {
						if len(evs) > 20 {
							return fmt.Errorf("%d events for a tight loop, want rate-limited", len(evs))
						}
						return nil
					}
				}
				return errors.New("no completed bar yet")
			})
		})
	}
}
