package integration

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/natsfleet/natsfleet/balancer"
	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/testutil"
)

func TestProcessModeResultsAndErrors(t *testing.T) {
	p := newPool(t, demo.DataProcessorKind, client.Options{Mode: client.Process, MaxWorkers: 4}, 10)
	if got := result(t, client.Call[int](p, "Process", 42)); got != 420 {
		t.Fatalf("Process(42) = %d, want 420", got)
	}
	var order []int
	for range 6 {
		order = append(order, result(t, client.Call[demo.Identity](p, "WhoAmI")).Index)
	}
	if want := []int{1, 2, 3, 0, 1, 2}; !slices.Equal(order, want) {
		t.Fatalf("round robin order = %v, want %v", order, want)
	}
	if s := p.Stats(); s.TotalWorkers != 4 || s.MaxQueuedTasks == nil || *s.MaxQueuedTasks != 100 {
		t.Fatalf("stats = %+v", s)
	}

	risky := newPool(t, demo.RiskyWorkerKind, client.Options{Mode: client.Process, MaxWorkers: 2})
	ctx := context.Background()
	_, err := client.Call[int](risky, "RiskyOperation", -3).Result(ctx)
	var re *fleet.RemoteError
	if !errors.Is(err, demo.ErrNegative) || !errors.As(err, &re) || !strings.Contains(err.Error(), "-3") {
		t.Fatalf("error across processes = %v, want a RemoteError matching demo.ErrNegative", err)
	}
	_, err = client.Call[int](risky, "RiskyOperation", -13).Result(ctx)
	if !errors.As(err, &re) || !strings.Contains(re.Stack, "RiskyOperation") || re.Type != "*fleet.PanicError" {
		t.Fatalf("panic across processes = %v (%+v), want a RemoteError with the worker's stack", err, re)
	}
	if got := result(t, client.Call[int](risky, "RiskyOperation", 5)); got != 10 {
		t.Fatalf("after a panic RiskyOperation(5) = %d, want 10", got)
	}
	_, err = client.Call[int](risky, "Nope").Result(ctx)
	if !errors.Is(err, fleet.ErrUnknownMethod) || !strings.Contains(err.Error(), "Nope") {
		t.Fatalf("unknown method = %v", err)
	}
	_, err = client.Call[int](risky, "RiskyOperation", "five").Result(ctx)
	if !errors.Is(err, fleet.ErrBadArguments) || !strings.Contains(err.Error(), "int") {
		t.Fatalf("bad arguments = %v", err)
	}
}

func TestProcessModeLeastActiveAvoidsBusyWorker(t *testing.T) {
	p := newPool(t, demo.SlowWorkerKind, client.Options{Mode: client.Process, MaxWorkers: 3, LoadBalancing: balancer.LeastActive})
	slow := client.Call[demo.Identity](p, "Process", time.Minute)
	busy := -1
	testutil.Eventually(t, 10*time.Second, func() error {
		for i := range 3 {
			if ws, err := p.WorkerStats(i); err == nil && ws.InFlight == 1 {
				busy = i
				return nil
			}
		}
		return errors.New("slow call not running")
	})
	for range 6 {
		id := result(t, client.Call[demo.Identity](p, "Process", time.Millisecond))
		if id.Index == busy {
			t.Fatalf("least active sent a call to worker %d, busy with a slow call", busy)
		}
	}
	start := time.Now()
	if !slow.Cancel() {
		t.Fatal("slow call ended before Cancel")
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		ws, err := p.WorkerStats(busy)
		if err != nil {
			return err
		}
		if ws.InFlight != 0 {
			return errors.New("cancelled call still running on the worker")
		}
		return nil
	})
	if d := time.Since(start); d > time.Second {
		t.Fatalf("cancel took %s to reach the worker", d)
	}
}

func TestPipelinedCallsTravelInBatches(t *testing.T) {
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, srv.ClientURL())
	p := newPool(t, demo.DataProcessorKind, client.Options{Mode: client.Process, MaxWorkers: 2, Conn: nc}, 3)
	result(t, client.Call[int](p, "Process", 1)) // the workers' heartbeats say they take batches
	before := nc.Stats()
	const n = 2000
	checkProcessed(t, submitProcess(p, n), 3)
	after := nc.Stats()
	sent, received := after.OutMsgs-before.OutMsgs, after.InMsgs-before.InMsgs
	// A backlog builds at once (2000 calls, 200 slots): most calls travel in batches, and so do their replies.
	if sent >= n/2 || received >= n/2 {
		t.Fatalf("%d calls took %d messages out and %d in; want batches (fewer than %d each way)", n, sent, received, n/2)
	}
	t.Logf("%d calls: %d messages out, %d in", n, sent, received)
}

// A caller keeping calls in flight and waiting for them in order (a ring of futures) hands them to round-robin
// workers in runs, a stretch of consecutive calls per worker, instead of one call to each worker in turn; the
// workers still share the calls evenly.
func TestPipelinedCallsGoToWorkersInRuns(t *testing.T) {
	p := newPool(t, demo.DataProcessorKind, client.Options{Mode: client.Process, MaxWorkers: 2}, 3)
	result(t, client.Call[int](p, "Process", 1)) // the workers' heartbeats say they take batches
	const depth, warmup, n = 64, 1000, 4000
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ring := make([]*client.Future[demo.Identity], depth)
	var workers []int
	for i := range n + depth {
		if f := ring[i%depth]; f != nil {
			id, err := f.Result(ctx)
			if err != nil {
				t.Fatal(err)
			}
			workers = append(workers, id.Index)
		}
		if i < n {
			ring[i%depth] = client.Call[demo.Identity](p, "WhoAmI")
		}
	}
	steady := workers[warmup:]
	switches, first := 0, 0
	for i, w := range steady {
		if i > 0 && w != steady[i-1] {
			switches++
		}
		if w == steady[0] {
			first++
		}
	}
	// One call to each worker in turn switches workers at every call; runs of 32 (64 in flight on 2 workers) switch
	// about 100 times.
	if switches > len(steady)/4 {
		t.Errorf("%d calls in a ring of %d switched workers %d times; want runs (at most %d switches)", len(steady), depth, switches, len(steady)/4)
	}
	if share := float64(first) / float64(len(steady)); share < 0.4 || share > 0.6 {
		t.Errorf("worker %d ran %.0f%% of %d calls; want 40–60%%", steady[0], 100*share, len(steady))
	}
	t.Logf("%d calls, %d worker switches", len(steady), switches)
}

