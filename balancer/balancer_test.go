package balancer

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
)

func TestParseAlgorithm(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want Algorithm
	}{
		{"rr", RoundRobin},
		{"round_robin", RoundRobin},
		{"roundrobin", RoundRobin},
		{"RoundRobin", RoundRobin},
		{"Round-Robin", RoundRobin},
		{"RR", RoundRobin},
		{"active", LeastActive},
		{"least_active", LeastActive},
		{"leastactiveload", LeastActive},
		{"LeastActiveLoad", LeastActive},
		{"LEAST_ACTIVE", LeastActive},
		{"total", LeastTotal},
		{"least_total", LeastTotal},
		{"leasttotalload", LeastTotal},
		{"LeastTotalLoad", LeastTotal},
		{"rand", Random},
		{"random", Random},
		{"Random", Random},
		{" random ", Random},
	}
	for _, tt := range tests {
		got, err := ParseAlgorithm(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseAlgorithm(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"", "least", "roundrobins", "weighted", "r r x"} {
		got, err := ParseAlgorithm(in)
		if !errors.Is(err, ErrUnknownAlgorithm) || got != "" {
			t.Errorf("ParseAlgorithm(%q) = %q, %v; want ErrUnknownAlgorithm", in, got, err)
			continue
		}
		msg := err.Error()
		for _, part := range []string{`balancer: unknown algorithm "` + in + `"`, "round_robin", "least_active", "least_total", "random"} {
			if !strings.Contains(msg, part) {
				t.Errorf("ParseAlgorithm(%q) error %q lacks %q", in, msg, part)
			}
		}
	}
}

func TestAlgorithmName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		alg  Algorithm
		want string
	}{
		{RoundRobin, "RoundRobin"},
		{LeastActive, "LeastActiveLoad"},
		{LeastTotal, "LeastTotalLoad"},
		{Random, "Random"},
		{"weighted", "weighted"},
	}
	for _, tt := range tests {
		if got := tt.alg.Name(); got != tt.want {
			t.Errorf("%q.Name() = %q, want %q", tt.alg, got, tt.want)
		}
		// Every display name parses back to its algorithm.
		if tt.alg != "weighted" {
			if got, err := ParseAlgorithm(tt.want); err != nil || got != tt.alg {
				t.Errorf("ParseAlgorithm(%q) = %q, %v; want %q", tt.want, got, err, tt.alg)
			}
		}
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		alg     Algorithm
		n       int
		opts    Options
		wantAlg Algorithm
		wantErr error
		wantMsg string
	}{
		{alg: "rr", n: 3, wantAlg: RoundRobin},
		{alg: "LeastActiveLoad", n: 0, wantAlg: LeastActive},
		{alg: LeastTotal, n: 4096, wantAlg: LeastTotal},
		{alg: Random, n: 1, opts: Options{Seed: 9}, wantAlg: Random},
		{alg: "fastest", n: 3, wantErr: ErrUnknownAlgorithm, wantMsg: `balancer: unknown algorithm "fastest"`},
		{alg: "", n: 3, wantErr: ErrUnknownAlgorithm, wantMsg: `balancer: unknown algorithm ""`},
		{alg: RoundRobin, n: -1, wantErr: ErrInvalidConfig, wantMsg: "balancer: invalid configuration: slot count -1 is negative"},
		{alg: RoundRobin, n: 3, opts: Options{Offset: -2}, wantErr: ErrInvalidConfig, wantMsg: "balancer: invalid configuration: offset -2 is negative"},
	}
	for _, tt := range tests {
		b, err := New(tt.alg, tt.n, tt.opts)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) || !strings.HasPrefix(err.Error(), tt.wantMsg) || b != nil {
				t.Errorf("New(%q, %d, %+v) = %v, %v; want error %q", tt.alg, tt.n, tt.opts, b, err, tt.wantMsg)
			}
			continue
		}
		if err != nil {
			t.Errorf("New(%q, %d, %+v): %v", tt.alg, tt.n, tt.opts, err)
			continue
		}
		if b.Algorithm() != tt.wantAlg || b.Len() != tt.n {
			t.Errorf("New(%q, %d): algorithm %q, len %d; want %q, %d", tt.alg, tt.n, b.Algorithm(), b.Len(), tt.wantAlg, tt.n)
		}
	}
}

// step is one operation of a scripted sequence: a Pick that must return
// want (-1: ok=false), or with done set, a Done on slot want.
type step struct {
	done bool
	want int
}

func picks(slots ...int) []step {
	s := make([]step, len(slots))
	for i, slot := range slots {
		s[i] = step{want: slot}
	}
	return s
}

func done(slot int) step { return step{done: true, want: slot} }

