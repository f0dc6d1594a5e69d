package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/natsfleet/natsfleet/balancer"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/testutil"
	"github.com/natsfleet/natsfleet/limits"
)

func TestMain(m *testing.M) {
	fleet.ServeIfChild()
	goleak.VerifyTestMain(m)
}

// checkFor polls cond until it holds or the deadline passes.
func newPool(t *testing.T, kind *fleet.Kind, opts client.Options, args ...any) *client.Pool {
	t.Helper()
	p, err := client.New(context.Background(), kind, opts, args...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := p.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return p
}

func result[T any](t *testing.T, f *client.Future[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	v, err := f.Result(ctx)
	if err != nil {
		t.Fatalf("Result: %v", err)
	}
	return v
}

var localModes = []client.Mode{client.Sync, client.Asyncio, client.Thread}

func TestCallResultsAndErrors(t *testing.T) {
	t.Parallel()
	for _, mode := range localModes {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			dp := newPool(t, demo.DataProcessorKind, client.Options{Mode: mode}, 10)
			if got := result(t, client.Call[int](dp, "Process", 42)); got != 420 {
				t.Errorf("Process(42) = %d, want 420", got)
			}
			risky := newPool(t, demo.RiskyWorkerKind, client.Options{Mode: mode})
			ctx := context.Background()

			_, err := client.Call[int](risky, "RiskyOperation", -3).Result(ctx)
			if !errors.Is(err, demo.ErrNegative) || !strings.Contains(err.Error(), "-3") {
				t.Errorf("RiskyOperation(-3) error = %v, want ErrNegative naming -3", err)
			}

			_, err = client.Call[int](risky, "RiskyOperation", -13).Result(ctx)
			var pe *fleet.PanicError
			if !errors.As(err, &pe) || !strings.Contains(pe.Stack, "RiskyOperation") {
				t.Errorf("panic error = %v, want *fleet.PanicError with a stack naming RiskyOperation", err)
			}
			// The worker keeps serving after a panic.
			if got := result(t, client.Call[int](risky, "RiskyOperation", 4)); got != 8 {
				t.Errorf("after panic RiskyOperation(4) = %d, want 8", got)
			}

			_, err = client.Call[int](risky, "Nope", 1).Result(ctx)
			if !errors.Is(err, fleet.ErrUnknownMethod) || !strings.Contains(err.Error(), "Nope") ||
				!strings.Contains(err.Error(), "RiskyOperation") {
				t.Errorf("unknown method error = %v, want ErrUnknownMethod naming Nope and the callable methods", err)
			}

			_, err = client.Call[int](risky, "RiskyOperation", "four").Result(ctx)
			if !errors.Is(err, fleet.ErrBadArguments) || !strings.Contains(err.Error(), "expected (int)") {
				t.Errorf("bad arguments error = %v, want ErrBadArguments naming the expected (int)", err)
			}

			_, err = client.Call[string](dp, "Process", 1).Result(ctx)
			if !errors.Is(err, client.ErrResultType) {
				t.Errorf("result type error = %v, want ErrResultType", err)
			}
		})
	}
}

func TestSyncFutureIsDoneWhenCallReturns(t *testing.T) {
	t.Parallel()
	p := newPool(t, demo.DataProcessorKind, client.Options{Mode: client.Sync}, 3)
	f := client.Call[int](p, "Process", 5)
	select {
	case <-f.Done():
	default:
		t.Fatal("sync future not done when Call returned")
	}
	if v, err := f.Result(context.Background()); v != 15 || err != nil {
		t.Fatalf("Result = %d, %v; want 15, nil", v, err)
	}
}

