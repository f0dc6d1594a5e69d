package balancer

import (
	"cmp"
	"slices"
)

// leastTotal keeps the live slots that have room in a list of buckets sorted
// by selection score (the LFU-cache layout): each bucket holds the slots of
// one score in FIFO order, and buckets are linked in ascending score order.
// A pick takes the head of the first bucket and moves it to the bucket of
// score+1, which is either the next bucket or a new one inserted right after,
// so Pick is O(1). Slots that reach the cap leave the list and come back when
// a call on them ends. Bucket nodes live in preallocated arrays: there are
// never more buckets than slots in the list, plus one during a move.
type leastTotal struct {
	st *slotState

	// per slot
	score   []uint64
	bucket  []int32 // bucket holding the slot, none when it is not eligible
	next    []int32
	prev    []int32
	scratch []int32 // rebuild's sort buffer
	bScore  []uint64
	bHead   []int32
	bTail   []int32
	bNext   []int32
	bPrev   []int32
	bFree   []int32 // unused bucket nodes
	first   int32   // bucket with the lowest score
	last    int32   // bucket with the highest score
}

func (l *leastTotal) grow(n int) {
	for len(l.score) < n {
		l.score = append(l.score, 0)
		l.bucket = append(l.bucket, none)
		l.next = append(l.next, none)
		l.prev = append(l.prev, none)
	}
	l.scratch = slices.Grow(l.scratch[:0], n)
	for len(l.bScore) < n+1 {
		l.bFree = append(l.bFree, int32(len(l.bScore)))
		l.bScore = append(l.bScore, 0)
		l.bHead = append(l.bHead, none)
		l.bTail = append(l.bTail, none)
		l.bNext = append(l.bNext, none)
		l.bPrev = append(l.bPrev, none)
	}
}

func (l *leastTotal) rebuild() {
	l.bFree = l.bFree[:0]
	for b := len(l.bScore) - 1; b >= 0; b-- {
		l.bFree = append(l.bFree, int32(b))
	}
	l.first, l.last = none, none
	eligible := l.scratch[:0]
	for i, live := range l.st.live {
		l.bucket[i] = none
		if live && l.st.hasRoom(i) {
			eligible = append(eligible, int32(i))
		}
	}
	slices.SortFunc(eligible, func(a, b int32) int {
		return cmp.Or(cmp.Compare(l.score[a], l.score[b]), cmp.Compare(a, b))
	})
	for _, s := range eligible {
		l.insert(int(s)) // ascending order: always the O(1) tail case
	}
	l.scratch = eligible
}

// newBucket takes a free node for score and links it after prev (none: at
// the front).
func (l *leastTotal) newBucket(score uint64, prev int32) int32 {
	b := l.bFree[len(l.bFree)-1]
	l.bFree = l.bFree[:len(l.bFree)-1]
	l.bScore[b], l.bHead[b], l.bTail[b] = score, none, none
	next := l.first
	if prev != none {
		next = l.bNext[prev]
		l.bNext[prev] = b
	} else {
		l.first = b
	}
	if next != none {
		l.bPrev[next] = b
	} else {
		l.last = b
	}
	l.bPrev[b], l.bNext[b] = prev, next
	return b
}

func (l *leastTotal) freeBucket(b int32) {
	p, n := l.bPrev[b], l.bNext[b]
	if p == none {
		l.first = n
	} else {
		l.bNext[p] = n
	}
	if n == none {
		l.last = p
	} else {
		l.bPrev[n] = p
	}
	l.bFree = append(l.bFree, b)
}

func (l *leastTotal) appendTo(b int32, slot int) {
	s := int32(slot)
	l.bucket[slot] = b
	l.prev[slot], l.next[slot] = l.bTail[b], none
	if l.bTail[b] == none {
		l.bHead[b] = s
	} else {
		l.next[l.bTail[b]] = s
	}
	l.bTail[b] = s
}

// detach takes slot out of its bucket, leaving the bucket in the list even
// when it becomes empty.
func (l *leastTotal) detach(slot int) int32 {
	b := l.bucket[slot]
	p, n := l.prev[slot], l.next[slot]
	if p == none {
		l.bHead[b] = n
	} else {
		l.next[p] = n
	}
	if n == none {
		l.bTail[b] = p
	} else {
		l.prev[n] = p
	}
	l.bucket[slot], l.prev[slot], l.next[slot] = none, none, none
	return b
}

func (l *leastTotal) dropIfEmpty(b int32) {
	if l.bHead[b] == none {
		l.freeBucket(b)
	}
}

// insert puts an eligible slot into the bucket of its score. Scores at or
// below the first bucket's or above the last's are O(1); a score in between,
// which only arises when a slot comes back from the cap or a limit change
// reorders things, walks the buckets below it.
func (l *leastTotal) insert(slot int) {
	sc := l.score[slot]
	b := l.first
	switch {
	case b == none || sc < l.bScore[b]:
		b = l.newBucket(sc, none)
	case sc == l.bScore[b]:
	case sc >= l.bScore[l.last]:
		b = l.last
		if sc > l.bScore[b] {
			b = l.newBucket(sc, b)
		}
	default:
		for l.bScore[l.bNext[b]] <= sc {
			b = l.bNext[b]
		}
		if l.bScore[b] != sc {
			b = l.newBucket(sc, b)
		}
	}
	l.appendTo(b, slot)
}

func (l *leastTotal) pick() (int, bool) {
	if l.first == none {
		return -1, false
	}
	return int(l.bHead[l.first]), true
}

func (l *leastTotal) started(slot int) {
	b := l.detach(slot)
	l.score[slot]++
	if l.st.hasRoom(slot) {
		nb := l.bNext[b]
		if nb == none || l.bScore[nb] != l.score[slot] {
			nb = l.newBucket(l.score[slot], b)
		}
		l.appendTo(nb, slot)
	}
	l.dropIfEmpty(b)
}

func (l *leastTotal) ended(slot int) {
	if l.bucket[slot] == none && l.st.hasRoom(slot) {
		l.insert(slot)
	}
}

func (l *leastTotal) added(slot int) {
	var low uint64
	if l.first != none {
		low = l.bScore[l.first] // the lowest score of a slot with room: O(1), so that adding n slots is O(n)
	} else {
		found := false
		for i, live := range l.st.live {
			if live && i != slot && (!found || l.score[i] < low) {
				low, found = l.score[i], true
			}
		}
	}
	l.score[slot] = low
	l.insert(slot)
}

func (l *leastTotal) removed(slot int) {
	if l.bucket[slot] != none {
		l.dropIfEmpty(l.detach(slot))
	}
}

// reloaded adds to the slot's score the calls its worker served for others since the last report.
func (l *leastTotal) reloaded(slot, _ int, prevTotal uint64) {
	t := l.st.othersTotal[slot]
	if t <= prevTotal {
		return // no new calls, or a worker that counts afresh
	}
	l.score[slot] += t - prevTotal
	if b := l.bucket[slot]; b != none {
		l.detach(slot)
		l.insert(slot)
		l.dropIfEmpty(b)
	}
}
