package balancer

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"testing"
)

func TestStats(t *testing.T) {
	t.Parallel()
	tests := []struct {
		alg      Algorithm
		opts     Options
		want     Stats
		wantJSON string
	}{
		{
			alg:      RoundRobin,
			opts:     Options{Offset: 5},
			want:     Stats{Algorithm: RoundRobin, TotalDispatched: 10, Offset: 5},
			wantJSON: `{"algorithm":"RoundRobin","total_dispatched":10,"offset":5}`,
		},
		{
			alg: LeastActive,
			// The last picks (9 and 10) stay in flight, on slots 2 and 0.
			want: Stats{Algorithm: LeastActive, TotalDispatched: 10,
				ActiveCalls: map[int]int{0: 1, 1: 0, 2: 1}, TotalActive: 2},
			wantJSON: `{"algorithm":"LeastActiveLoad","total_dispatched":10,"active_calls":{"0":1,"1":0,"2":1},"total_active":2}`,
		},
		{
			alg: LeastTotal,
			want: Stats{Algorithm: LeastTotal, TotalDispatched: 10,
				TotalCalls: map[int]uint64{0: 4, 1: 3, 2: 3}, SumTotalCalls: 10},
			wantJSON: `{"algorithm":"LeastTotalLoad","total_dispatched":10,"total_calls":{"0":4,"1":3,"2":3},"sum_total_calls":10}`,
		},
		{
			alg:      Random,
			opts:     Options{Seed: 1},
			want:     Stats{Algorithm: Random, TotalDispatched: 10},
			wantJSON: `{"algorithm":"Random","total_dispatched":10}`,
		},
	}
	for _, tt := range tests {
		t.Run(string(tt.alg), func(t *testing.T) {
			t.Parallel()
			b := mustNew(t, tt.alg, 3, tt.opts)
			// 10 calls on 3 slots; all but the last two end.
			var slots []int
			for range 10 {
				s, ok := b.Pick(0)
				if !ok {
					t.Fatal("Pick(0) found no slot")
				}
				slots = append(slots, s)
			}
			for _, s := range slots[:8] {
				b.Done(s)
			}
			got := b.Stats()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Stats() = %+v, want %+v", got, tt.want)
			}
			data, err := json.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			if string(data) != tt.wantJSON {
				t.Errorf("JSON = %s\nwant   %s", data, tt.wantJSON)
			}
			var back Stats
			if err := json.Unmarshal(data, &back); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, tt.want) {
				t.Errorf("round trip = %+v, want %+v", back, tt.want)
			}
		})
	}
}

func TestStatsJSONKeys(t *testing.T) {
	t.Parallel()
	common := []string{"algorithm", "total_dispatched"}
	want := map[Algorithm][]string{
		RoundRobin:  append([]string{"offset"}, common...),
		LeastActive: append([]string{"active_calls", "total_active"}, common...),
		LeastTotal:  append([]string{"sum_total_calls", "total_calls"}, common...),
		Random:      common,
	}
	for _, alg := range allAlgorithms {
		// Also with no live slot: the keys must not disappear.
		for _, n := range []int{0, 3} {
			b := mustNew(t, alg, n, Options{})
			for range 10 {
				b.Pick(0)
			}
			data, err := json.Marshal(b.Stats())
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(data, &m); err != nil {
				t.Fatal(err)
			}
			got := slices.Sorted(maps.Keys(m))
			if w := slices.Sorted(slices.Values(want[alg])); !slices.Equal(got, w) {
				t.Errorf("%s with %d slots: keys %v, want %v", alg, n, got, w)
			}
			if wantTotal := float64(10 * min(n, 1)); m["total_dispatched"] != wantTotal {
				t.Errorf("%s with %d slots: total_dispatched %v, want %v", alg, n, m["total_dispatched"], wantTotal)
			}
			if m["algorithm"] != alg.Name() {
				t.Errorf("%s: algorithm %v, want %q", alg, m["algorithm"], alg.Name())
			}
		}
	}
}

func TestStatsCoverLiveSlotsOnly(t *testing.T) {
	t.Parallel()
	la := mustNew(t, LeastActive, 3, Options{})
	lt := mustNew(t, LeastTotal, 3, Options{})
	for _, b := range []*Balancer{la, lt} {
		for range 6 {
			b.Pick(0)
		}
		b.Remove(1)
	}
	if got, want := la.Stats(), (Stats{Algorithm: LeastActive, TotalDispatched: 6,
		ActiveCalls: map[int]int{0: 2, 2: 2}, TotalActive: 4}); !reflect.DeepEqual(got, want) {
		t.Errorf("least active Stats() = %+v, want %+v", got, want)
	}
	if got, want := lt.Stats(), (Stats{Algorithm: LeastTotal, TotalDispatched: 6,
		TotalCalls: map[int]uint64{0: 2, 2: 2}, SumTotalCalls: 4}); !reflect.DeepEqual(got, want) {
		t.Errorf("least total Stats() = %+v, want %+v", got, want)
	}
}

func TestStatsUnmarshalErrors(t *testing.T) {
	t.Parallel()
	for _, in := range []string{`{"algorithm":"Weighted","total_dispatched":1}`, `{"algorithm":1}`, `[]`} {
		var s Stats
		if err := json.Unmarshal([]byte(in), &s); err == nil {
			t.Errorf("Unmarshal(%s) = %+v, want an error", in, s)
		}
	}
}

func TestStatsJSONOfZeroValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   Stats
		want string
	}{
		{Stats{Algorithm: LeastActive}, `{"algorithm":"LeastActiveLoad","total_dispatched":0,"active_calls":{},"total_active":0}`},
		{Stats{Algorithm: LeastTotal}, `{"algorithm":"LeastTotalLoad","total_dispatched":0,"total_calls":{},"sum_total_calls":0}`},
		{Stats{Algorithm: RoundRobin}, `{"algorithm":"RoundRobin","total_dispatched":0,"offset":0}`},
		{Stats{Algorithm: "weighted", TotalDispatched: 2}, `{"algorithm":"weighted","total_dispatched":2}`},
	}
	for _, tt := range tests {
		data, err := json.Marshal(tt.in)
		if err != nil || string(data) != tt.want {
			t.Errorf("Marshal(%+v) = %s, %v; want %s", tt.in, data, err, tt.want)
		}
	}
}