func TestOptionsRejected(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts client.Options
		want string
	}{
		{"sync max workers", client.Options{Mode: client.Sync, MaxWorkers: 2}, "MaxWorkers must be 1 for sync mode, got 2"},
		{"asyncio max workers", client.Options{Mode: client.Asyncio, MaxWorkers: 3}, "MaxWorkers must be 1 for asyncio mode, got 3"},
		{"sync on demand", client.Options{Mode: client.Sync, OnDemand: true}, "OnDemand is not supported in sync mode"},
		{"asyncio on demand", client.Options{Mode: client.Asyncio, OnDemand: true}, "OnDemand is not supported in asyncio mode"},
		{"unknown mode", client.Options{Mode: "threadz"}, `"threadz"`},
		{"unknown balancer", client.Options{LoadBalancing: "fastest"}, "fastest"},
		{"negative workers", client.Options{MaxWorkers: -1}, "MaxWorkers -1 is negative"},
		{"child max procs", client.Options{Mode: client.Process, ChildMaxProcs: -2}, "ChildMaxProcs -2 is below -1"},
		{"bad retry", client.Options{Retry: client.RetryConfig{Algorithm: "cubic"}}, `unknown algorithm "cubic"`},
		{"limit replicas without limits", client.Options{Mode: client.Process, LimitReplicas: 3}, "LimitReplicas applies to the Limits of a Process or Fleet pool"},
		{"limit replicas in thread mode", client.Options{LimitReplicas: 3, Limits: []limits.Limit{limits.CallLimit{Window: time.Second, Capacity: 1}}},
			"LimitReplicas applies to the Limits of a Process or Fleet pool"},
		{"six limit replicas", client.Options{Mode: client.Process, LimitReplicas: 6, Limits: []limits.Limit{limits.CallLimit{Window: time.Second, Capacity: 1}}},
			"LimitReplicas must be 0 (the default) to 5, got 6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := client.New(context.Background(), demo.DataProcessorKind, tt.opts, 1)
			if !errors.Is(err, client.ErrInvalidOptions) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New error = %v, want ErrInvalidOptions containing %q", err, tt.want)
			}
		})
	}
	if _, err := client.New(context.Background(), demo.DataProcessorKind, client.Options{}, 0); err == nil ||
		!strings.Contains(err.Error(), "multiplier must not be 0") {
		t.Fatalf("constructor error = %v, want it to name the constructor's failure", err)
	}
}

func TestParseMode(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]client.Mode{
		"sync": client.Sync, "synchronous": client.Sync, "async": client.Asyncio, "asyncio": client.Asyncio,
		"thread": client.Thread, "Threads": client.Thread, "proc": client.Process, "procs": client.Process,
		"process": client.Process, "ray": client.Fleet, "fleet": client.Fleet,
	} {
		if got, err := client.ParseMode(in); got != want || err != nil {
			t.Errorf("ParseMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestDefaultsInStats(t *testing.T) {
	t.Parallel()
	p := newPool(t, demo.DataProcessorKind, client.Options{}, 2)
	s := p.Stats()
	if s.Mode != client.Thread || s.TotalWorkers != 24 || s.MaxWorkers != 24 || s.MaxQueuedTasks != nil ||
		s.LoadBalancer.Algorithm != balancer.RoundRobin {
		t.Fatalf("default stats = %+v, want thread, 24 workers, no queue cap, round robin", s)
	}
}

func TestRoundRobinOrder(t *testing.T) {
	t.Parallel()
	p := newPool(t, demo.DataProcessorKind, client.Options{Mode: client.Thread, MaxWorkers: 3}, 1)
	var got []int
	for range 7 {
		got = append(got, result(t, client.Call[demo.Identity](p, "WhoAmI")).Index)
	}
	if want := []int{0, 1, 2, 0, 1, 2, 0}; !slices.Equal(got, want) {
		t.Fatalf("round robin dispatched to %v, want %v", got, want)
	}
}

func TestTotalDispatchedEveryAlgorithm(t *testing.T) {
	t.Parallel()
	for _, alg := range []balancer.Algorithm{balancer.RoundRobin, balancer.LeastActive, balancer.LeastTotal, balancer.Random} {
		t.Run(string(alg), func(t *testing.T) {
			t.Parallel()
			p := newPool(t, demo.DataProcessorKind, client.Options{MaxWorkers: 3, LoadBalancing: alg}, 2)
			futs := make([]*client.Future[int], 10)
			for i := range futs {
				futs[i] = client.Call[int](p, "Process", i)
			}
			for i, f := range futs {
				if got := result(t, f); got != 2*i {
					t.Fatalf("Process(%d) = %d", i, got)
				}
			}
			s := p.Stats()
			if s.LoadBalancer.TotalDispatched != 10 {
				t.Fatalf("total_dispatched = %d, want 10", s.LoadBalancer.TotalDispatched)
			}
			b, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"total_workers", "max_workers", "on_demand", "on_demand_active", "stopped", "max_queued_tasks", "load_balancer"} {
				if _, ok := m[k]; !ok {
					t.Errorf("stats JSON lacks %q: %s", k, b)
				}
			}
			lb := m["load_balancer"].(map[string]any)
			if lb["total_dispatched"] != float64(10) || lb["algorithm"] != alg.Name() {
				t.Errorf("load_balancer = %v, want algorithm %s and total_dispatched 10", lb, alg.Name())
			}
			calls := 0
			for i := range 3 {
				ws, err := p.WorkerStats(i)
				if err != nil {
					t.Fatal(err)
				}
				calls += int(ws.Calls)
			}
			if calls != 10 {
				t.Errorf("workers completed %d calls in all, want 10", calls)
			}
		})
	}
}

func TestWorkerStatsOutOfRange(t *testing.T) {
	t.Parallel()
	p := newPool(t, demo.DataProcessorKind, client.Options{MaxWorkers: 2}, 2)
	if _, err := p.WorkerStats(2); err == nil || !strings.Contains(err.Error(), "worker 2 out of range (pool size: 2)") {
		t.Fatalf("WorkerStats(2) error = %v", err)
	}
}

func TestLeastActiveAvoidsBusyWorker(t *testing.T) {
	t.Parallel()
	p := newPool(t, demo.SlowWorkerKind, client.Options{MaxWorkers: 3, LoadBalancing: balancer.LeastActive})
	slow := client.Call[demo.Identity](p, "Process", time.Minute)
	defer slow.Cancel()
	testutil.Eventually(t, 5*time.Second, func() error {
		for i := range 3 {
			if ws, _ := p.WorkerStats(i); ws.InFlight == 1 {
				return nil
			}
		}
		return errors.New("slow call not running yet")
	})
	busy := -1
	for i := range 3 {
		if ws, _ := p.WorkerStats(i); ws.InFlight == 1 {
			busy = i
		}
	}
	for range 6 {
		id := result(t, client.Call[demo.Identity](p, "Process", time.Millisecond))
		if id.Index == busy {
			t.Fatalf("least active sent a call to worker %d, busy with a slow call", busy)
		}
	}
	if !slow.Cancel() {
		t.Fatal("slow call finished before Cancel")
	}
	if _, err := slow.Result(context.Background()); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call error = %v, want context.Canceled", err)
	}
}

