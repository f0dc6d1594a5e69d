package limits

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// regions builds n sets of 1000 calls per hour each.
func regions(t *testing.T, n int) []*Set {
	sets := make([]*Set, n)
	for i := range sets {
		sets[i] = newSet(t, SetOptions{}, CallLimit{Window: time.Hour, Capacity: 1000},
			RateLimit{Key: "tokens", Window: time.Hour, Capacity: 100, Algorithm: TokenBucket})
	}
	return sets
}

func used(t *testing.T, sets []*Set) []float64 {
	out := make([]float64, len(sets))
	for i, s := range sets {
		out[i] = s.Stats()["call_count"].Extra["current_requests"]
	}
	return out
}

func TestPoolRoundRobinPerWorker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sets := regions(t, 3)
	p, err := NewPool(PoolOptions{}, sets...)
	if err != nil {
		t.Fatal(err)
	}
	// Worker 1's view starts at set 1: 1, 2, 0, 1.
	w1 := p.ForWorker(1)
	want := [][]float64{{0, 1, 0}, {0, 1, 1}, {1, 1, 1}, {1, 2, 1}}
	for i, w := range want {
		if _, err := w1.Acquire(ctx, nil); err != nil {
			t.Fatal(err)
		}
		if got := used(t, sets); !slices.Equal(got, w) {
			t.Fatalf("after %d acquisitions through worker 1: per set %v, want %v", i+1, got, w)
		}
	}
	// Worker 5 of 3 sets starts at 5 mod 3 = 2; worker -1 at 2 as well.
	for _, idx := range []int{5, -1} {
		if _, err := p.ForWorker(idx).Acquire(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	if got := used(t, sets); !slices.Equal(got, []float64{1, 2, 3}) {
		t.Fatalf("offsets 5 and -1: per set %v", got)
	}
	ps := w1.(*Pool).PoolStats()
	if ps.NumLimitSets != 3 || ps.LoadBalancing != "RoundRobin" || ps.WorkerIndex != 1 || ps.BalancerStats.TotalDispatched != 4 || len(ps.LimitSets) != 3 {
		t.Fatalf("PoolStats = %+v", ps)
	}
	b, _ := json.Marshal(ps)
	for _, k := range []string{`"num_limit_sets":3`, `"load_balancing":"RoundRobin"`, `"worker_index":1`,
		`"balancer_stats":{"algorithm":"RoundRobin","offset":1,"total_dispatched":4}`, `"limit_sets":[{"call_count":`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("PoolStats JSON %s lacks %s", b, k)
		}
	}
	st := p.Stats()["call_count"]
	if st.Capacity != 3000 || st.Available != 2994 || st.Extra["num_limit_sets"] != 3 || st.Algorithm != SlidingWindow {
		t.Fatalf("pool stats = %+v", st)
	}
	if p.ForWorker(0).(*Pool).Sets()[2] != sets[2] {
		t.Fatal("views do not share the sets")
	}
}

func TestPoolRandom(t *testing.T) {
	t.Parallel()
	sets := regions(t, 3)
	p, err := NewPool(PoolOptions{Algorithm: "Random", Seed: 7}, sets...)
	if err != nil {
		t.Fatal(err)
	}
	for range 300 {
		a, err := p.Acquire(context.Background(), Request{"tokens": 0})
		if err != nil {
			t.Fatal(err)
		}
		a.Release()
	}
	for i, n := range used(t, sets) {
		if n < 70 || n > 130 {
			t.Fatalf("set %d got %v of 300 random picks", i, n)
		}
	}
	if ps := p.PoolStats(); ps.LoadBalancing != "Random" || ps.BalancerStats.TotalDispatched != 300 {
		t.Fatalf("PoolStats = %+v", ps)
	}
	// The same seed and worker index pick the same sequence.
	pick := func() []*Set {
		v := p.ForWorker(2).(*Pool)
		var seq []*Set
		for range 20 {
			seq = append(seq, v.pick())
		}
		return seq
	}
	a, b := pick(), pick()
	for i := range a {
		if a[i] != b[i] {
			t.Fatal("seeded random views differ")
		}
	}
}

func TestPoolErrors(t *testing.T) {
	t.Parallel()
	sets := regions(t, 1)
	cases := []struct {
		opts PoolOptions
		sets []*Set
		want string
	}{
		{PoolOptions{}, nil, "a pool needs at least one set"},
		{PoolOptions{}, []*Set{nil}, "nil set in pool"},
		{PoolOptions{Algorithm: "least_active"}, sets, `unsupported pool algorithm "least_active" (want round_robin or random)`},
	}
	for _, tc := range cases {
		if _, err := NewPool(tc.opts, tc.sets...); !errors.Is(err, ErrInvalidLimit) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewPool(%+v) = %v, want %q", tc.opts, err, tc.want)
		}
	}
	for _, alg := range []string{"rr", "ROUND_ROBIN", "rand"} {
		if _, err := NewPool(PoolOptions{Algorithm: alg}, sets...); err != nil {
			t.Errorf("NewPool(%q): %v", alg, err)
		}
	}
}
