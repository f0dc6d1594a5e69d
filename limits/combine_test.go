package limits

import (
	"slices"
	"testing"
	"time"
)

// planner is a shared set's backend without a connection: enough for the
// pure batch planning, which only reads the definitions.
func planner(t *testing.T, ls ...Limit) *kvBackend {
	t.Helper()
	s := newSet(t, SetOptions{}, ls...)
	margin := 10 * time.Millisecond
	b := &kvBackend{s: s, name: "plan", holder: "me", margin: int64(margin), resTTL: int64(time.Second)}
	for i, d := range s.defs { // as a shared set's: windowed admissions MaxSkew late
		if d.kind != kindResource {
			s.params[i] = newRateParams(d, margin)
		}
		b.hasRes = b.hasRes || d.kind == kindResource
	}
	return b
}

// waiters makes one waiter per request, in arrival order; a request whose
// "try" entry is 1 is a TryAcquire.
func waiters(t *testing.T, b *kvBackend, reqs ...Request) []*waiter {
	t.Helper()
	ws := make([]*waiter, len(reqs))
	for i, req := range reqs {
		r := Request{}
		for k, v := range req {
			if k != "try" {
				r[k] = v
			}
		}
		a := b.s.newAcquisition()
		if err := b.s.resolve(r, a); err != nil {
			t.Fatal(err)
		}
		ws[i] = &waiter{a: a, block: req["try"] == 0}
	}
	return ws
}

func TestPlanBatch(t *testing.T) {
	t.Parallel()
	tokens := RateLimit{Key: "tokens", Window: time.Hour, Capacity: 10, Algorithm: TokenBucket}
	calls := CallLimit{Window: time.Second, Capacity: 3}
	slots := ResourceLimit{Key: "slots", Capacity: 2}
	cases := []struct {
		name   string
		ls     []Limit
		before []Request // admitted first, in one batch at t0
		at     time.Duration
		batch  []Request
		want   []verdictKind
		head   string // the limit that blocks the head; "" if none waits
	}{
		{"all fit in one batch", []Limit{calls}, nil, 0,
			[]Request{{}, {}, {}}, []verdictKind{vAdmit, vAdmit, vAdmit}, ""},
		{"capacity stops the batch in arrival order", []Limit{calls}, nil, 0,
			[]Request{{}, {}, {}, {}, {}}, []verdictKind{vAdmit, vAdmit, vAdmit, vWait, vWait}, "call_count"},
		{"a large head blocks a small request that would fit", []Limit{tokens}, nil, 0,
			[]Request{{"tokens": 6}, {"tokens": 6}, {"tokens": 1}}, []verdictKind{vAdmit, vWait, vWait}, "tokens"},
		{"a TryAcquire behind a blocked head is refused", []Limit{tokens}, nil, 0,
			[]Request{{"tokens": 6}, {"tokens": 6}, {"tokens": 1, "try": 1}}, []verdictKind{vAdmit, vWait, vRefuse}, "tokens"},
		{"a refused TryAcquire does not stop the batch", []Limit{tokens}, nil, 0,
			[]Request{{"tokens": 6}, {"tokens": 6, "try": 1}, {"tokens": 4}}, []verdictKind{vAdmit, vRefuse, vAdmit}, ""},
		{"all or nothing over two limits", []Limit{calls, tokens}, nil, 0,
			[]Request{{"tokens": 9}, {"tokens": 2}, {"tokens": 1}}, []verdictKind{vAdmit, vWait, vWait}, "tokens"},
		{"resources count what the batch took", []Limit{slots}, nil, 0,
			[]Request{{}, {}, {}}, []verdictKind{vAdmit, vAdmit, vWait}, "slots"},
		{"the window full before", []Limit{calls}, []Request{{}, {}, {}}, 500 * time.Millisecond,
			[]Request{{}}, []verdictKind{vWait}, "call_count"},
		{"the window passed (and MaxSkew with it)", []Limit{calls}, []Request{{}, {}, {}}, time.Second + 10*time.Millisecond,
			[]Request{{}, {}, {}, {}}, []verdictKind{vAdmit, vAdmit, vAdmit, vWait}, "call_count"},
		{"the bucket refilled", []Limit{tokens}, []Request{{"tokens": 10}}, 30 * time.Minute,
			[]Request{{"tokens": 4}, {"tokens": 2}}, []verdictKind{vAdmit, vWait}, "tokens"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := planner(t, tc.ls...)
			st := b.initial(t0)
			if len(tc.before) > 0 {
				ws := waiters(t, b, tc.before...)
				out := make([]verdict, len(ws))
				if head, _ := b.planBatch(st, t0, nil, ws, out); head.wait != 0 {
					t.Fatalf("setup blocked on %q", head.key)
				}
			}
			ws := waiters(t, b, tc.batch...)
			out := make([]verdict, len(ws))
			head, write := b.planBatch(st, t0+int64(tc.at), mine(b, st), ws, out)
			for i, v := range out {
				if v.kind != tc.want[i] {
					t.Fatalf("verdicts %v, want %v", kinds(out), tc.want)
				}
			}
			if head.key != tc.head || (head.wait != 0) != (tc.head != "") {
				t.Fatalf("head blocked on %q (wait %v), want %q", head.key, time.Duration(head.wait), tc.head)
			}
			admitted := false
			for _, v := range out {
				admitted = admitted || v.kind == vAdmit
			}
			if write != admitted {
				t.Fatalf("write %v with admissions %v", write, admitted)
			}
		})
	}
}