func TestAsyncioRunsCallsConcurrently(t *testing.T) {
	t.Parallel()
	p := newPool(t, demo.SlowWorkerKind, client.Options{Mode: client.Asyncio})
	start := time.Now()
	futs := make([]*client.Future[demo.Identity], 5)
	for i := range futs {
		futs[i] = client.Call[demo.Identity](p, "Process", 300*time.Millisecond)
	}
	for _, f := range futs {
		result(t, f)
	}
	// Five 300 ms calls one after another would take 1.5 s.
	if d := time.Since(start); d > 1200*time.Millisecond {
		t.Fatalf("5 concurrent 300ms calls took %s; asyncio mode ran them one at a time", d)
	}
}

func TestThreadWorkerRunsCallsInOrder(t *testing.T) {
	t.Parallel()
	p := newPool(t, demo.DataProcessorKind, client.Options{MaxWorkers: 1}, 1)
	futs := make([]*client.Future[int], 200)
	for i := range futs {
		futs[i] = client.Call[int](p, "Process", i)
	}
	n := client.Call[int](p, "Processed")
	if got := result(t, n); got != 200 {
		t.Fatalf("Processed after 200 calls = %d, want 200 (actor order)", got)
	}
}

func TestMaxQueuedTasksQueuesInPool(t *testing.T) {
	t.Parallel()
	p := newPool(t, demo.SlowWorkerKind, client.Options{MaxWorkers: 2, MaxQueuedTasks: 1, LoadBalancing: balancer.LeastActive})
	start := time.Now()
	futs := make([]*client.Future[demo.Identity], 6)
	for i := range futs {
		futs[i] = client.Call[demo.Identity](p, "Process", 100*time.Millisecond)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("6 calls took %s to submit; Call must not block", d)
	}
	s := p.Stats()
	if s.Queued != 4 || s.Pending != 6 || s.MaxQueuedTasks == nil || *s.MaxQueuedTasks != 1 {
		t.Fatalf("stats after submit = queued %d pending %d max_queued_tasks %v; want 4, 6, 1", s.Queued, s.Pending, s.MaxQueuedTasks)
	}
	for i := range 2 {
		if ws, _ := p.WorkerStats(i); ws.InFlight > 1 {
			t.Fatalf("worker %d holds %d calls, cap is 1", i, ws.InFlight)
		}
	}
	perWorker := map[int]int{}
	for _, f := range futs {
		perWorker[result(t, f).Index]++
	}
	if perWorker[0] != 3 || perWorker[1] != 3 {
		t.Fatalf("calls per worker = %v, want 3 and 3", perWorker)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if s := p.Stats(); s.Queued != 0 || s.Pending != 0 {
			return fmt.Errorf("after completion queued %d pending %d, want 0", s.Queued, s.Pending)
		}
		return nil
	})
}

