package limits

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/internal/testutil"
)

// returnLatency bounds how long after its decision an Acquire returns, for
// checks of bucket algorithms on return times. Generous: -race on 2 cores.
const returnLatency = 50 * time.Millisecond

// sharedSets builds n sets named name, each on its own connection (as
// separate processes would be), with opts applied to each.
func sharedSets(t *testing.T, srv *broker.Embedded, name string, n int, opts SetOptions, ls ...Limit) []*Set {
	t.Helper()
	sets := make([]*Set, n)
	for i := range sets {
		o := opts
		o.Name, o.Conn = name, testutil.Connect(t, srv.ClientURL())
		sets[i] = newSet(t, o, ls...)
	}
	return sets
}

func providers(sets ...*Set) []Provider {
	ps := make([]Provider, len(sets))
	for i, s := range sets {
		ps[i] = s
	}
	return ps
}

func TestKVSharedAcrossSets(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	ctx := context.Background()
	sets := sharedSets(t, srv, "api", 2, SetOptions{},
		CallLimit{Window: time.Hour, Capacity: 3},
		RateLimit{Key: "tokens", Window: time.Hour, Capacity: 100, Algorithm: TokenBucket},
		ResourceLimit{Key: "connections", Capacity: 2})
	a, b := sets[0], sets[1]
	held, err := a.Acquire(ctx, Request{"tokens": 40})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Acquire(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Acquire(ctx, Request{"connections": 0}); err != nil {
		t.Fatal(err)
	}
	// Three calls were made through two sets: the fourth is refused by both.
	for _, s := range sets {
		if _, err := s.TryAcquire(ctx, Request{"connections": 0}); !errors.Is(err, ErrWouldWait) {
			t.Fatalf("fourth call: %v, want ErrWouldWait", err)
		}
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		st := b.Stats()
		if st["connections"].Available != 0 || math.Abs(st["tokens"].Available-60) > 0.5 || st["call_count"].Available != 0 {
			return fmt.Errorf("b's stats: connections %v tokens %v calls %v", st["connections"].Available, st["tokens"].Available, st["call_count"].Available)
		}
		return nil
	})
	if err := held.Update(Usage{"tokens": 10}); err != nil {
		t.Fatal(err)
	}
	if err := held.Release(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		st := b.Stats()
		if st["connections"].Available != 1 || math.Abs(st["tokens"].Available-90) > 0.5 {
			return fmt.Errorf("after release b sees connections %v tokens %v, want 1 and 90", st["connections"].Available, st["tokens"].Available)
		}
		return nil
	})
}

func TestKVDefinitionsMustAgree(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	sharedSets(t, srv, "api", 1, SetOptions{}, CallLimit{Window: time.Minute, Capacity: 3})
	_, err := NewSet(SetOptions{Name: "api", Conn: testutil.Connect(t, srv.ClientURL())}, CallLimit{Window: time.Minute, Capacity: 4})
	if !errors.Is(err, ErrInvalidLimit) || !strings.Contains(err.Error(), `shared set "api" holds other limits (call:call_count:c3:w60000000000:sliding_window) than given (call:call_count:c4:`) {
		t.Fatalf("NewSet with other limits: %v", err)
	}
	// Another bucket is another namespace.
	other := sharedSets(t, srv, "api", 1, SetOptions{Bucket: "other"}, CallLimit{Window: time.Minute, Capacity: 4})[0]
	if other.Name() != "api" || other.Bucket() != "other" {
		t.Fatalf("Name() %q Bucket() %q, want api and other", other.Name(), other.Bucket())
	}
	if def := sharedSets(t, srv, "api", 1, SetOptions{}, CallLimit{Window: time.Minute, Capacity: 3})[0]; def.Bucket() != DefaultBucket {
		t.Fatalf("default bucket %q", def.Bucket())
	}
}

func TestKVWaiterWokenByOtherRelease(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sets := sharedSets(t, srv, "gpu", 2, SetOptions{}, ResourceLimit{Key: "gpu", Capacity: 1})
	held, err := sets[0].Acquire(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan time.Time, 1)
	go func() {
		a, err := sets[1].Acquire(ctx, nil)
		if err != nil {
			t.Error(err)
			close(got)
			return
		}
		got <- time.Now()
		a.Release()
	}()
	time.Sleep(100 * time.Millisecond) // let it wait; correctness does not depend on it
	released := time.Now()
	if err := held.Release(); err != nil {
		t.Fatal(err)
	}
	// The waiter's only timer is the holder's lease expiry (10s): being served
	// well before proves the watch woke it.
	if at, ok := <-got; !ok || at.Sub(released) > 2*time.Second {
		t.Fatalf("waiter served %v after the release in another set", at.Sub(released))
	}
}

