package integration

import (
	"context"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/internal/testutil"
)

// TestFleetOf4096Workers makes a fleet pool of 4,096 workers on 4 agent processes, keeps 256 calls in flight over
// them for 20,000 calls (they travel through the agents' calls subjects, many workers' calls in one message), and
// stops it: every call succeeds with its result, no connection is cut off as a slow consumer, and the agents have
// all their capacity back.
func TestFleetOf4096Workers(t *testing.T) {
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	url := srv.ClientURL()
	var agents []*exec.Cmd
	for range 4 {
		agents = append(agents, startAgent(t, url, "--capacity", "1024"))
	}
	nc := testutil.Connect(t, url)
	start := time.Now()
	p := newPool(t, demo.DataProcessorKind, client.Options{Mode: client.Fleet, MaxWorkers: 4096, Conn: nc,
		StartTimeout: time.Minute}, 10)
	created := time.Since(start)
	if free, capacity := freeCapacity(t, url); free != 0 || capacity != 4096 {
		t.Fatalf("agents have %d of %d slots free with the pool running, want 0 of 4096", free, capacity)
	}
	const calls, depth = 20000, 256
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	futs := make([]*client.Future[int], depth)
	start = time.Now()
	for i := range calls + depth {
		if f := futs[i%depth]; f != nil {
			j := i - depth
			if v, err := f.Result(ctx); err != nil || v != 10*(j%1000) {
				t.Fatalf("Process(%d) = %d, %v; want %d", j%1000, v, err, 10*(j%1000))
			}
		}
		if i < calls {
			futs[i%depth] = client.Call[int](p, "Process", i%1000)
		} else {
			futs[i%depth] = nil
		}
	}
	took := time.Since(start)
	ids := map[string]bool{}
	for i := range 4096 {
		ws, err := p.WorkerStats(i)
		if err != nil {
			t.Fatal(err)
		}
		ids[ws.ID] = true
	}
	start = time.Now()
	sctx, scancel := context.WithTimeout(context.Background(), time.Minute)
	defer scancel()
	if err := p.Stop(sctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	stopped := time.Since(start)
	t.Logf("4,096 workers: created in %s, %d calls at %d in flight in %s (%.0f calls/s), stopped in %s",
		created.Round(time.Millisecond), calls, depth, took.Round(time.Millisecond), calls/took.Seconds(),
		stopped.Round(time.Millisecond))
	if len(ids) != 4096 {
		t.Errorf("%d distinct workers, want 4096", len(ids))
	}
	if n := srv.Server().NumSlowConsumers(); n != 0 {
		t.Errorf("the server cut %d connections off as slow consumers", n)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if free, capacity := freeCapacity(t, url); free != capacity {
			return fmt.Errorf("agents have %d of %d slots free after Stop", free, capacity)
		}
		return nil
	})
	for _, a := range agents {
		stopProcess(t, a)
	}
}
