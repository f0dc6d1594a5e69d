package limits

import (
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

const ms = int64(time.Millisecond)

// t0 is an arbitrary start, far from zero like Unix nanoseconds.
const t0 = int64(1_700_000_000) * int64(time.Second)

// step is one acquisition attempt: advance, ask, take if it fits.
func step(p *rateParams, st *rateState, now int64, n float64) int64 {
	p.advance(st, now)
	w := p.wait(st, now, n)
	if w == 0 {
		p.take(st, now, n, now)
	}
	return w
}

func params(alg Algorithm, capacity float64, window time.Duration, margin time.Duration) rateParams {
	return newRateParams(limitDef{key: "k", kind: kindRate, alg: alg, capacity: capacity, window: window}, margin)
}

// op is one attempt at offset atMs taking n; wait is the expected result (0:
// admitted), in nanoseconds.
type op struct {
	atMs float64
	n    float64
	wait int64
}

func TestAlgorithmSequences(t *testing.T) {
	t.Parallel()
	burst := func(n int, atMs float64) []op {
		ops := make([]op, n)
		for i := range ops {
			ops[i] = op{atMs: atMs, n: 1}
		}
		return ops
	}
	cases := []struct {
		name string
		p    rateParams
		ops  []op
	}{
		{"token bucket: 20-token burst then refusal, refill 1 per 50ms", params(TokenBucket, 20, time.Second, 0),
			append(burst(20, 0), op{0, 1, 50 * ms}, op{25, 1, 25 * ms}, op{50, 1, 0}, op{50, 1, 50 * ms}, op{150, 2, 0}, op{150, 1, 50 * ms})},
		{"token bucket: a request larger than what is left waits for all of it", params(TokenBucket, 10, time.Second, 0),
			[]op{{0, 8, 0}, {0, 5, 300 * ms}, {300, 5, 0}, {300, 0.5, 50 * ms}}},
		{"token bucket: refill caps at capacity", params(TokenBucket, 10, time.Second, 0),
			[]op{{0, 10, 0}, {5000, 10, 0}, {5000, 1, 100 * ms}}},
		{"gcra rate 10 capacity 20: burst of 20, then one per emission interval 0.1s", params(GCRA, 20, 2*time.Second, 0),
			append(burst(20, 0), op{0, 1, 100 * ms}, op{100, 1, 0}, op{100, 1, 100 * ms}, op{250, 1, 0}, op{250, 1, 50 * ms})},
		{"gcra: 5 at once leaves tolerance for 15", params(GCRA, 20, 2*time.Second, 0),
			[]op{{0, 5, 0}, {0, 15, 0}, {0, 1, 100 * ms}}},
		{"gcra: emission interval not a whole number of ns still bursts capacity", params(GCRA, 3, time.Second, 0),
			[]op{{0, 1, 0}, {0, 1, 0}, {0, 1, 0}, {0, 1, 333333334}}},
		{"leaky bucket: 5 per second, one drains every 200ms", params(LeakyBucket, 5, time.Second, 0),
			append(burst(5, 0), op{0, 1, 200 * ms}, op{200, 1, 0}, op{300, 1, 100 * ms}, op{400, 2, 200 * ms}, op{600, 2, 0})},
		{"leaky bucket: an empty bucket starts draining from the next admission", params(LeakyBucket, 2, time.Second, 0),
			[]op{{0, 2, 0}, {5000, 2, 0}, {5100, 1, 400 * ms}, {5500, 1, 0}}},
		{"sliding window: 3 per second, each admission leaves the window 1s after it", params(SlidingWindow, 3, time.Second, 0),
			[]op{{0, 1, 0}, {100, 1, 0}, {200, 1, 0}, {500, 1, 500 * ms}, {1000, 1, 0}, {1050, 1, 50 * ms}, {1100, 2, 100 * ms}, {1200, 2, 0}}},
		{"sliding window: skew margin delays expiry", params(SlidingWindow, 1, time.Second, 100*time.Millisecond),
			[]op{{0, 1, 0}, {1000, 1, 100 * ms}, {1099, 1, 1 * ms}, {1100, 1, 0}}},
		{"sliding window above 128: times round up to window/128", params(SlidingWindow, 1000, 1280*time.Millisecond, 0),
			[]op{{1, 1000, 0}, {1280, 1, 10 * ms}, {1289, 1, 1 * ms}, {1290, 1, 0}}},
		{"fixed window: 2x burst at the window edge", params(FixedWindow, 10, time.Second, 0),
			[]op{{990, 10, 0}, {995, 1, 5 * ms}, {1000, 10, 0}, {1000, 1, 1000 * ms}}},
		{"fixed window: window anchored at creation, not at clock boundaries", params(FixedWindow, 2, time.Second, 0),
			[]op{{300, 2, 0}, {999, 1, 1 * ms}, {1000, 1, 0}, {1700, 1, 0}, {1800, 1, 200 * ms}, {2000, 1, 0}}},
		{"fixed window: skew margin delays the window start", params(FixedWindow, 1, time.Second, 100*time.Millisecond),
			[]op{{0, 1, 0}, {1000, 1, 100 * ms}, {1100, 1, 0}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := tc.p
			st := p.init(t0)
			for i, o := range tc.ops {
				now := t0 + int64(o.atMs*float64(ms))
				if got := step(&p, &st, now, o.n); got != o.wait {
					t.Fatalf("op %d (at %vms take %v): wait = %v, want %v", i, o.atMs, o.n, time.Duration(got), time.Duration(o.wait))
				}
			}
		})
	}
}

func TestGCRAState(t *testing.T) {
	t.Parallel()
	p := params(GCRA, 20, 2*time.Second, 0)
	if got := p.interval(); got != 1e8 {
		t.Fatalf("emission interval = %vns, want 1e8 (0.1s)", got)
	}
	if p.window != int64(2*time.Second) {
		t.Fatalf("tau = %v, want 2s", time.Duration(p.window))
	}
	st := p.init(t0)
	if w := step(&p, &st, t0, 5); w != 0 {
		t.Fatalf("take 5: wait %v", w)
	}
	if tat := float64(st.Mark-t0) + st.Frac; math.Abs(tat-5e8) > 1 {
		t.Fatalf("tat = now+%vns, want now+0.5s", tat)
	}
	s := p.stats("k", &st, t0)
	if s.Available != 15 || s.Extra["emission_interval"] != 0.1 || s.Extra["max_rate"] != 10 || s.Utilization != 0.25 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestRefunds(t *testing.T) {
	t.Parallel()
	cases := []struct {
		alg           Algorithm
		take, refund  float64
		wantAvailable float64
	}{
		{TokenBucket, 10, 4, 14},
		{TokenBucket, 2, 50, 20}, // capped at capacity
		{GCRA, 10, 4, 14},
		{GCRA, 2, 50, 20},
		{LeakyBucket, 10, 4, 10},
		{SlidingWindow, 10, 4, 10},
		{FixedWindow, 10, 4, 10},
	}
	for _, tc := range cases {
		p := params(tc.alg, 20, time.Second, 0)
		st := p.init(t0)
		if w := step(&p, &st, t0, tc.take); w != 0 {
			t.Fatalf("%s: take %v: wait %v", tc.alg, tc.take, w)
		}
		p.refund(&st, t0, tc.refund)
		if got := p.available(&st, t0); math.Abs(got-tc.wantAvailable) > 1e-9 {
			t.Errorf("%s: take %v refund %v: available %v, want %v", tc.alg, tc.take, tc.refund, got, tc.wantAvailable)
		}
	}
}

func TestGiveBack(t *testing.T) {
	t.Parallel()
	// A lease of 8 recorded at the end of its validity, 3 used, 5 given back.
	cases := []struct {
		alg  Algorithm
		want float64 // available after the give-back
	}{
		{SlidingWindow, 17}, {FixedWindow, 17}, {TokenBucket, 17}, {GCRA, 17}, {LeakyBucket, 17},
	}
	for _, tc := range cases {
		p := params(tc.alg, 20, time.Second, 0)
		st := p.init(t0)
		p.advance(&st, t0)
		at := st.Mark
		if tc.alg == SlidingWindow {
			at = p.record(&st, t0+200*ms, 8)
		} else {
			p.take(&st, t0, 8, t0)
		}
		p.giveBack(&st, t0+ms, 5, at)
		p.advance(&st, t0+ms)
		got := p.available(&st, t0+ms)
		if tc.alg == TokenBucket || tc.alg == GCRA {
			got = math.Round(got*1000) / 1000 // 1ms of refill is 0.02
			tc.want += 0.02
		}
		// (the leaky bucket drains one unit per 50ms: none in 1ms)
		if got != tc.want {
			t.Errorf("%s: available after give-back %v, want %v", tc.alg, got, tc.want)
		}
	}
	// A fixed window that rolled over keeps nothing of the old one to give back.
	p := params(FixedWindow, 20, time.Second, 0)
	st := p.init(t0)
	p.take(&st, t0, 8, t0)
	p.advance(&st, t0+2000*ms)
	p.take(&st, t0+2000*ms, 4, t0+2000*ms)
	p.giveBack(&st, t0+2000*ms, 5, t0)
	if st.Level != 4 {
		t.Fatalf("give-back into a new window: level %v, want 4", st.Level)
	}
}

// TestNoOverAdmissionProperty drives each algorithm with random requests at
// random times and checks the admitted log against the algorithm's promise,
// independently of its implementation.
func TestNoOverAdmissionProperty(t *testing.T) {
	t.Parallel()
	const capacity = 20
	window := time.Second
	for _, alg := range []Algorithm{SlidingWindow, FixedWindow, TokenBucket, GCRA, LeakyBucket} {
		for _, margin := range []time.Duration{0, 30 * time.Millisecond} {
			rng := rand.New(rand.NewPCG(uint64(len(alg)), uint64(margin)))
			p := params(alg, capacity, window, margin)
			st := p.init(t0)
			var log []int64
			now := t0
			for range 20000 {
				now += rng.Int64N(int64(40 * time.Millisecond))
				n := float64(1 + rng.IntN(3))
				if step(&p, &st, now, n) == 0 {
					for range int(n) {
						log = append(log, now)
					}
				}
				if len(st.Log) > capacity {
					t.Fatalf("%s: sliding log holds %d entries, capacity %d", alg, len(st.Log), capacity)
				}
			}
			if len(log) < 5000 {
				t.Fatalf("%s margin %v: only %d admissions: the test does not exercise the limit", alg, margin, len(log))
			}
			switch alg {
			case SlidingWindow:
				if i, j := maxInWindow(log, int64(window)+int64(margin), capacity); i >= 0 {
					t.Fatalf("%s margin %v: admissions %d..%d within %v", alg, margin, i, j, window+margin)
				}
			case FixedWindow:
				// A fixed window holds capacity; two windows can meet at an edge.
				if i, j := maxInWindow(log, int64(window), 2*capacity); i >= 0 {
					t.Fatalf("%s: admissions %d..%d within %v", alg, i, j, window)
				}
			default:
				if excess := bucketExcess(log, capacity/window.Seconds()); excess > capacity+1e-9 {
					t.Fatalf("%s: %v admissions beyond the rate in some interval, burst is %d", alg, excess, capacity)
				}
			}
		}
	}
}

// maxInWindow returns the first pair i<j of sorted times with j-i+1 > limit
// admissions inside a span shorter than w, or -1.
func maxInWindow(log []int64, w int64, limit int) (int, int) {
	for j := limit; j < len(log); j++ {
		if log[j]-log[j-limit] < w {
			return j - limit, j
		}
	}
	return -1, -1
}

// bucketExcess is the largest (admissions in [a,b]) - rate*(b-a) over all
// intervals of the sorted log: a bucket of burst B keeps it at most B.
func bucketExcess(log []int64, perSecond float64) float64 {
	best, minF := 0.0, math.Inf(1)
	for k, ts := range log {
		f := float64(k) - perSecond*float64(ts)/1e9
		minF = min(minF, f-1) // interval starting at k counts k itself
		best = max(best, f-minF)
	}
	return best
}

// TestLeasedUnitsStayOut: units leased to reservoirs (Out) are not refilled
// over while out, so bucket plus reservoirs never exceed capacity.
func TestLeasedUnitsStayOut(t *testing.T) {
	t.Parallel()
	for _, alg := range []Algorithm{TokenBucket, GCRA, LeakyBucket} {
		p := params(alg, 20, time.Second, 0) // 20 per second: one unit per 50ms
		st := p.init(t0)
		p.advance(&st, t0)
		p.take(&st, t0, 8, t0) // a lease of 8
		st.Out = 8
		later := t0 + int64(10*time.Second)
		p.advance(&st, later)
		if got := p.available(&st, later); got != 12 {
			t.Errorf("%s: available %v after 10s with 8 leased out, want 12", alg, got)
		}
		if w := p.wait(&st, later, 13); w != untilChange {
			t.Errorf("%s: wait for 13 with 8 out = %v, want untilChange (only settling helps)", alg, w)
		}
		if w := p.wait(&st, later, 12); w != 0 {
			t.Errorf("%s: wait for 12 = %v, want 0", alg, w)
		}
		// Settled: 3 of the 8 used. The 5 unused come back; the used 3 refill
		// over the next 150ms.
		st.Out = 0
		p.giveBack(&st, later, 5, 0)
		if got := p.available(&st, later); math.Abs(got-17) > 1e-9 {
			t.Errorf("%s: available %v after settling, want 17", alg, got)
		}
		if w := p.wait(&st, later, 20); w != 150*ms {
			t.Errorf("%s: wait for a full bucket %v, want 150ms", alg, time.Duration(w))
		}
	}
}

func TestStateEncoding(t *testing.T) {
	t.Parallel()
	st := sharedState{Sig: "s", Rates: []rateState{
		{Level: 12.5, Mark: t0, Frac: 0.25},
		{Level: 7.5, Log: slotLog{{At: t0, N: 3}, {At: t0 + 7, N: 4.5}, {At: t0 + int64(time.Hour), N: 1 << 40}}},
		{},
	}, Holders: map[string]holder{"h": {Expires: t0, Slots: []float64{0, 0, 2}}}}
	b, err := msgpack.Marshal(&st)
	if err != nil {
		t.Fatal(err)
	}
	var back sharedState
	if err := msgpack.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, st) {
		t.Fatalf("round trip:\n%+v\nwant\n%+v", back, st)
	}
	// A full 128-slot log of whole counts stays small.
	var full rateState
	p := params(SlidingWindow, 1e6, time.Second, 0)
	for i := range int64(slidingSlots) {
		p.record(&full, t0+i*p.quantum, 100)
	}
	if b, _ := msgpack.Marshal(full); len(b) > 1000 {
		t.Fatalf("a %d-slot log encodes in %d bytes", len(full.Log), len(b))
	}
}
