package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/internal/testutil"
	"github.com/natsfleet/natsfleet/limits"
)

func TestSharedCallLimitAcrossWorkers(t *testing.T) {
	for _, mode := range []client.Mode{client.Thread, client.Process} {
		t.Run(string(mode), func(t *testing.T) {
			p := newPool(t, demo.APIWorkerKind, client.Options{Mode: mode, MaxWorkers: 4,
				Limits: []limits.Limit{limits.CallLimit{Window: time.Second, Capacity: 20}}}, "key")
			start := time.Now()
			futs := make([]*client.Future[string], 100)
			for i := range futs {
				futs[i] = client.Call[string](p, "CallAPI", fmt.Sprintf("prompt %d", i))
			}
			if _, err := client.Gather(context.Background(), futs); err != nil {
				t.Fatal(err)
			}
			// 20 calls per second shared by the pool: 100 calls need four more windows after the first 20. Four
			// workers with a limit each would be done in about one second.
			if d := time.Since(start); d < 3500*time.Millisecond {
				t.Fatalf("100 calls under a shared 20/s limit took %s, want more than 3.5s", d)
			}
		})
	}
}

func TestSharedResourceLimitAcrossProcesses(t *testing.T) {
	p := newPool(t, demo.DatabaseWorkerKind, client.Options{Mode: client.Process, MaxWorkers: 3, MaxQueuedTasks: 2,
		Limits: []limits.Limit{limits.ResourceLimit{Key: "connections", Capacity: 3}}})
	start := time.Now()
	futs := make([]*client.Future[demo.Span], 6)
	for i := range futs {
		futs[i] = client.Call[demo.Span](p, "Query", "select 1", time.Second)
	}
	spans, err := client.Gather(context.Background(), futs)
	if err != nil {
		t.Fatal(err)
	}
	d := time.Since(start)
	if d < 1900*time.Millisecond || d > 4*time.Second {
		t.Fatalf("6 one-second holds of 3 shared connections took %s, want about 2s", d)
	}
	// The workers recorded when they held a connection: never more than 3 at once.
	type edge struct {
		at    int64
		delta int
	}
	var edges []edge
	for _, s := range spans {
		edges = append(edges, edge{s.Start, 1}, edge{s.End, -1})
	}
	slices.SortFunc(edges, func(a, b edge) int {
		if a.at != b.at {
			return int(a.at - b.at)
		}
		return a.delta - b.delta // releases before acquisitions at the same millisecond
	})
	holders, peak := 0, 0
	for _, e := range edges {
		holders += e.delta
		peak = max(peak, holders)
	}
	if peak > 3 {
		t.Fatalf("%d holders at once of a 3-connection limit: %+v", peak, spans)
	}
}

func TestNamedLimitSetSharedByPools(t *testing.T) {
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, srv.ClientURL())
	set, err := limits.NewSet(limits.SetOptions{Name: "openai", Conn: nc}, limits.CallLimit{Window: time.Second, Capacity: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	// Two pools in two modes share one budget through the set's name.
	a := newPool(t, demo.APIWorkerKind, client.Options{Mode: client.Thread, MaxWorkers: 2, LimitSet: set}, "a")
	b := newPool(t, demo.APIWorkerKind, client.Options{Mode: client.Process, MaxWorkers: 2, Conn: nc, LimitSet: set}, "b")
	start := time.Now()
	var futs []*client.Future[string]
	for i := range 15 {
		futs = append(futs, client.Call[string](a, "CallAPI", fmt.Sprint(i)), client.Call[string](b, "CallAPI", fmt.Sprint(i)))
	}
	if _, err := client.Gather(context.Background(), futs); err != nil {
		t.Fatal(err)
	}
	// 30 calls at 10/s shared: two more windows after the first 10.
	if d := time.Since(start); d < 1800*time.Millisecond {
		t.Fatalf("30 calls of two pools under one 10/s set took %s, want ≥ 1.8s", d)
	}
	// An in-memory set cannot reach other processes.
	mem, err := limits.NewSet(limits.SetOptions{}, limits.CallLimit{Window: time.Second, Capacity: 10})
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.New(context.Background(), demo.APIWorkerKind, client.Options{Mode: client.Process, MaxWorkers: 1, LimitSet: mem}, "x")
	if !errors.Is(err, client.ErrInvalidOptions) || !strings.Contains(err.Error(), "Name") {
		t.Fatalf("process pool with an in-memory set = %v, want ErrInvalidOptions", err)
	}
}
