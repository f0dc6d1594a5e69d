package integration

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/internal/testutil"
)

func TestFleetModeSpawnsOnAgents(t *testing.T) {
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	startAgent(t, srv.ClientURL(), "--capacity", "2")
	startAgent(t, srv.ClientURL(), "--capacity", "3")
	nc := testutil.Connect(t, srv.ClientURL())

	// MaxWorkers 0 takes all the capacity the agents offer.
	p := newPool(t, demo.DataProcessorKind, client.Options{Mode: client.Fleet, Conn: nc}, 7)
	if n := p.Stats().TotalWorkers; n != 5 {
		t.Fatalf("fleet pool has %d workers, want the 5 the agents offer", n)
	}
	hosts := map[int]int{}
	for i := range 5 {
		ws, err := p.WorkerStats(i)
		if err != nil {
			t.Fatal(err)
		}
		hosts[ws.PID]++
	}
	if len(hosts) != 2 {
		t.Fatalf("workers run in processes %v, want the two agents", hosts)
	}
	for _, n := range hosts {
		if n != 2 && n != 3 {
			t.Fatalf("placement %v, want 2 and 3 workers (each agent's capacity)", hosts)
		}
	}
	checkProcessed(t, submitProcess(p, 50), 7)
	// The capacity is in use: a second pool asking for more than is free is refused.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := client.New(ctx, demo.DataProcessorKind, client.Options{Mode: client.Fleet, Conn: nc, MaxWorkers: 1}, 1); !errors.Is(err, client.ErrNoWorkers) {
		t.Fatalf("pool beyond the fleet's capacity: %v, want ErrNoWorkers", err)
	}
}

func TestAttachSeesWorkersJoinAndLeave(t *testing.T) {
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	url := srv.ClientURL()
	startAgent(t, url, "--capacity", "0", "--serve", "DataProcessor=2", "--args", "DataProcessor=[10]")
	nc := testutil.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := client.Attach(ctx, nc, "DataProcessor", client.Options{LoadBalancing: "least_active"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if n := p.Stats().TotalWorkers; n != 2 {
		t.Fatalf("attached to %d standing workers, want 2", n)
	}
	if got := result(t, client.Call[int](p, "Process", 5)); got != 50 {
		t.Fatalf("Process(5) = %d", got)
	}

	late := startAgent(t, url, "--capacity", "0", "--serve", "DataProcessor=1", "--args", "DataProcessor=[10]")
	testutil.Eventually(t, 10*time.Second, func() error {
		if n := p.Stats().TotalWorkers; n != 3 {
			return fmt.Errorf("%d workers, want 3 after one joined", n)
		}
		return nil
	})
	if err := late.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = late.Wait()
	testutil.Eventually(t, 10*time.Second, func() error {
		if n := p.Stats().TotalWorkers; n != 2 {
			return fmt.Errorf("%d workers, want 2 after one died", n)
		}
		return nil
	})
	for i := range 6 {
		if got := result(t, client.Call[int](p, "Process", i)); got != 10*i {
			t.Fatalf("Process(%d) = %d", i, got)
		}
	}
	// Stop leaves standing workers running: a new pool still finds them.
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	again, err := client.Attach(ctx, nc, "DataProcessor", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if n := again.Stats().TotalWorkers; n != 2 {
		t.Fatalf("after Stop of the first pool, %d standing workers, want 2", n)
	}
}

// TestCallsToGoneWorkersFailWithinLiveness kills the agent of an attached pool's standing workers: a call sent then
// meets NATS no responders, which may also mean a worker not back from a reconnect yet, so it waits for the worker's
// liveness (three heartbeat intervals) and fails with ErrWorkerLost; calls after that fail at once with ErrNoWorkers.
func TestCallsToGoneWorkersFailWithinLiveness(t *testing.T) {
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	agent := startAgent(t, srv.ClientURL(), "--capacity", "0", "--serve", "DataProcessor=2", "--args", "DataProcessor=[3]")
	nc := testutil.Connect(t, srv.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := client.Attach(ctx, nc, "DataProcessor", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if got := result(t, client.Call[int](p, "Process", 3)); got != 9 {
		t.Fatalf("Process(3) = %d", got)
	}
	if err := agent.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = agent.Wait()
	killed := time.Now()
	_, err = client.Call[int](p, "Process", 1).Result(ctx)
	if !errors.Is(err, client.ErrWorkerLost) {
		t.Fatalf("call to a killed fleet = %v, want ErrWorkerLost", err)
	}
	// Three intervals of 1 s after the last heartbeat, which came at most an interval before the kill.
	if d := time.Since(killed); d > 4*time.Second {
		t.Fatalf("call failed %s after the kill, want within three heartbeat intervals", d)
	}
	for i := range 3 {
		start := time.Now()
		if _, err := client.Call[int](p, "Process", i).Result(ctx); !errors.Is(err, client.ErrNoWorkers) {
			t.Fatalf("call %d to a pool with no workers = %v, want ErrNoWorkers", i, err)
		}
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Fatalf("call %d took %s to fail", i, d)
		}
	}
}

func TestThreeNodeCluster(t *testing.T) {
	nodes := testutil.StartCluster(t, 3, broker.EmbeddedOptions{})
	// The cluster is formed when a subscription on node 3 is seen from node 1.
	nc3 := testutil.Connect(t, nodes[2].ClientURL())
	sub, err := nc3.SubscribeSync("probe")
	if err != nil {
		t.Fatal(err)
	}
	nc1 := testutil.Connect(t, nodes[0].ClientURL())
	testutil.Eventually(t, 20*time.Second, func() error {
		if err := nc1.Publish("probe", nil); err != nil {
			return err
		}
		if _, err := sub.NextMsg(100 * time.Millisecond); err != nil {
			return fmt.Errorf("node 1 does not reach node 3: %w", err)
		}
		return nil
	})
	var agents []*exec.Cmd
	agents = append(agents, startAgent(t, nodes[1].ClientURL(), "--capacity", "2"))
	agents = append(agents, startAgent(t, nodes[2].ClientURL(), "--capacity", "2"))
	p := newPool(t, demo.DataProcessorKind, client.Options{Mode: client.Fleet, Conn: nc1, LoadBalancing: "least_total"}, 5)
	if n := p.Stats().TotalWorkers; n != 4 {
		t.Fatalf("%d workers across the cluster, want 4", n)
	}
	pids := map[int]bool{}
	for i := range 4 {
		ws, err := p.WorkerStats(i)
		if err != nil {
			t.Fatal(err)
		}
		pids[ws.PID] = true
	}
	if len(pids) != 2 || !pids[agents[0].Process.Pid] || !pids[agents[1].Process.Pid] {
		t.Fatalf("workers in processes %v, want the agents on nodes 2 and 3 (%d, %d)", pids, agents[0].Process.Pid, agents[1].Process.Pid)
	}
	checkProcessed(t, submitProcess(p, 40), 5)
	if tc := p.Stats().LoadBalancer.TotalCalls; len(tc) != 4 {
		t.Fatalf("least total spread %v, want 10 calls on each of 4 workers", tc)
	} else {
		for slot, n := range tc {
			if n != 10 {
				t.Fatalf("least total spread %v: worker %d got %d, want 10", tc, slot, n)
			}
		}
	}
}
