package limits

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestPartitionKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ part, want string }{
		{"cust-42", "api._p.cust-42"},
		{"Tenant_7", "api._p.Tenant_7"},
		{"a@b.com", "api._p.a=40b=2Ecom"},
		{"x.y", "api._p.x=2Ey"},   // no extra token
		{"a=2E", "api._p.a=3D2E"}, // '=' itself is escaped: no two names share a key
		{"ü/*>", "api._p.=C3=BC=2F=2A=3E"},
	} {
		got := partitionKey("api", tc.part)
		if got != tc.want || !validKey(got) {
			t.Errorf("partitionKey(%q) = %q (valid %v), want %q", tc.part, got, validKey(got), tc.want)
		}
	}
}

func TestPartitionedLimitsMarshal(t *testing.T) {
	t.Parallel()
	ls := []Limit{
		CallLimit{Window: time.Minute, Capacity: 10, Algorithm: SlidingWindow, PerPartition: true},
		RateLimit{Key: "tokens", Window: time.Minute, Capacity: 100, Algorithm: TokenBucket, PerPartition: true},
		ResourceLimit{Key: "conns", Capacity: 2, PerPartition: true},
	}
	b, err := MarshalLimits(ls)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), `"per_partition":true`); n != 3 {
		t.Fatalf("%s: per_partition %d times, want 3", b, n)
	}
	got, err := UnmarshalLimits(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, ls) {
		t.Fatalf("round trip = %#v", got)
	}
	d, _ := ls[0].def()
	if sig := d.signature(); !strings.HasSuffix(sig, ":partition") {
		t.Fatalf("signature %q does not tell a partitioned limit from a set-wide one", sig)
	}
}

// Every partition has its own budget, made on first use.
func TestPartitionsHaveTheirOwnBudget(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := newFakeClock()
	s := newSet(t, SetOptions{Clock: clock.Now},
		CallLimit{Window: time.Minute, Capacity: 2, PerPartition: true},
		ResourceLimit{Key: "conns", Capacity: 1, PerPartition: true})
	held := map[string]*Acquisition{}
	for _, part := range []string{"a", "b"} {
		for i := range 2 {
			a, err := s.TryAcquireIn(ctx, part, Request{"conns": 0})
			if err != nil {
				t.Fatalf("%s call %d: %v", part, i, err)
			}
			if a.Partition() != part {
				t.Fatalf("Partition() = %q, want %q", a.Partition(), part)
			}
		}
		if _, err := s.TryAcquireIn(ctx, part, Request{"conns": 0}); !errors.Is(err, ErrWouldWait) {
			t.Fatalf("%s third call: %v, want ErrWouldWait", part, err)
		}
	}
	for _, part := range []string{"c", "d"} {
		a, err := s.TryAcquireIn(ctx, part, nil)
		if err != nil {
			t.Fatal(err)
		}
		held[part] = a
	}
	if _, err := s.TryAcquireIn(ctx, "c", Request{"call_count": 0}); !errors.Is(err, ErrWouldWait) {
		t.Fatalf("second connection of c: %v, want ErrWouldWait", err)
	}
	st := s.StatsIn("a")
	if st["call_count"].Available != 0 || st["conns"].Available != 1 {
		t.Fatalf("StatsIn(a) = %+v", st)
	}
	if st := s.StatsIn("c"); st["call_count"].Available != 1 || st["conns"].Available != 0 {
		t.Fatalf("StatsIn(c) = %+v", st)
	}
	if st := s.Stats(); st["call_count"].Available != 2 || st["call_count"].Extra["partitions"] != 4 {
		t.Fatalf("Stats() = %+v, want a fresh partition's figures and 4 partitions", st["call_count"])
	}
	// A waiter of c is woken by c's release.
	got := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := s.AcquireIn(wctx, "c", Request{"call_count": 0})
		got <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := held["c"].Release(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiter of c after c's release: %v", err)
	}
}

func TestPartitionErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rec := &logRecorder{}
	part := newSet(t, SetOptions{}, CallLimit{Window: time.Minute, Capacity: 2, PerPartition: true})
	for _, tc := range []struct{ name, part string }{
		{"no partition", ""},
		{"too long", strings.Repeat("x", MaxPartitionLen+1)},
	} {
		if _, err := part.AcquireIn(ctx, tc.part, nil); !errors.Is(err, ErrInvalidPartition) || !strings.HasPrefix(err.Error(), "limits: ") {
			t.Errorf("%s: %v, want ErrInvalidPartition", tc.name, err)
		}
	}
	if _, err := part.Acquire(ctx, nil); !errors.Is(err, ErrInvalidPartition) || !strings.Contains(err.Error(), "AcquireIn") {
		t.Errorf("Acquire on a partitioned set: %v, want ErrInvalidPartition naming AcquireIn", err)
	}
	if _, err := part.AcquireIn(ctx, strings.Repeat("x", MaxPartitionLen), nil); err != nil {
		t.Errorf("a partition of MaxPartitionLen bytes: %v", err)
	}
	// A partition named on a set without per-partition limits is ignored,
	// with one warning.
	plain := newSet(t, SetOptions{Logger: slog.New(rec)}, CallLimit{Window: time.Minute, Capacity: 2})
	for _, p := range []string{"a", "b"} {
		a, err := plain.AcquireIn(ctx, p, nil)
		if err != nil || a.Partition() != "" {
			t.Fatalf("AcquireIn(%q) on a plain set: %v, partition %q", p, err, a.Partition())
		}
	}
	if _, err := plain.TryAcquireIn(ctx, "c", nil); !errors.Is(err, ErrWouldWait) {
		t.Fatalf("third call on a plain set of 2: %v: the partitions were not one budget", err)
	}
	if msgs := rec.messages(); len(msgs) != 1 || !strings.Contains(msgs[0], "partition named on a set without per-partition limits") {
		t.Fatalf("warnings %q, want one", msgs)
	}
}

// A partition is forgotten once it is back at rest, and only then; the table
// never keeps more than a small factor of the partitions in use.
func TestPartitionsExpire(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	window := time.Second
	for _, alg := range []Algorithm{SlidingWindow, FixedWindow, TokenBucket, LeakyBucket, GCRA} {
		t.Run(string(alg), func(t *testing.T) {
			t.Parallel()
			clock := newFakeClock()
			s := newSet(t, SetOptions{Clock: clock.Now}, CallLimit{Window: window, Capacity: 2, Algorithm: alg, PerPartition: true})
			partitions := func() float64 { return s.Stats()["call_count"].Extra["partitions"] }
			for i := range 1000 {
				if _, err := s.TryAcquireIn(ctx, fmt.Sprint("tenant-", i), nil); err != nil {
					t.Fatal(err)
				}
			}
			if got := partitions(); got != 1000 {
				t.Fatalf("%v partitions after 1000 used within the window, want 1000", got)
			}
			// A quarter of a window on, none is at rest: each counts its
			// admission still (the buckets have refilled half a unit). Uses of
			// another partition must not forget any of them.
			clock.Add(window / 4)
			for range 600 {
				s.TryAcquireIn(ctx, "busy", nil)
			}
			if got := partitions(); got != 1001 {
				t.Fatalf("%v partitions a quarter of a window after their use, want 1001 (none at rest)", got)
			}
			// A window after their last use they are at rest: about two are
			// forgotten per use of the table.
			clock.Add(window)
			for range 510 {
				s.TryAcquireIn(ctx, "busy", nil)
			}
			if got := partitions(); got != 1 {
				t.Fatalf("%v partitions a window after their use, want 1 (the one in use)", got)
			}
			// A forgotten partition comes back fresh: its full budget.
			for i := range 2 {
				if _, err := s.TryAcquireIn(ctx, "tenant-7", nil); err != nil {
					t.Fatalf("call %d of a forgotten partition: %v", i, err)
				}
			}
		})
	}
}

// A partition holding a resource slot is never forgotten, however long ago
// it was used.
func TestPartitionHoldingIsKept(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := newFakeClock()
	s := newSet(t, SetOptions{Clock: clock.Now}, ResourceLimit{Key: "conns", Capacity: 1, PerPartition: true})
	a, err := s.AcquireIn(ctx, "holder", nil)
	if err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Hour)
	for i := range 20 {
		b, err := s.AcquireIn(ctx, fmt.Sprint("other-", i), nil)
		if err != nil {
			t.Fatal(err)
		}
		b.Release()
	}
	if _, err := s.TryAcquireIn(ctx, "holder", nil); !errors.Is(err, ErrWouldWait) {
		t.Fatalf("the held slot was forgotten: %v", err)
	}
	a.Release()
	if _, err := s.TryAcquireIn(ctx, "holder", nil); err != nil {
		t.Fatalf("after the release: %v", err)
	}
}