// TestKVContention: 8 goroutines on each of 2 sets sharing one key, every
// algorithm; the admission log must keep the algorithm's promise, measured
// both by the limiter's clock and by when Acquire returned.
func TestKVContention(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	const capacity = 20
	window := 300 * time.Millisecond
	for _, alg := range []Algorithm{SlidingWindow, FixedWindow, TokenBucket, GCRA, LeakyBucket} {
		t.Run(string(alg), func(t *testing.T) {
			sets := sharedSets(t, srv, "contention-"+string(alg), 2, SetOptions{},
				CallLimit{Window: window, Capacity: capacity, Algorithm: alg}, ResourceLimit{Key: "slots", Capacity: 3})
			h := hammer(t, providers(sets...), []time.Duration{0, 0}, 8, 1500*time.Millisecond, nil)
			checkLog(t, alg, h.decided, capacity, window, 0)
			checkLog(t, alg, h.returned, capacity, window, returnLatency)
			if h.maxHolders > 3 {
				t.Fatalf("%d holders of 3 slots", h.maxHolders)
			}
		})
	}
}

// TestKVNoLostUpdates races sets on a key where capacity never binds, so
// that their compare-and-sets collide all the time: the shared count must
// equal what was admitted, exactly. The clock stands still, so nothing expires
// or refills.
func TestKVNoLostUpdates(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	clock := newFakeClock()
	sets := sharedSets(t, srv, "race", 3, SetOptions{Clock: clock.Now},
		RateLimit{Key: "tokens", Window: time.Hour, Capacity: 1e9, Algorithm: SlidingWindow},
		RateLimit{Key: "budget", Window: time.Hour, Capacity: 1e9, Algorithm: TokenBucket})
	const goroutines, each = 6, 25
	req := Request{"tokens": 3, "budget": 2}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range sets {
		wg.Go(func() {
			err := runN(goroutines, goroutines*each, func() error {
				a, err := s.Acquire(ctx, req)
				if err != nil {
					return err
				}
				a.Update(Usage(req))
				return a.Release()
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	admitted := float64(len(sets) * goroutines * each)
	for _, s := range sets {
		testutil.Eventually(t, 5*time.Second, func() error {
			st := s.Stats()
			if got := st["tokens"].Extra["current_requests"]; got != 3*admitted {
				return fmt.Errorf("shared sliding count %v, admitted %v", got, 3*admitted)
			}
			if used := 1e9 - st["budget"].Available; used != 2*admitted {
				return fmt.Errorf("shared bucket spent %v, admitted %v", used, 2*admitted)
			}
			return nil
		})
	}
}

// TestKVClockSkew runs two sets on the same key, one clock 80ms ahead.
func TestKVClockSkew(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	const capacity = 10
	window := 300 * time.Millisecond
	skew := 80 * time.Millisecond
	ahead := func() time.Time { return time.Now().Add(skew) }
	pair := func(name string, maxSkew time.Duration) (exact, fast *Set) {
		ls := []Limit{CallLimit{Window: window, Capacity: capacity}}
		return sharedSets(t, srv, name, 1, SetOptions{MaxSkew: maxSkew}, ls...)[0],
			sharedSets(t, srv, name, 1, SetOptions{Clock: ahead, MaxSkew: maxSkew}, ls...)[0]
	}
	// Within MaxSkew (100ms) nothing is over-admitted in true time under load.
	t.Run("hammer", func(t *testing.T) {
		t.Parallel()
		exact, fast := pair("skew", 0)
		h := hammer(t, providers(exact, fast), []time.Duration{0, skew}, 8, 2*time.Second, nil)
		checkLog(t, SlidingWindow, h.decided, capacity, window, 0)
		checkLog(t, SlidingWindow, h.returned, capacity, window, returnLatency)
	})
	// The exact clock fills the window; the fast clock waits for room. With
	// MaxSkew covering the skew it gets it a window later in true time; with
	// MaxSkew below the skew it gets it 80ms early, which shows what the
	// margin prevents.
	for _, tc := range []struct {
		name    string
		maxSkew time.Duration
		early   bool
	}{{"guarded", 0, false}, {"unguarded", time.Nanosecond, true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			exact, fast := pair("skew-"+tc.name, tc.maxSkew)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var first time.Time
			for i := range capacity {
				a, err := exact.Acquire(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					first = a.Time()
				}
			}
			a, err := fast.Acquire(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			gap := a.Time().Add(-skew).Sub(first)
			if early := gap < window; early != tc.early {
				t.Fatalf("the fast clock's admission came %v after the window's first (window %v)", gap, window)
			}
			t.Logf("the fast clock's admission came %v after the window's first (window %v)", gap, window)
		})
	}
}

// TestKVLease serves most admissions from local reservoirs and must still
// never over-admit fleet-wide; unused units go back when leases end.
func TestKVLease(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	const capacity = 200
	window := 500 * time.Millisecond
	for _, alg := range []Algorithm{SlidingWindow, FixedWindow, TokenBucket, GCRA, LeakyBucket} {
		t.Run(string(alg), func(t *testing.T) {
			lease := SetOptions{Mode: Lease, LeaseTTL: 100 * time.Millisecond}
			sets := append(sharedSets(t, srv, "lease-"+string(alg), 2, lease, CallLimit{Window: window, Capacity: capacity, Algorithm: alg}),
				sharedSets(t, srv, "lease-"+string(alg), 1, SetOptions{}, CallLimit{Window: window, Capacity: capacity, Algorithm: alg})...)
			h := hammer(t, providers(sets...), []time.Duration{0, 0, 0}, 6, 1500*time.Millisecond, nil)
			checkLog(t, alg, h.decided, capacity, window, 0)
			checkLog(t, alg, h.returned, capacity, window, returnLatency)
		})
	}
}

func TestKVLeaseGivesBackUnused(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	ctx := context.Background()
	for _, alg := range []Algorithm{SlidingWindow, FixedWindow, TokenBucket, GCRA} {
		s := sharedSets(t, srv, "giveback-"+string(alg), 1, SetOptions{Mode: Lease, LeaseSize: 10, LeaseTTL: 100 * time.Millisecond},
			RateLimit{Key: "tokens", Window: time.Hour, Capacity: 100, Algorithm: alg})[0]
		a, err := s.Acquire(ctx, Request{"tokens": 3})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Update(Usage{"tokens": 3}); err != nil {
			t.Fatal(err)
		}
		if err := a.Release(); err != nil {
			t.Fatal(err)
		}
		st := s.Stats()["tokens"]
		if st.Available > 90.01 || st.Extra["leased_local"] != 7 {
			t.Fatalf("%s: during the lease the shared state has %v available, local %v; want 90 and 7", alg, st.Available, st.Extra["leased_local"])
		}
		testutil.Eventually(t, 5*time.Second, func() error {
			st := s.Stats()["tokens"]
			if st.Available < 97 || st.Available > 97.01 || st.Extra["leased_local"] != 0 {
				return fmt.Errorf("%s: after the lease: %v available, %v local; want 97 and 0", alg, st.Available, st.Extra["leased_local"])
			}
			return nil
		})
	}
}

// TestKVResourceLease: a live holder keeps its slot past the lease TTL
// (keepalive); a holder that stops renewing loses it within TTL+MaxSkew.
func TestKVResourceLease(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	ctx := context.Background()
	ttl := time.Second
	opts := SetOptions{ResourceLeaseTTL: ttl, MaxSkew: 50 * time.Millisecond}
	sets := sharedSets(t, srv, "slots", 2, opts, ResourceLimit{Key: "slots", Capacity: 1})
	holderConn := testutil.Connect(t, srv.ClientURL())
	o := opts
	o.Name, o.Conn = "slots", holderConn
	holder, err := NewSet(o, ResourceLimit{Key: "slots", Capacity: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Acquire(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for range 25 { // 2.5s: 2.5 TTLs
		if _, err := sets[0].TryAcquire(ctx, nil); !errors.Is(err, ErrWouldWait) {
			t.Fatalf("slot of a live holder taken: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Stop renewing without releasing: the slot comes back by itself.
	if err := holder.Close(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	a, err := sets[1].Acquire(wctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	if d := time.Since(stopped); d > ttl+50*time.Millisecond+time.Second {
		t.Fatalf("slot came back %v after the holder stopped; bound %v", d, ttl+50*time.Millisecond)
	}
}

func TestKVKeyDeleted(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	ctx := context.Background()
	s := sharedSets(t, srv, "deleted", 1, SetOptions{}, CallLimit{Window: time.Hour, Capacity: 5})[0]
	if _, err := s.Acquire(ctx, nil); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(testutil.Connect(t, srv.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, "deleted"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if _, err := s.Acquire(ctx, nil); err != nil {
			return err
		}
		if got := s.Stats()["call_count"].Extra["current_requests"]; got > 2 {
			return fmt.Errorf("count %v after the key was purged: not recreated", got)
		}
		return nil
	})
}

// TestKVLeaseHolderDies: the units a dead Lease-mode process held stay out of
// the bucket until its lease expires, then count as used: the bucket refills
// from there, with nobody's help.
func TestKVLeaseHolderDies(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	ctx := context.Background()
	ls := []Limit{RateLimit{Key: "tokens", Window: 2 * time.Second, Capacity: 20, Algorithm: TokenBucket}}
	nc := testutil.Connect(t, srv.ClientURL())
	dying, err := NewSet(SetOptions{Name: "dies", Conn: nc, Mode: Lease, LeaseSize: 10, LeaseTTL: 300 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)}, ls...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dying.Acquire(ctx, Request{"tokens": 1}); err != nil {
		t.Fatal(err)
	}
	nc.Close() // dies: the lease is never settled
	defer func() {
		if err := dying.Close(); err == nil {
			t.Error("Close after losing the connection reported no error: the leased units were not given back")
		}
	}()
	s := sharedSets(t, srv, "dies", 1, SetOptions{}, ls...)[0]
	a, err := s.TryAcquire(ctx, Request{"tokens": 11})
	if !errors.Is(err, ErrWouldWait) {
		t.Fatalf("took 11 tokens while 10 are leased to a reservoir: %v", err)
	}
	died := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if a, err = s.Acquire(wctx, Request{"tokens": 20}); err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	// Out until 300ms + 100ms MaxSkew, then 10 used tokens refill at 10/s.
	if d := time.Since(died); d < 900*time.Millisecond || d > 4*time.Second {
		t.Fatalf("full bucket %v after the holder died, want about 1.4s", d)
	}
}

// TestKVLeaseRefundsAndResources: in Lease mode, resources are taken exactly
// with a batch for the rates; refunds go back into the batch they fit, or to
// the shared state at once.
func TestKVLeaseRefundsAndResources(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	ctx := context.Background()
	clock := newFakeClock() // stands still (no refill) until moved by hand
	s := sharedSets(t, srv, "lease-refund", 1, SetOptions{Mode: Lease, LeaseSize: 10, LeaseTTL: 100 * time.Millisecond, Clock: clock.Now},
		RateLimit{Key: "tokens", Window: time.Hour, Capacity: 100, Algorithm: TokenBucket},
		ResourceLimit{Key: "conns", Capacity: 1})[0]
	stats := func() (shared, local, conns float64) {
		st := s.Stats()
		return st["tokens"].Available, st["tokens"].Extra["leased_local"], st["conns"].Available
	}
	a, err := s.Acquire(ctx, Request{"tokens": 4})
	if err != nil {
		t.Fatal(err)
	}
	if sh, lo, c := stats(); sh != 90 || lo != 6 || c != 0 {
		t.Fatalf("after taking 4 with a connection: shared %v local %v conns %v; want 90 6 0", sh, lo, c)
	}
	a.Update(Usage{"tokens": 1})
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	if sh, lo, c := stats(); sh != 90 || lo != 9 || c != 1 {
		t.Fatalf("after using 1 of 4: shared %v local %v conns %v; want 90 9 1", sh, lo, c)
	}
	a, err = s.Acquire(ctx, Request{"tokens": 9, "conns": 0}) // served locally
	if err != nil {
		t.Fatal(err)
	}
	if sh, lo, _ := stats(); sh != 90 || lo != 0 {
		t.Fatalf("after a local acquisition: shared %v local %v; want 90 0", sh, lo)
	}
	clock.Add(time.Second) // the batch expires; the lease is settled
	testutil.Eventually(t, 5*time.Second, func() error {
		if sh, lo, _ := stats(); sh != 90 || lo != 0 {
			return fmt.Errorf("after the lease: shared %v local %v; want 90 0", sh, lo)
		}
		snap, err := s.be.(*kvBackend).main.latest(ctx)
		if err != nil {
			return err
		}
		if len(snap.st.Leases) != 0 {
			return fmt.Errorf("lease entries left in the shared state: %v", snap.st.Leases)
		}
		return nil
	})
	// A refund after the batch ended goes to the shared state.
	a.Update(Usage{"tokens": 1})
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if sh, lo, _ := stats(); sh != 98 || lo != 0 {
			return fmt.Errorf("after a late refund of 8: shared %v local %v; want 98 0", sh, lo)
		}
		return nil
	})
}
