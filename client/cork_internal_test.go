package client

import (
	"context"
	"testing"
	"time"

	"github.com/natsfleet/natsfleet/examples/demo"
)

// Calls nobody waits for leave on their timer, and each worker's handle stays in the list of held-back outboxes once
// at most, however many bursts go by.
func TestCorkedHandlesListedOnce(t *testing.T) {
	p, err := New(context.Background(), demo.DataProcessorKind, Options{Mode: Process, MaxWorkers: 2}, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(context.Background())
	be := p.be.(*remoteBackend)
	var futs []*Future[int]
	for range 20 {
		for i := range 10 {
			futs = append(futs, Call[int](p, "Process", i))
		}
		// Waiting on a future would send the held-back calls; the pool's count of pending calls does not.
		deadline := time.Now().Add(5 * time.Second)
		for p.pending() != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%d calls nobody waits for still pending after 5s", p.pending())
			}
			time.Sleep(time.Millisecond)
		}
	}
	be.corkMu.Lock()
	listed := len(be.corked)
	be.corkMu.Unlock()
	if listed > 2 {
		t.Fatalf("%d handles listed as held back, want at most the pool's 2", listed)
	}
	for i, f := range futs {
		if v, err := f.Result(context.Background()); err != nil || v != 3*(i%10) {
			t.Fatalf("call %d: %d, %v; want %d", i, v, err, 3*(i%10))
		}
	}
}