// Slow calls are still handed out one at a time: after a pipeline of short calls and a pause, a burst of slow calls
// gives every worker the same number.
func TestSlowBurstAfterPipelineSpreadsEvenly(t *testing.T) {
	p := newPool(t, demo.SlowWorkerKind, client.Options{Mode: client.Process, MaxWorkers: 4})
	ring := make([]*client.Future[demo.Identity], 256)
	for i := range 4000 {
		if f := ring[i%len(ring)]; f != nil {
			result(t, f)
		}
		ring[i%len(ring)] = client.Call[demo.Identity](p, "Process", time.Duration(0))
	}
	if _, err := client.Gather(context.Background(), ring); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // a pause: the pool has no call in flight
	futs := make([]*client.Future[demo.Identity], 8)
	for i := range futs {
		futs[i] = client.Call[demo.Identity](p, "Process", 100*time.Millisecond)
	}
	ids, err := client.Gather(context.Background(), futs)
	if err != nil {
		t.Fatal(err)
	}
	per := map[int]int{}
	for _, id := range ids {
		per[id.Index]++
	}
	if want := map[int]int{0: 2, 1: 2, 2: 2, 3: 2}; !maps.Equal(per, want) {
		t.Fatalf("8 slow calls on 4 workers ran %v times per worker index; want 2 each", per)
	}
}

// Calls submitted in a burst to idle workers wait for their caller to wait, then travel in one batch per worker; the
// first goes at once, since nothing says a burst follows it. Calls nobody waits for leave by themselves.
func TestBurstToIdleWorkersTravelsTogether(t *testing.T) {
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, srv.ClientURL())
	p := newPool(t, demo.DataProcessorKind, client.Options{Mode: client.Process, MaxWorkers: 2, Conn: nc}, 3)
	result(t, client.Call[int](p, "Process", 1)) // the workers' heartbeats say they take batches
	const n = 20
	// The first call alone, and a batch per worker. Without holding back, the first call to each worker would go
	// alone (4 messages). A machine that stalls the burst past the batch delay sends more: the best of a few tries
	// counts.
	best := uint64(n)
	for range 5 {
		before := nc.Stats()
		checkProcessed(t, submitProcess(p, n), 3)
		best = min(best, nc.Stats().OutMsgs-before.OutMsgs)
		if best <= 3 {
			break
		}
	}
	if best > 3 {
		t.Fatalf("a burst of %d calls to 2 idle workers took at best %d messages, want 3", n, best)
	}
	futs := submitProcess(p, n)
	testutil.Eventually(t, 5*time.Second, func() error {
		if s := p.Stats(); s.Pending != 0 {
			return fmt.Errorf("%d calls nobody waits for still pending", s.Pending)
		}
		return nil
	})
	checkProcessed(t, futs, 3)
}

// A call behind an unanswered one waits in the outbox for company only briefly: it leaves long before the worker
// answers the call ahead of it, and the worker runs it next.
func TestBacklogCallLeavesBeforeTheAnswerAhead(t *testing.T) {
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, srv.ClientURL())
	p := newPool(t, demo.SlowWorkerKind, client.Options{Mode: client.Process, MaxWorkers: 1, Conn: nc})
	result(t, client.Call[demo.Identity](p, "Process", time.Millisecond)) // the heartbeats say it takes batches
	before := nc.Stats().OutMsgs
	start := time.Now()
	slow := client.Call[demo.Identity](p, "Process", 2*time.Second)
	next := client.Call[demo.Identity](p, "Process", time.Millisecond)
	testutil.Eventually(t, time.Second, func() error {
		if sent := nc.Stats().OutMsgs - before; sent < 2 {
			return fmt.Errorf("%d call messages sent, want 2: the second call still waits for the first's answer", sent)
		}
		return nil
	})
	if d := time.Since(start); d >= 2*time.Second {
		t.Fatalf("the second call left after %s, not before the first was answered", d)
	}
	result(t, slow)
	result(t, next)
}

// procsProbe reports the GOMAXPROCS of the process it runs in.
type procsProbe struct{}

func (*procsProbe) MaxProcs() int { return runtime.GOMAXPROCS(0) }

var procsProbeKind = fleet.Register("ProcsProbe", func() *procsProbe { return &procsProbe{} })

func TestProcessModeChildMaxProcs(t *testing.T) {
	inherited, _ := strconv.Atoi(os.Getenv("GOMAXPROCS"))
	tests := []struct {
		set, want int
	}{
		{0, 1},
		{2, 2},
		{-1, runtime.NumCPU()},
	}
	for _, tc := range tests {
		want := tc.want
		if inherited > 0 {
			want = inherited // this program's own setting is passed on
		}
		p := newPool(t, procsProbeKind, client.Options{Mode: client.Process, MaxWorkers: 1, ChildMaxProcs: tc.set})
		if got := result(t, client.Call[int](p, "MaxProcs")); got != want {
			t.Errorf("ChildMaxProcs %d: the child runs with GOMAXPROCS %d, want %d", tc.set, got, want)
		}
	}
}