func kinds(vs []verdict) []verdictKind {
	out := make([]verdictKind, len(vs))
	for i, v := range vs {
		out[i] = v.kind
	}
	return out
}

// A batch's state is what the acquisitions one by one would have made: the
// resources sum in our lease, the units in the limits, all at the batch's
// time.
func TestPlanBatchState(t *testing.T) {
	t.Parallel()
	b := planner(t, CallLimit{Window: time.Second, Capacity: 10},
		RateLimit{Key: "tokens", Window: time.Hour, Capacity: 100, Algorithm: TokenBucket},
		ResourceLimit{Key: "slots", Capacity: 5})
	st := b.initial(t0)
	ws := waiters(t, b, Request{"tokens": 30}, Request{"slots": 2}, Request{"tokens": 5, "slots": 0})
	out := make([]verdict, len(ws))
	now := t0 + int64(time.Millisecond)
	if head, write := b.planBatch(st, now, nil, ws, out); head.wait != 0 || !write {
		t.Fatalf("blocked on %q, write %v", head.key, write)
	}
	calls, tokens, slots := b.s.index["call_count"], b.s.index["tokens"], b.s.index["slots"]
	if got := st.Rates[calls].Level; got != 3 {
		t.Errorf("calls counted %v, want 3", got)
	}
	if got := st.Rates[calls].Log; len(got) != 1 || got[0].At != now+b.margin || got[0].N != 3 {
		t.Errorf("sliding log %v, want 3 calls at now+MaxSkew", got)
	}
	if got := st.Rates[tokens].Level; got != 65 {
		t.Errorf("tokens left %v, want 65", got)
	}
	h := st.Holders["me"]
	if h.Slots[slots] != 3 || h.Expires != now+b.resTTL {
		t.Errorf("our lease %+v, want 3 slots until now+ResourceLeaseTTL", h)
	}
}

// An expired lease in the state is dropped and written even when the head
// waits, so that the waiters do not settle it again on every attempt.
func TestPlanBatchWritesPrunedState(t *testing.T) {
	t.Parallel()
	b := planner(t, ResourceLimit{Key: "slots", Capacity: 1})
	st := b.initial(t0)
	st.Holders = map[string]holder{"dead": {Expires: t0 - int64(time.Second), Slots: []float64{1}},
		"live": {Expires: t0 + int64(time.Second), Slots: []float64{1}}}
	ws := waiters(t, b, Request{})
	out := make([]verdict, 1)
	head, write := b.planBatch(st, t0, nil, ws, out)
	if !write || out[0].kind != vWait || head.key != "slots" {
		t.Fatalf("write %v verdict %v head %q; want the pruned state written and the waiter waiting", write, out[0].kind, head.key)
	}
	if _, ok := st.Holders["dead"]; ok {
		t.Fatal("the expired lease is still there")
	}
	// The wait hint is the live holder's expiry, MaxSkew late.
	if want := int64(time.Second) + b.margin; head.wait != want {
		t.Fatalf("head waits %v, want %v", time.Duration(head.wait), time.Duration(want))
	}
}

// mine is what the test's process holds: all of its lease in st.
func mine(b *kvBackend, st *sharedState) []float64 {
	if h, ok := st.Holders[b.holder]; ok {
		return slices.Clone(h.Slots)
	}
	return make([]float64, len(b.s.defs))
}

// Our lease counts no more than this process holds: slots counted twice by
// a write whose answer was lost, and redone, do not block it.
func TestPlanBatchTrimsOwnLease(t *testing.T) {
	t.Parallel()
	b := planner(t, ResourceLimit{Key: "slots", Capacity: 2})
	st := b.initial(t0)
	st.Holders = map[string]holder{"me": {Expires: t0 + int64(time.Second), Slots: []float64{2}}}
	ws := waiters(t, b, Request{}, Request{}, Request{})
	out := make([]verdict, len(ws))
	head, write := b.planBatch(st, t0, []float64{0}, ws, out)
	if got := kinds(out); !slices.Equal(got, []verdictKind{vAdmit, vAdmit, vWait}) || !write || head.key != "slots" {
		t.Fatalf("verdicts %v write %v head %q; want two admitted over the phantom slots", got, write, head.key)
	}
	if got := st.Holders["me"].Slots[0]; got != 2 {
		t.Fatalf("our lease holds %v, want 2 (the batch's)", got)
	}
}
