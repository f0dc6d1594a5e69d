package limits

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/internal/testutil"
)

// rawKey reads a key of the default bucket as a watcher of it would.
func rawKey(t *testing.T, srv *broker.Embedded, key string) []byte {
	t.Helper()
	js, err := jetstream.New(testutil.Connect(t, srv.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, key)
	if err != nil {
		t.Fatalf("key %q: %v", key, err)
	}
	return e.Value()
}

// ReadState, given only the bytes of the key, reports what the set itself reports, and at a later now what the
// set will report once windows have passed and a dead holder's lease has run out.
func TestReadStateMatchesSetStats(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	ctx := context.Background()
	set := sharedSets(t, srv, "reader", 1, SetOptions{ResourceLeaseTTL: 2 * time.Second},
		CallLimit{Window: time.Minute, Capacity: 10},
		RateLimit{Key: "tokens", Window: time.Minute, Capacity: 1000, Algorithm: GCRA},
		RateLimit{Key: "bytes", Window: time.Minute, Capacity: 500, Algorithm: FixedWindow},
		ResourceLimit{Key: "connections", Capacity: 4})[0]
	for range 3 {
		a, err := set.Acquire(ctx, Request{"tokens": 100, "bytes": 50})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Update(Usage{"tokens": 100, "bytes": 50}); err != nil {
			t.Fatal(err)
		}
		if err := a.Release(); err != nil {
			t.Fatal(err)
		}
	}
	held, err := set.Acquire(ctx, Request{"connections": 2, "call_count": 0})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()

	now := time.Now()
	got, err := ReadState(rawKey(t, srv, "reader"), now)
	if err != nil {
		t.Fatal(err)
	}
	want := set.Stats()
	if len(got) != len(want) {
		t.Fatalf("ReadState has keys %v, the set %v", got, want)
	}
	// Bounds of what the set reports: 3 calls of 10, 2 connections of 4, 150 bytes of 500, 300 tokens of 1000 (GCRA
	// refills a little between the set's clock and ours).
	exact := map[string]float64{"call_count": 0.3, "connections": 0.5, "bytes": 0.3}
	for key, w := range want {
		g := got[key]
		if g.Key != key || g.Capacity != w.Capacity || g.Algorithm != w.Algorithm {
			t.Errorf("%s: ReadState %+v, set %+v", key, g, w)
		}
		if u, ok := exact[key]; ok && (g.Utilization != u || w.Utilization != u) {
			t.Errorf("%s: utilization ReadState %g, set %g, want %g", key, g.Utilization, w.Utilization, u)
		}
		if math.Abs(g.Utilization-w.Utilization) > 0.01 {
			t.Errorf("%s: utilization ReadState %g, set %g", key, g.Utilization, w.Utilization)
		}
	}
	if u := got["tokens"].Utilization; u < 0.29 || u > 0.3 {
		t.Errorf("tokens utilization %g, want 0.3 less a little refill", u)
	}

	// Two minutes on: the windows are empty, GCRA refilled, and the holder's lease (2 s) has run out unrenewed, as a
	// dead holder's would.
	later, err := ReadState(rawKey(t, srv, "reader"), now.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	for key, s := range later {
		if s.Utilization != 0 || s.Available != s.Capacity {
			t.Errorf("%s two minutes later: %+v, want all available", key, s)
		}
	}
}

func TestReadStatePartition(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	set := sharedSets(t, srv, "tenants", 1, SetOptions{},
		CallLimit{Window: time.Minute, Capacity: 4, PerPartition: true})[0]
	for range 3 {
		if _, err := set.AcquireIn(context.Background(), "acme", nil); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ReadState(rawKey(t, srv, partitionKey("tenants", "acme")), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if s := got["call_count"]; s.Utilization != 0.75 || s.Available != 1 {
		t.Errorf("partition acme: %+v, want 3 of 4 used", s)
	}
	// The set's own key holds the definition alone: a fresh budget.
	own, err := ReadState(rawKey(t, srv, "tenants"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if s := own["call_count"]; s.Utilization != 0 || s.Capacity != 4 {
		t.Errorf("the set's own key: %+v, want a fresh budget of 4", s)
	}
}

func TestReadStateRejects(t *testing.T) {
	if _, err := ReadState([]byte("not msgpack"), time.Now()); err == nil {
		t.Error("ReadState of garbage: no error")
	}
	for _, sig := range []string{"", "call:call_count:c10", "resource:r:c2:w10:gcra", "rate:t:c-1:w10:gcra",
		"rate:t:c1:w10:nonsense", "bucket:t:c1"} {
		st := sharedState{Sig: sig, Rates: []rateState{{}}}
		raw, err := msgpack.Marshal(&st)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ReadState(raw, time.Now()); !errors.Is(err, ErrInvalidLimit) {
			t.Errorf("definition %q: err %v, want ErrInvalidLimit", sig, err)
		}
	}
	st := sharedState{Sig: "call:call_count:c10:w1000000000:sliding_window", Rates: nil}
	raw, _ := msgpack.Marshal(&st)
	if _, err := ReadState(raw, time.Now()); !errors.Is(err, ErrInvalidLimit) {
		t.Errorf("state without its rate: err %v, want ErrInvalidLimit", err)
	}
}
