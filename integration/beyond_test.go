package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/internal/testutil"
)

var pooledModes = []client.Mode{client.Thread, client.Process, client.Fleet}

func TestResize(t *testing.T) {
	for _, mode := range pooledModes {
		t.Run(string(mode), func(t *testing.T) {
			opts := modeOptions(t, mode)
			opts.MaxWorkers, opts.MaxQueuedTasks = 2, 1
			p := newPool(t, demo.SlowWorkerKind, opts)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()

			// Grow under load: 12 calls of 100 ms queue behind 2 workers; growing to 4 takes the queue at once.
			futs := make([]*client.Future[demo.Identity], 12)
			for i := range futs {
				futs[i] = client.Call[demo.Identity](p, "Process", 100*time.Millisecond)
			}
			if err := p.Resize(ctx, 4); err != nil {
				t.Fatalf("grow: %v", err)
			}
			if s := p.Stats(); s.TotalWorkers != 4 || s.MaxWorkers != 4 {
				t.Fatalf("after growing: %d workers, max %d; want 4", s.TotalWorkers, s.MaxWorkers)
			}
			ids := map[string]bool{}
			for _, f := range futs {
				ids[result(t, f).ID] = true
			}
			if len(ids) != 4 {
				t.Fatalf("12 calls ran on %d workers after growing to 4", len(ids))
			}

			// Shrink with calls in flight: every accepted call finishes; nothing is lost.
			for i := range futs {
				futs[i] = client.Call[demo.Identity](p, "Process", 150*time.Millisecond)
			}
			testutil.Eventually(t, 10*time.Second, func() error {
				busy := 0
				for i := range 4 {
					if ws, err := p.WorkerStats(i); err == nil && ws.InFlight > 0 {
						busy++
					}
				}
				if busy != 4 {
					return fmt.Errorf("%d busy workers", busy)
				}
				return nil
			})
			if err := p.Resize(ctx, 1); err != nil {
				t.Fatalf("shrink: %v", err)
			}
			if s := p.Stats(); s.TotalWorkers != 1 || s.MaxWorkers != 1 {
				t.Fatalf("after shrinking: %d workers, max %d; want 1", s.TotalWorkers, s.MaxWorkers)
			}
			after := map[string]bool{}
			for i, f := range futs {
				id, err := f.Result(ctx)
				if err != nil {
					t.Fatalf("call %d lost while shrinking: %v", i, err)
				}
				after[id.ID] = true
			}
			if len(after) != 4 {
				t.Fatalf("calls accepted before the shrink ran on %d workers, want all 4", len(after))
			}
			last := result(t, client.Call[demo.Identity](p, "Process", time.Millisecond))
			ws, err := p.WorkerStats(0)
			if err != nil || ws.ID != last.ID {
				t.Fatalf("the remaining worker is %q (%v), the last call ran on %q", ws.ID, err, last.ID)
			}
		})
	}
	p := newPool(t, demo.DataProcessorKind, client.Options{Mode: client.Sync}, 1)
	if err := p.Resize(context.Background(), 2); !errors.Is(err, client.ErrInvalidOptions) {
		t.Fatalf("Resize of a sync pool = %v, want ErrInvalidOptions", err)
	}
}

func TestPriorityOrderAndAging(t *testing.T) {
	for _, mode := range pooledModes {
		t.Run(string(mode), func(t *testing.T) {
			opts := modeOptions(t, mode)
			opts.MaxWorkers, opts.MaxQueuedTasks, opts.PriorityAging = 1, 1, time.Hour
			p := newPool(t, demo.DataProcessorKind, opts, 1)
			slow := newPool(t, demo.SlowWorkerKind, opts)

			// Priorities order the queue; equal priorities keep arrival order.
			blocker := client.Call[demo.Identity](slow, "Process", 300*time.Millisecond)
			var futs []*client.Future[demo.Identity]
			for _, prio := range []int{0, 5, 0, 10, 5} {
				futs = append(futs, client.CallWith[demo.Identity](slow, client.CallOptions{Priority: prio}, "Process", time.Millisecond))
			}
			result(t, blocker)
			var order []int
			for i := range client.AsCompleted(context.Background(), futs) {
				order = append(order, i)
			}
			if want := []int{3, 1, 4, 0, 2}; !slices.Equal(order, want) {
				t.Fatalf("completion order %v, want %v (priority 10, then 5s, then 0s, each in arrival order)", order, want)
			}
			_ = p
		})
	}
	// Aging: with 50 ms per point, a priority-0 call that waited 400 ms goes before priority-5 calls that arrive
	// later, however many of them keep coming.
	p := newPool(t, demo.SlowWorkerKind, client.Options{MaxWorkers: 1, MaxQueuedTasks: 1, PriorityAging: 50 * time.Millisecond})
	blocker := client.Call[demo.Identity](p, "Process", 600*time.Millisecond)
	low := client.CallWith[demo.Identity](p, client.CallOptions{Priority: 0}, "Process", time.Millisecond)
	time.Sleep(400 * time.Millisecond)
	var highs []*client.Future[demo.Identity]
	for range 20 {
		highs = append(highs, client.CallWith[demo.Identity](p, client.CallOptions{Priority: 5}, "Process", time.Millisecond))
	}
	result(t, blocker)
	all := append([]*client.Future[demo.Identity]{low}, highs...)
	first := -1
	for i := range client.AsCompleted(context.Background(), all) {
		first = i
		break
	}
	if first != 0 {
		t.Fatalf("first call to run after the blocker was %d, want the aged low-priority call (0)", first)
	}
	if _, err := client.Gather(context.Background(), all); err != nil {
		t.Fatal(err)
	}
}

