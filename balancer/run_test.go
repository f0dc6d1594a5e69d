package balancer

import (
	"slices"
	"testing"
)

// runStep is one operation of a PickRun script: a pick with run that must return want (-1: ok=false) and last, or an
// action on the Balancer.
type runStep struct {
	run  int
	want int
	last bool
	do   func(*Balancer)
}

func runPicks(run int, slots ...int) []runStep {
	s := make([]runStep, len(slots))
	for i, slot := range slots {
		s[i] = runStep{run: run, want: slot, last: run > 1 && i%run == run-1}
	}
	return s
}

func TestPickRun(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		alg   Algorithm
		n     int
		limit int
		steps []runStep
	}{
		{"rr runs of 3", RoundRobin, 3, 0, runPicks(3, 0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0)},
		{"rr run 1 is Pick", RoundRobin, 3, 0, runPicks(1, 0, 1, 2, 0)},
		{"rr run length read at the run's start", RoundRobin, 2, 0,
			[]runStep{{run: 2, want: 0}, {run: 5, want: 0, last: true}, {run: 5, want: 1}, {run: 1, want: 0}, {run: 1, want: 1}}},
		{"rr cap ends a run early", RoundRobin, 2, 2, slices.Concat(
			[]runStep{{run: 3, want: 0}, {run: 3, want: 0}, {run: 3, want: 1}, {run: 3, want: 1}, {run: 3, want: -1},
				{do: func(b *Balancer) { b.Done(0) }}, {run: 3, want: 0}})},
		{"rr removed slot ends a run", RoundRobin, 3, 0, []runStep{{run: 4, want: 0},
			{do: func(b *Balancer) { b.Remove(0) }}, {run: 4, want: 1}, {run: 4, want: 1}}},
		{"Pick closes a run", RoundRobin, 3, 0, []runStep{{run: 4, want: 0}, {run: 4, want: 0},
			{do: func(b *Balancer) {
				if s, _ := b.Pick(0); s != 1 {
					panic("Pick did not move on")
				}
			}}, {run: 1, want: 2}}},
		{"least active ignores runs", LeastActive, 3, 0, runPicks(1, 0, 1, 2, 0, 1, 2)},
		{"least active ignores runs of 3", LeastActive, 3, 0, []runStep{{run: 3, want: 0}, {run: 3, want: 1}, {run: 3, want: 2}}},
		{"least total ignores runs", LeastTotal, 2, 0, []runStep{{run: 3, want: 0}, {run: 3, want: 1}, {run: 3, want: 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := mustNew(t, tt.alg, tt.n, Options{})
			for i, s := range tt.steps {
				if s.do != nil {
					s.do(b)
					continue
				}
				got, last, ok := b.PickRun(tt.limit, s.run)
				if !ok {
					got = -1
				}
				if got != s.want || last != s.last {
					t.Fatalf("step %d: PickRun(%d, %d) = %d, %t; want %d, %t", i, tt.limit, s.run, got, last, s.want, s.last)
				}
			}
			if err := checkInvariants(b); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestPickRunRandom checks that a Random run stays on one slot and that runs still spread evenly.
func TestPickRunRandom(t *testing.T) {
	t.Parallel()
	const slots, run, runs = 4, 8, 4000
	b := mustNew(t, Random, slots, Options{Seed: 7})
	counts := make([]int, slots)
	for r := range runs {
		first, _, _ := b.PickRun(0, run)
		for i := 1; i < run; i++ {
			slot, last, ok := b.PickRun(0, run)
			if !ok || slot != first || last != (i == run-1) {
				t.Fatalf("run %d call %d: PickRun = %d, %t, %t; want %d, %t, true", r, i, slot, last, ok, first, i == run-1)
			}
		}
		counts[first] += run
	}
	for slot, c := range counts {
		// Each slot expects runs*run/slots = 8000 calls; 1000 runs per slot give a standard deviation of about 27
		// runs, so 100 runs (800 calls) either way is a 3.6-sigma bound.
		if c < 7200 || c > 8800 {
			t.Errorf("slot %d got %d calls of %d, want 7200–8800", slot, c, runs*run)
		}
	}
}
