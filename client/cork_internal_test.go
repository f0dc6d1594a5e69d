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
	tr := p.tr.(*remoteTransport)
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
	tr.corks.mu.Lock()
	listed := len(tr.corks.ws)
	tr.corks.mu.Unlock()
	if listed > 2 {
		t.Fatalf("%d handles listed as held back, want at most the pool's 2", listed)
	}
	for i, f := range futs {
		if v, err := f.Result(context.Background()); err != nil || v != 3*(i%10) {
			t.Fatalf("call %d: %d, %v; want %d", i, v, err, 3*(i%10))
		}
	}
}

// A call's caller can have its result, and submit the next call, before the call is counted out of pending (which
// Stop waits for): the guess that a call to an idle worker starts a burst must not count it.
func TestInFlightExcludesCallsWhoseResultIsOut(t *testing.T) {
	p, err := New(context.Background(), demo.DataProcessorKind, Options{Mode: Process, MaxWorkers: 1}, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(context.Background())
	type counts struct{ pending, inFlight int64 }
	got := make(chan counts, 1)
	Call[int](p, "Process", 1).OnDone(func(int, error) { got <- counts{p.pending(), p.inFlight()} })
	select {
	case c := <-got:
		if c != (counts{pending: 1, inFlight: 0}) {
			t.Fatalf("in the call's OnDone callback: pending %d, in flight %d; want 1, 0", c.pending, c.inFlight)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no result in 30s")
	}
}