// pickDone is a pick of want immediately followed by its Done.
func pickDone(slots ...int) []step {
	var s []step
	for _, slot := range slots {
		s = append(s, step{want: slot}, done(slot))
	}
	return s
}

func TestSequences(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		alg   Algorithm
		n     int
		opts  Options
		limit int
		steps []step
	}{
		{"rr in order", RoundRobin, 3, Options{}, 0, picks(0, 1, 2, 0, 1, 2, 0)},
		{"rr offset 5 on 3 starts at 2", RoundRobin, 3, Options{Offset: 5}, 0, picks(2, 0, 1, 2, 0)},
		{"rr ignores load", RoundRobin, 3, Options{}, 0, slices.Concat(picks(0), pickDone(1, 2), picks(0, 1))},
		{"rr cap 1", RoundRobin, 3, Options{}, 1, slices.Concat(picks(0, 1, 2, -1), []step{done(1)}, picks(1, -1))},
		{"rr cap skips full slot", RoundRobin, 3, Options{}, 2,
			slices.Concat(picks(0, 1, 2, 0, 1, 2, -1), []step{done(0)}, picks(0), []step{done(2)}, picks(2, -1))},
		{"least active fresh order", LeastActive, 3, Options{}, 0, picks(0, 1, 2, 0, 1, 2)},
		{"least active rotates idle slots", LeastActive, 3, Options{}, 0, pickDone(0, 1, 2, 0, 1, 2)},
		{"least active avoids busy slot", LeastActive, 4, Options{}, 0, slices.Concat(picks(0), pickDone(1, 2, 3, 1, 2, 3))},
		{"least active prefers longest idle", LeastActive, 3, Options{}, 0,
			slices.Concat(picks(0, 1, 2), []step{done(2), done(1)}, picks(2, 1, 0))},
		{"least active cap", LeastActive, 2, Options{}, 1, slices.Concat(picks(0, 1, -1), []step{done(1)}, picks(1, -1))},
		{"least total fresh order", LeastTotal, 3, Options{}, 0, pickDone(0, 1, 2, 0, 1, 2)},
		{"least total ignores in-flight", LeastTotal, 3, Options{}, 0, picks(0, 1, 2, 0, 1, 2)},
		{"least total catches up after cap", LeastTotal, 3, Options{}, 1,
			slices.Concat(picks(0), pickDone(1, 2, 1, 2, 1, 2), []step{done(0)}, pickDone(0, 0, 1, 2, 0))},
		{"least total cap", LeastTotal, 2, Options{}, 1, slices.Concat(picks(0, 1, -1), []step{done(0)}, picks(0, -1))},
		{"random cap", Random, 1, Options{Seed: 1}, 2, slices.Concat(picks(0, 0, -1), []step{done(0)}, picks(0, -1))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := mustNew(t, tt.alg, tt.n, tt.opts)
			for i, s := range tt.steps {
				if s.done {
					b.Done(s.want)
					continue
				}
				got, ok := b.Pick(tt.limit)
				if !ok {
					got = -1
				}
				if got != s.want {
					t.Fatalf("step %d: Pick(%d) = %d, want %d", i, tt.limit, got, s.want)
				}
			}
			if err := checkInvariants(b); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestLeastTotalEvensTotals(t *testing.T) {
	t.Parallel()
	b := mustNew(t, LeastTotal, 4, Options{})
	// Slot 0 gets one long call; with a cap of 1 it is skipped meanwhile.
	slow, _ := b.Pick(1)
	for range 30 {
		s, ok := b.Pick(1)
		if !ok || s == slow {
			t.Fatalf("Pick(1) = %d, %v while slot %d is busy", s, ok, slow)
		}
		b.Done(s)
	}
	b.Done(slow)
	for range 30 + 2 {
		s, _ := b.Pick(1)
		b.Done(s)
	}
	// Slot 0 (score 1) takes the next 9 picks to reach the others' 10, then
	// joins the rotation last: 1, 2, 3, 0, ... for the remaining 23.
	want := map[int]uint64{0: 15, 1: 16, 2: 16, 3: 16}
	if got := b.Stats().TotalCalls; !maps.Equal(got, want) {
		t.Errorf("TotalCalls = %v, want %v", got, want)
	}
}

func TestRandom(t *testing.T) {
	t.Parallel()
	const n, draws = 5, 5000
	sequence := func(seed uint64) []int {
		b := mustNew(t, Random, n, Options{Seed: seed})
		var seq []int
		for range draws {
			s, ok := b.Pick(0)
			if !ok {
				t.Fatal("Pick(0) found no slot")
			}
			b.Done(s)
			seq = append(seq, s)
		}
		return seq
	}
	a := sequence(42)
	counts := make([]int, n)
	for _, s := range a {
		counts[s]++
	}
	// Expected 1000 each, standard deviation about 28: 850..1150 is >5 sigma.
	for slot, c := range counts {
		if c < 850 || c > 1150 {
			t.Errorf("slot %d drawn %d times of %d, want about %d", slot, c, draws, draws/n)
		}
	}
	if !slices.Equal(a, sequence(42)) {
		t.Error("the same seed gave different sequences")
	}
	if slices.Equal(a, sequence(43)) {
		t.Error("different seeds gave the same sequence")
	}
}

func TestRandomUniformAmongEligible(t *testing.T) {
	t.Parallel()
	// 64 slots of which only 8, spread unevenly, have room: the draws that
	// miss must not favour the slot after a long run of full ones.
	b := mustNew(t, Random, 64, Options{Seed: 7})
	eligible := []int{0, 1, 2, 3, 40, 41, 62, 63}
	for slot := range 64 {
		if !slices.Contains(eligible, slot) {
			b.Remove(slot)
		}
	}
	counts := map[int]int{}
	const draws = 8000
	for range draws {
		s, _ := b.Pick(0)
		b.Done(s)
		counts[s]++
	}
	for _, slot := range eligible {
		// Expected 1000, standard deviation about 30.
		if c := counts[slot]; c < 850 || c > 1150 {
			t.Errorf("slot %d drawn %d times, want about 1000 (counts %v)", slot, c, counts)
		}
	}
	if len(counts) != len(eligible) {
		t.Errorf("drew slots %v, want only %v", counts, eligible)
	}
}

func TestCap(t *testing.T) {
	t.Parallel()
	for _, alg := range allAlgorithms {
		t.Run(string(alg), func(t *testing.T) {
			t.Parallel()
			const n, limit = 3, 2
			b := mustNew(t, alg, n, Options{Seed: 5})
			for i := range n * limit {
				if _, ok := b.Pick(limit); !ok {
					t.Fatalf("pick %d: no room with %d of %d in flight", i, i, n*limit)
				}
			}
			for slot := range n {
				if got := b.Active(slot); got != limit {
					t.Errorf("Active(%d) = %d, want %d", slot, got, limit)
				}
			}
			if s, ok := b.Pick(limit); ok {
				t.Fatalf("Pick(%d) = %d with every slot full", limit, s)
			}
			b.Done(1)
			if s, ok := b.Pick(limit); !ok || s != 1 {
				t.Fatalf("Pick(%d) = %d, %v after Done(1); want 1, true", limit, s, ok)
			}
			if s, ok := b.Pick(limit); ok {
				t.Fatalf("Pick(%d) = %d with every slot full again", limit, s)
			}
			// Raising the cap makes room without any Done.
			if _, ok := b.Pick(limit + 1); !ok {
				t.Fatalf("Pick(%d) found no room", limit+1)
			}
			if got, want := b.Stats().TotalDispatched, uint64(n*limit+2); got != want {
				t.Errorf("TotalDispatched = %d, want %d (refused picks must not count)", got, want)
			}
			if err := checkInvariants(b); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestAddRemove(t *testing.T) {
	t.Parallel()
	for _, alg := range allAlgorithms {
		t.Run(string(alg), func(t *testing.T) {
			t.Parallel()
			b := mustNew(t, alg, 0, Options{Seed: 11})
			if s, ok := b.Pick(0); ok {
				t.Fatalf("Pick on no slots = %d", s)
			}
			for want := range 3 {
				if got := b.Add(); got != want {
					t.Fatalf("Add() = %d, want %d", got, want)
				}
			}
			// Slot 1 has a call in flight when it is removed.
			for b.Active(1) == 0 {
				s, _ := b.Pick(0)
				if s != 1 {
					b.Done(s)
				}
			}
			b.Remove(1)
			b.Remove(1)  // not live: no-op
			b.Remove(7)  // never existed: no-op
			b.Remove(-1) // never existed: no-op
			if b.Len() != 2 {
				t.Fatalf("Len() = %d, want 2", b.Len())
			}
			for range 20 {
				s, ok := b.Pick(0)
				if !ok || s == 1 {
					t.Fatalf("Pick(0) = %d, %v after Remove(1)", s, ok)
				}
				b.Done(s)
			}
			// Index 1 still has a call in flight: a new slot gets a fresh index.
			if got := b.Add(); got != 3 {
				t.Fatalf("Add() with slot 1 draining = %d, want 3", got)
			}
			b.Done(1)
			b.Done(1) // floored at zero
			b.Done(99)
			b.Done(-5)
			if got := b.Active(1); got != 0 {
				t.Fatalf("Active(1) = %d after Done, want 0", got)
			}
			if got := b.Active(99) + b.Active(-1); got != 0 {
				t.Fatalf("Active of unknown slots = %d, want 0", got)
			}
			if got := b.Add(); got != 1 {
				t.Fatalf("Add() with slot 1 drained = %d, want 1", got)
			}
			if b.Len() != 4 {
				t.Fatalf("Len() = %d, want 4", b.Len())
			}
			seen := map[int]bool{}
			for range 400 {
				s, _ := b.Pick(0)
				b.Done(s)
				seen[s] = true
			}
			if len(seen) != 4 {
				t.Errorf("400 picks reached slots %v, want all of 0..3", seen)
			}
			for _, s := range []int{0, 1, 2, 3} {
				b.Remove(s)
			}
			if s, ok := b.Pick(0); ok || b.Len() != 0 {
				t.Fatalf("Pick(0) = %d, %v with every slot removed (len %d)", s, ok, b.Len())
			}
			if err := checkInvariants(b); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestLeastTotalReplacementNotFlooded(t *testing.T) {
	t.Parallel()
	b := mustNew(t, LeastTotal, 2, Options{})
	for range 20 {
		s, _ := b.Pick(0)
		b.Done(s)
	}
	b.Remove(0)
	if got := b.Add(); got != 0 {
		t.Fatalf("Add() = %d, want 0 (reused)", got)
	}
	var seq []int
	for range 6 {
		s, _ := b.Pick(0)
		b.Done(s)
		seq = append(seq, s)
	}
	// The replacement joins the rotation at slot 1's score (10) instead of
	// taking the next 10 calls; slot 1 has been at 10 longer, so it goes first.
	if want := []int{1, 0, 1, 0, 1, 0}; !slices.Equal(seq, want) {
		t.Errorf("picks after replacement = %v, want %v", seq, want)
	}
	// Reported totals count real picks: the replacement has 3, not 13.
	if got, want := b.Stats().TotalCalls, map[int]uint64{0: 3, 1: 13}; !maps.Equal(got, want) {
		t.Errorf("TotalCalls = %v, want %v", got, want)
	}
}

func TestNeedsDone(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		alg   Algorithm
		limit int
		want  bool
	}{
		{RoundRobin, 0, false}, {Random, 0, false}, {LeastTotal, 0, false}, {LeastActive, 0, true},
		{RoundRobin, 1, true}, {Random, 3, true}, {LeastTotal, 2, true}, {LeastActive, 5, true},
	} {
		b, err := New(tt.alg, 3, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got := b.NeedsDone(tt.limit); got != tt.want {
			t.Errorf("%s NeedsDone(%d) = %v, want %v", tt.alg, tt.limit, got, tt.want)
		}
		// Where Done does not matter, picks without it follow the algorithm all the same.
		if !tt.want && tt.alg == RoundRobin {
			for i := range 6 {
				if s, ok := b.Pick(tt.limit); !ok || s != i%3 {
					t.Fatalf("pick %d without Done = %d, %v; want %d", i, s, ok, i%3)
				}
			}
		}
	}
}

// TestSetLoad: calls that other callers have on a worker steer LeastActive and LeastTotal away from it, but do not
// count against the cap, and RoundRobin ignores them.
func TestSetLoad(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		alg   Algorithm
		limit int
		load  map[int][2]int // slot -> others' active, total
		want  []int          // picks, -1 for none
	}{
		{"least active avoids loaded workers", LeastActive, 0, map[int][2]int{0: {2, 0}, 1: {1, 0}},
			[]int{2, 3, 1, 2, 3, 0}},
		{"least active: others do not count against the cap", LeastActive, 1, map[int][2]int{0: {5, 0}},
			[]int{1, 2, 3, 0, -1}},
		{"least total counts others' served calls", LeastTotal, 0, map[int][2]int{0: {0, 3}, 1: {0, 1}},
			[]int{2, 3, 1, 2, 3, 1, 2, 3, 0}},
		{"round robin ignores load", RoundRobin, 0, map[int][2]int{0: {9, 9}}, []int{0, 1, 2, 3, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := mustNew(t, tt.alg, 4, Options{})
			for slot, l := range tt.load {
				b.SetLoad(slot, l[0], uint64(l[1]))
			}
			var got []int
			for range tt.want {
				s, ok := b.Pick(tt.limit)
				if !ok {
					s = -1
				}
				got = append(got, s)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("picks %v, want %v", got, tt.want)
			}
			if err := checkInvariants(b); err != nil {
				t.Fatal(err)
			}
		})
	}
}