func TestCancelQueuedCall(t *testing.T) {
	t.Parallel()
	p := newPool(t, demo.SlowWorkerKind, client.Options{MaxWorkers: 1, MaxQueuedTasks: 1})
	first := client.Call[demo.Identity](p, "Process", 200*time.Millisecond)
	queued := client.Call[demo.Identity](p, "Process", time.Hour)
	if !queued.Cancel() {
		t.Fatal("Cancel of a queued call returned false")
	}
	if queued.Cancel() {
		t.Fatal("second Cancel returned true")
	}
	if !errors.Is(queued.Err(), context.Canceled) {
		t.Fatalf("cancelled future Err = %v", queued.Err())
	}
	result(t, first)
	// The pool counts a call out just after its future resolves.
	testutil.Eventually(t, 5*time.Second, func() error {
		if s := p.Stats(); s.Pending != 0 {
			return fmt.Errorf("pending after cancel = %d, want 0", s.Pending)
		}
		return nil
	})
}

func TestResultContextEndsFirst(t *testing.T) {
	t.Parallel()
	p := newPool(t, demo.SlowWorkerKind, client.Options{MaxWorkers: 1})
	f := client.Call[demo.Identity](p, "Process", 200*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := f.Result(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Result with short ctx = %v, want DeadlineExceeded", err)
	}
	// The call goes on and succeeds.
	result(t, f)
}

func TestStopLetsAcceptedCallsFinish(t *testing.T) {
	t.Parallel()
	for _, mode := range localModes {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			p, err := client.New(context.Background(), demo.SlowWorkerKind, client.Options{Mode: mode, MaxQueuedTasks: 1})
			if err != nil {
				t.Fatal(err)
			}
			futs := make([]*client.Future[demo.Identity], 4)
			for i := range futs {
				futs[i] = client.Call[demo.Identity](p, "Process", 30*time.Millisecond)
			}
			if err := p.Stop(context.Background()); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			for i, f := range futs {
				if err := f.Err(); err != nil {
					t.Fatalf("accepted call %d failed: %v", i, err)
				}
			}
			if err := p.Stop(context.Background()); err != nil {
				t.Fatalf("second Stop: %v", err)
			}
			if _, err := client.Call[int](p, "Process", time.Millisecond).Result(context.Background()); !errors.Is(err, client.ErrPoolStopped) {
				t.Fatalf("call after Stop = %v, want ErrPoolStopped", err)
			}
			if !p.Stats().Stopped {
				t.Fatal("stats do not say stopped")
			}
		})
	}
}

func TestStopContextEndsFirst(t *testing.T) {
	t.Parallel()
	p, err := client.New(context.Background(), demo.SlowWorkerKind, client.Options{MaxWorkers: 1, MaxQueuedTasks: 1})
	if err != nil {
		t.Fatal(err)
	}
	running := client.Call[demo.Identity](p, "Process", time.Hour)
	queued := client.Call[demo.Identity](p, "Process", time.Hour)
	testutil.Eventually(t, 5*time.Second, func() error {
		if ws, _ := p.WorkerStats(0); ws.InFlight != 1 {
			return fmt.Errorf("in flight %d", ws.InFlight)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v, want DeadlineExceeded", err)
	}
	for name, f := range map[string]*client.Future[demo.Identity]{"running": running, "queued": queued} {
		err := f.Err()
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, client.ErrPoolStopped) {
			t.Errorf("%s call error = %v, want ErrPoolStopped wrapping DeadlineExceeded", name, err)
		}
	}
}

func TestCallsNeverBlockTheCaller(t *testing.T) {
	t.Parallel()
	p := newPool(t, demo.SlowWorkerKind, client.Options{MaxWorkers: 2, MaxQueuedTasks: 2})
	start := time.Now()
	futs := make([]*client.Future[demo.Identity], 10)
	for i := range futs {
		futs[i] = client.Call[demo.Identity](p, "Process", 50*time.Millisecond)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("submitting 10 slow calls took %s", d)
	}
	for _, f := range futs {
		result(t, f)
	}
}
