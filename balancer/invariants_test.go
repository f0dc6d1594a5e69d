package balancer

import (
	"fmt"
	"math/bits"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var allAlgorithms = []Algorithm{RoundRobin, LeastActive, LeastTotal, Random}

func mustNew(t testing.TB, alg Algorithm, n int, opts Options) *Balancer {
	t.Helper()
	b, err := New(alg, n, opts)
	if err != nil {
		t.Fatalf("New(%q, %d, %+v): %v", alg, n, opts, err)
	}
	return b
}

// checkInvariants verifies, under b's lock, that the shared counters and the
// algorithm's structure agree with each other.
func checkInvariants(b *Balancer) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := &b.st
	nLive, free := 0, 0
	for i, live := range st.live {
		switch {
		case live:
			nLive++
		case st.active[i] == 0:
			free++
		}
		if st.active[i] < 0 {
			return fmt.Errorf("slot %d: active %d < 0", i, st.active[i])
		}
	}
	loaded := 0
	for _, n := range st.others {
		if n > 0 {
			loaded++
		}
	}
	if loaded != st.loaded {
		return fmt.Errorf("loaded %d, counted %d", st.loaded, loaded)
	}
	if nLive != st.nLive || free != st.free {
		return fmt.Errorf("nLive %d (counted %d), free %d (counted %d)", st.nLive, nLive, st.free, free)
	}
	eligible := func(i int) bool { return st.live[i] && st.hasRoom(i) }
	switch p := b.pol.(type) {
	case *roundRobin:
		return checkRoomSet(&p.roomSet, eligible)
	case *random:
		return checkRoomSet(&p.roomSet, eligible)
	case *leastActive:
		return checkLeastActive(p)
	case *leastTotal:
		return checkLeastTotal(p, eligible)
	}
	return fmt.Errorf("unknown policy %T", b.pol)
}

func checkRoomSet(r *roomSet, eligible func(int) bool) error {
	count := 0
	for _, w := range r.room.words {
		count += bits.OnesCount64(w)
	}
	if count != r.room.count {
		return fmt.Errorf("bitset count %d, popcount %d", r.room.count, count)
	}
	if r.room.n != len(r.st.live) {
		return fmt.Errorf("bitset universe %d, slots %d", r.room.n, len(r.st.live))
	}
	for i := range r.st.live {
		if r.room.has(i) != eligible(i) {
			return fmt.Errorf("slot %d: in room set %v, eligible %v", i, r.room.has(i), eligible(i))
		}
	}
	return nil
}

func checkLeastActive(l *leastActive) error {
	seen := make(map[int32]bool)
	lowest := -1
	for c := range l.head {
		prev := none
		for s := l.head[c]; s != none; s = l.next[s] {
			if seen[s] {
				return fmt.Errorf("slot %d listed twice", s)
			}
			seen[s] = true
			if !l.st.live[s] || l.load(int(s)) != c || l.prev[s] != prev {
				return fmt.Errorf("slot %d in bucket %d: live %v load %d prev %d (want %d)",
					s, c, l.st.live[s], l.load(int(s)), l.prev[s], prev)
			}
			prev = s
		}
		if l.tail[c] != prev {
			return fmt.Errorf("bucket %d tail %d, last listed %d", c, l.tail[c], prev)
		}
		if prev != none && lowest < 0 {
			lowest = c
		}
	}
	if len(seen) != l.st.nLive {
		return fmt.Errorf("%d slots in buckets, %d live", len(seen), l.st.nLive)
	}
	if l.st.nLive > 0 && l.min != lowest {
		return fmt.Errorf("min %d, lowest non-empty bucket %d", l.min, lowest)
	}
	return nil
}

func checkLeastTotal(l *leastTotal, eligible func(int) bool) error {
	listed := 0
	buckets := 0
	prevB := none
	for b := l.first; b != none; b = l.bNext[b] {
		buckets++
		if l.bPrev[b] != prevB {
			return fmt.Errorf("bucket %d prev %d, want %d", b, l.bPrev[b], prevB)
		}
		if prevB != none && l.bScore[prevB] >= l.bScore[b] {
			return fmt.Errorf("bucket scores not ascending: %d then %d", l.bScore[prevB], l.bScore[b])
		}
		if l.bHead[b] == none {
			return fmt.Errorf("empty bucket %d (score %d) in the list", b, l.bScore[b])
		}
		prev := none
		for s := l.bHead[b]; s != none; s = l.next[s] {
			listed++
			if l.bucket[s] != b || l.score[s] != l.bScore[b] || l.prev[s] != prev || !eligible(int(s)) {
				return fmt.Errorf("slot %d in bucket %d: bucket %d score %d/%d prev %d/%d eligible %v",
					s, b, l.bucket[s], l.score[s], l.bScore[b], l.prev[s], prev, eligible(int(s)))
			}
			prev = s
		}
		if l.bTail[b] != prev {
			return fmt.Errorf("bucket %d tail %d, last listed %d", b, l.bTail[b], prev)
		}
		prevB = b
	}
	if l.last != prevB {
		return fmt.Errorf("last bucket %d, walked to %d", l.last, prevB)
	}
	want := 0
	for i := range l.st.live {
		if eligible(i) {
			want++
			if l.bucket[i] == none {
				return fmt.Errorf("eligible slot %d not listed", i)
			}
		} else if l.bucket[i] != none {
			return fmt.Errorf("ineligible slot %d listed", i)
		}
	}
	if listed != want {
		return fmt.Errorf("%d slots listed, %d eligible", listed, want)
	}
	if buckets+len(l.bFree) != len(l.bScore) {
		return fmt.Errorf("%d buckets used + %d free != %d nodes", buckets, len(l.bFree), len(l.bScore))
	}
	return nil
}
