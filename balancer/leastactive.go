package balancer

// none marks the end of an intrusive list (and "not in a list").
const none int32 = -1

// leastActive keeps the live slots in buckets by load (active count plus the
// calls other callers have on the worker, SetLoad), each bucket a FIFO doubly
// linked list threaded through per-slot next/prev arrays, plus the lowest
// non-empty bucket. A call start moves a slot up one bucket and a call end
// moves it down one, so Pick and Done are O(1) whatever the number of slots,
// and nothing is allocated once the bucket array covers the highest load
// reached.
type leastActive struct {
	st         *slotState
	next, prev []int32 // per slot
	head, tail []int32 // per load
	min        int     // lowest load of a live slot, while any is live
}

// load is the slot's bucket.
func (l *leastActive) load(slot int) int { return l.st.active[slot] + l.st.others[slot] }

func (l *leastActive) grow(n int) {
	for len(l.next) < n {
		l.next = append(l.next, none)
		l.prev = append(l.prev, none)
	}
}

func (l *leastActive) rebuild() {
	for c := range l.head {
		l.head[c], l.tail[c] = none, none
	}
	l.min = -1
	for i, live := range l.st.live {
		if !live {
			continue
		}
		c := l.load(i)
		l.push(i, c)
		if l.min < 0 || c < l.min {
			l.min = c
		}
	}
}

// push appends slot to the tail of bucket c: the newest arrival is picked
// last among equals.
func (l *leastActive) push(slot, c int) {
	for len(l.head) <= c {
		l.head = append(l.head, none)
		l.tail = append(l.tail, none)
	}
	s := int32(slot)
	l.prev[slot], l.next[slot] = l.tail[c], none
	if l.tail[c] == none {
		l.head[c] = s
	} else {
		l.next[l.tail[c]] = s
	}
	l.tail[c] = s
}

func (l *leastActive) unlink(slot, c int) {
	p, n := l.prev[slot], l.next[slot]
	if p == none {
		l.head[c] = n
	} else {
		l.next[p] = n
	}
	if n == none {
		l.tail[c] = p
	} else {
		l.prev[n] = p
	}
	l.prev[slot], l.next[slot] = none, none
}

func (l *leastActive) pick() (int, bool) {
	if l.st.limit == 0 {
		return int(l.head[l.min]), true
	}
	if l.st.loaded == 0 { // a slot's load is its active count: a bucket at the cap holds only full slots
		if l.min >= l.st.limit {
			return -1, false // every live slot is at the cap
		}
		return int(l.head[l.min]), true
	}
	// Others' calls count in the load but not against the cap: the least loaded slot with room.
	for c := l.min; c < len(l.head); c++ {
		for s := l.head[c]; s != none; s = l.next[s] {
			if l.st.active[s] < l.st.limit {
				return int(s), true
			}
		}
	}
	return -1, false
}

func (l *leastActive) started(slot int) {
	c := l.load(slot) - 1 // picked from the min bucket, or taken from any
	l.unlink(slot, c)
	l.push(slot, c+1)
	if c == l.min && l.head[c] == none {
		l.min = c + 1
	}
}

func (l *leastActive) ended(slot int) {
	c := l.load(slot)
	l.unlink(slot, c+1)
	l.push(slot, c)
	l.min = min(l.min, c)
}

func (l *leastActive) added(slot int) { // with no load: Add clears it
	l.push(slot, 0)
	l.min = 0
}

func (l *leastActive) removed(slot int) { l.leave(slot, l.load(slot)) }

// leave takes slot out of bucket c, finding the new lowest bucket if c was it and is now empty.
func (l *leastActive) leave(slot, c int) {
	l.unlink(slot, c)
	if c != l.min || l.head[c] != none {
		return
	}
	l.min = -1
	for k := c + 1; k < len(l.head); k++ {
		if l.head[k] != none {
			l.min = k
			break
		}
	}
}

func (l *leastActive) reloaded(slot, before int, _ uint64) {
	if l.st.others[slot] == before {
		return // only the total changed
	}
	c := l.st.active[slot] + before
	l.leave(slot, c)
	l.push(slot, l.load(slot))
	if l.min < 0 || l.load(slot) < l.min {
		l.min = l.load(slot)
	}
}