func TestUnhealthyWorkerIsReplaced(t *testing.T) {
	for _, mode := range pooledModes {
		t.Run(string(mode), func(t *testing.T) {
			opts := modeOptions(t, mode)
			opts.MaxWorkers = 2
			opts.HealthCheck = client.HealthCheck{Method: "HealthCheck", Interval: 100 * time.Millisecond}
			p := newPool(t, demo.HealthCheckedKind, opts)
			testutil.Eventually(t, 10*time.Second, func() error {
				ws, err := p.WorkerStats(0)
				if err != nil || ws.Health == nil || !ws.Health.Healthy {
					return fmt.Errorf("worker 0 health %+v (%v)", ws.Health, err)
				}
				return nil
			})
			sick, err := p.WorkerStats(0)
			if err != nil {
				t.Fatal(err)
			}
			result(t, client.Call[any](p, "Break")) // round robin: worker 0
			testutil.Eventually(t, 10*time.Second, func() error {
				if n := p.Stats().Replaced; n != 1 {
					return fmt.Errorf("%d workers replaced", n)
				}
				if n := p.Stats().TotalWorkers; n != 2 {
					return fmt.Errorf("%d workers", n)
				}
				return nil
			})
			for i := range 2 {
				ws, err := p.WorkerStats(i)
				if err != nil {
					t.Fatal(err)
				}
				if ws.ID == sick.ID {
					t.Fatalf("unhealthy worker %s still in rotation", sick.ID)
				}
			}
			for i := range 6 {
				if got := result(t, client.Call[int](p, "Process", i)); got != 2*i {
					t.Fatalf("Process(%d) = %d after the replacement", i, got)
				}
			}
		})
	}
}

func TestInvokeInEveryMode(t *testing.T) {
	for _, mode := range allModes {
		t.Run(string(mode), func(t *testing.T) {
			opts := modeOptions(t, mode)
			dp := newPool(t, demo.DataProcessorKind, opts, 10)
			f := client.Invoke(dp, (*demo.DataProcessor).Process, 42) // *client.Future[int]
			if got := result(t, f); got != 420 {
				t.Fatalf("Invoke Process(42) = %d", got)
			}
			// One Process call so far: the worker asked next (worker 0 again only when it is the pool's only one)
			// processed one value or none.
			want := 0
			if opts.MaxWorkers <= 1 {
				want = 1
			}
			if n := result(t, client.Invoke0(dp, (*demo.DataProcessor).Processed)); n != want {
				t.Fatalf("Invoke0 Processed = %d, want %d", n, want)
			}
			id := result(t, client.InvokeCtx0(dp, (*demo.DataProcessor).WhoAmI))
			if id.ID == "" {
				t.Fatal("InvokeCtx0 WhoAmI returned no worker ID")
			}
			risky := newPool(t, demo.RiskyWorkerKind, opts)
			if _, err := client.InvokeE(risky, (*demo.RiskyWorker).RiskyOperation, -1).Result(context.Background()); !errors.Is(err, demo.ErrNegative) {
				t.Fatalf("InvokeE error = %v", err)
			}
			// A method of another kind is refused before dispatch.
			if _, err := client.Invoke(dp, (*demo.Processor).Process, demo.Document{}).Result(context.Background()); !errors.Is(err, client.ErrInvalidOptions) {
				t.Fatalf("Invoke of another kind's method = %v, want ErrInvalidOptions", err)
			}
		})
	}
}

func TestInvokeWrongTypesDoNotCompile(t *testing.T) {
	out, err := exec.Command("go", "build", "-o", os.DevNull, "./testdata/badinvoke").CombinedOutput()
	if err == nil {
		t.Fatalf("the compiler accepted testdata/badinvoke:\n%s", out)
	}
	for _, want := range []string{
		`cannot use "forty-two"`, // wrong argument type
		"Proces undefined",       // misspelt method
		"cannot use f (variable of type *client.Future[int])", // wrong result type
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("compiler output lacks %q:\n%s", want, out)
		}
	}
}
