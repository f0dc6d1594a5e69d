package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/natsfleet/natsfleet/balancer"
	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/internal/testutil"
)

// TestLeastActiveSeesOtherClients has two client processes share eight standing workers, least-active both: one
// keeps four of them busy with calls of 2 s, then the other sends four calls of 50 ms. The workers report their load
// from every caller, so none of the four lands on a busy worker and all are done in well under the 2 s.
func TestLeastActiveSeesOtherClients(t *testing.T) {
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	url := srv.ClientURL()
	dir := t.TempDir()
	args, err := json.Marshal([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	agent := startTestAgent(t, url, "--capacity", "-1", "--serve", "Ledger=8", "--args", string(args))
	nc := testutil.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := client.Attach(ctx, nc, "Ledger", client.Options{LoadBalancing: balancer.LeastActive})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Stop(ctx) }()
	testutil.Eventually(t, 10*time.Second, func() error {
		if n := p.Stats().TotalWorkers; n != 8 {
			return fmt.Errorf("%d workers attached, want 8", n)
		}
		return nil
	})
	startTestClient(t, childScenario{Name: "sharer", URL: url, Dir: dir}, "holding")
	busy := map[string]bool{}
	for i := range 8 {
		ws, err := p.WorkerStats(i)
		if err != nil {
			t.Fatal(err)
		}
		if ws.InFlight > 0 {
			busy[ws.ID] = true
		}
	}
	if len(busy) != 4 {
		t.Fatalf("%d workers busy with the other client's calls, want 4", len(busy))
	}
	start := time.Now()
	futs := make([]*client.Future[string], 4)
	for i := range futs {
		futs[i] = client.Call[string](p, "Where", 50*time.Millisecond)
	}
	got, err := client.Gather(ctx, futs)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	onBusy := 0
	for _, id := range got {
		if busy[id] {
			onBusy++
		}
	}
	t.Logf("4 calls of 50 ms beside the other client's 4 of 2 s: %d on busy workers, done in %s", onBusy,
		took.Round(time.Millisecond))
	if onBusy != 0 || took > time.Second {
		t.Fatalf("%d of 4 calls landed on workers busy with the other client's calls, done in %s; want 0, under 1s",
			onBusy, took)
	}
	stopProcess(t, agent)
}
