package client

import (
	"slices"
	"testing"

	"github.com/natsfleet/natsfleet/balancer"
)

// runStep is one pick of a run script: with run, it must return want (-1: none) and last; or an action on the
// balancer.
type runStep struct {
	run  int
	want int
	last bool
	do   func(*balancer.Balancer)
}

func runPicks(run int, slots ...int) []runStep {
	s := make([]runStep, len(slots))
	for i, slot := range slots {
		s[i] = runStep{run: run, want: slot, last: run > 1 && i%run == run-1}
	}
	return s
}

func TestRunPicker(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		alg   balancer.Algorithm
		n     int
		limit int
		steps []runStep
	}{
		{"round robin in runs of 3", balancer.RoundRobin, 3, 0, runPicks(3, 0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0)},
		{"a run of 1 is a pick", balancer.RoundRobin, 3, 0, runPicks(1, 0, 1, 2, 0)},
		{"a run's length is set at its start", balancer.RoundRobin, 2, 0,
			[]runStep{{run: 2, want: 0}, {run: 5, want: 0, last: true}, {run: 5, want: 1}, {run: 1, want: 0}, {run: 1, want: 1}}},
		{"the cap ends a run early", balancer.RoundRobin, 2, 2, slices.Concat(
			[]runStep{{run: 3, want: 0}, {run: 3, want: 0}, {run: 3, want: 1}, {run: 3, want: 1}, {run: 3, want: -1},
				{do: func(b *balancer.Balancer) { b.Done(0) }}, {run: 3, want: 0}})},
		{"a removed slot ends a run", balancer.RoundRobin, 3, 0, []runStep{{run: 4, want: 0},
			{do: func(b *balancer.Balancer) { b.Remove(0) }}, {run: 4, want: 1}, {run: 4, want: 1}}},
		{"random runs stay on one slot", balancer.Random, 1, 0, runPicks(3, 0, 0, 0, 0, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, err := balancer.New(tt.alg, tt.n, balancer.Options{Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			var r runPicker
			for i, s := range tt.steps {
				if s.do != nil {
					s.do(b)
					continue
				}
				got, last, ok := r.next(b, tt.limit, s.run)
				if !ok {
					got = -1
				}
				if got != s.want || last != s.last {
					t.Fatalf("step %d: next(%d, %d) = %d, %t; want %d, %t", i, tt.limit, s.run, got, last, s.want, s.last)
				}
			}
		})
	}
}

// Random runs keep to one slot each and still spread evenly.
func TestRunPickerRandomSpreads(t *testing.T) {
	t.Parallel()
	const slots, run, runs = 4, 8, 4000
	b, err := balancer.New(balancer.Random, slots, balancer.Options{Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	var r runPicker
	counts := make([]int, slots)
	for range runs {
		first, _, _ := r.next(b, 0, run)
		for k := 1; k < run; k++ {
			if s, last, _ := r.next(b, 0, run); s != first || last != (k == run-1) {
				t.Fatalf("call %d of a run went to %d (last %t), the run's first to %d", k, s, last, first)
			}
		}
		counts[first]++
	}
	for i, n := range counts {
		if n < runs/slots*8/10 || n > runs/slots*12/10 {
			t.Errorf("slot %d opened %d of %d runs, want %d ± 20%%", i, n, runs, runs/slots)
		}
	}
}
