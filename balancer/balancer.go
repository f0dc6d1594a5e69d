package balancer

import (
	"fmt"
	"sync"
)

// Options tunes a [Balancer]. The zero value is ready to use.
type Options struct {
	// Offset is RoundRobin's starting point: the first slot picked is
	// Offset % n, as in concurry's LimitPool, where each worker's pool starts
	// at its own index so that workers do not all hit the same limit set
	// first. Negative values are an error. Default 0.
	Offset int
	// Seed seeds Random's own PCG generator, for reproducible sequences in
	// tests and simulations. Default 0: seeded from the runtime's random
	// source, so every Balancer draws a different sequence.
	Seed uint64
}

// Balancer chooses among n slots (workers) and keeps the per-slot counts its
// algorithm needs. Slots are numbered 0..n-1; [Balancer.Add] and
// [Balancer.Remove] change the live set. All methods are safe for concurrent
// use; each Balancer has its own mutex and no state is shared between
// Balancers.
type Balancer struct {
	mu     sync.Mutex
	alg    Algorithm
	offset int
	st     slotState
	pol    policy
}

// slotState is what every algorithm shares: the live set and the counters
// behind [Stats]. Slices are indexed by slot.
type slotState struct {
	live       []bool
	active     []int
	total      []uint64 // picks since the slot was (re)added
	nLive      int
	free       int // removed slots with no call in flight: reusable by Add
	dispatched uint64
	// limit is the cap that the policy's eligibility structures reflect
	// (0: no cap). Pick rebuilds them when its caller passes another one.
	limit int
	// others and othersTotal are the calls other callers have on each slot's
	// worker and those it served them (SetLoad); loaded counts the slots with
	// others > 0.
	others      []int
	othersTotal []uint64
	loaded      int
}

// policy is one algorithm's selection structure. The Balancer updates the
// shared counters first and then tells the policy what changed, always under
// its mutex.
type policy interface {
	// grow makes room for slot indices up to n-1 (new slots are not live).
	grow(n int)
	// rebuild recomputes everything from slotState, for st.limit.
	rebuild()
	// pick returns an eligible live slot without recording anything. The
	// caller guarantees there is at least one live slot.
	pick() (int, bool)
	// started follows a pick: st.active[slot] and the totals were incremented.
	started(slot int)
	// ended follows st.active[slot]-- on a live slot.
	ended(slot int)
	// added follows a slot becoming live with no call in flight.
	added(slot int)
	// removed follows a slot leaving the live set; its active count is
	// unchanged.
	removed(slot int)
	// reloaded follows SetLoad on a live slot, which had prevActive and
	// prevTotal before.
	reloaded(slot, prevActive int, prevTotal uint64)
}

// New returns a Balancer over n live slots numbered 0..n-1. alg may be any
// name [ParseAlgorithm] accepts; an unknown one is an error wrapping
// [ErrUnknownAlgorithm]. n may be 0 (slots come later with
// [Balancer.Add]); a negative n or Offset is an error wrapping
// [ErrInvalidConfig].
func New(alg Algorithm, n int, opts Options) (*Balancer, error) {
	a, err := ParseAlgorithm(string(alg))
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, fmt.Errorf("%w: slot count %d is negative", ErrInvalidConfig, n)
	}
	if opts.Offset < 0 {
		return nil, fmt.Errorf("%w: offset %d is negative", ErrInvalidConfig, opts.Offset)
	}
	b := &Balancer{alg: a, offset: opts.Offset}
	switch a {
	case RoundRobin:
		start := 0
		if n > 0 {
			start = opts.Offset % n
		}
		b.pol = &roundRobin{roomSet: roomSet{st: &b.st}, cursor: start}
	case Random:
		b.pol = newRandom(&b.st, opts.Seed)
	case LeastActive:
		b.pol = &leastActive{st: &b.st}
	case LeastTotal:
		b.pol = &leastTotal{st: &b.st}
	}
	b.grow(n)
	for i := range n {
		b.st.live[i] = true
	}
	b.st.nLive = n
	b.pol.rebuild()
	return b, nil
}

func (b *Balancer) grow(n int) {
	for len(b.st.live) < n {
		b.st.live = append(b.st.live, false)
		b.st.active = append(b.st.active, 0)
		b.st.total = append(b.st.total, 0)
		b.st.others = append(b.st.others, 0)
		b.st.othersTotal = append(b.st.othersTotal, 0)
	}
	b.pol.grow(n)
}

// Pick selects a live slot whose in-flight count is below limit (limit <= 0
// means no cap) and records the start of a call on it: its active count and
// total go up by one, and so does the Balancer's total_dispatched. It returns
// -1, false, recording nothing, when no live slot has room.
//
// Pick is meant to be called with the same limit every time (a pool's
// per-worker cap); a different limit rebuilds the eligibility structures once,
// in O(n log n).
func (b *Balancer) Pick(limit int) (slot int, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := &b.st
	if st.nLive == 0 {
		return -1, false
	}
	b.setLimit(limit)
	if slot, ok = b.pol.pick(); !ok {
		return -1, false
	}
	b.record(slot)
	return slot, true
}

// Take records the start of a call on a slot the caller chose, as Pick does for the slot it picks, when that slot
// is live and its in-flight count is below limit (limit <= 0: no cap); it reports whether it did. A caller that
// keeps several calls on one slot (calls meant to travel together, a session's calls) picks the first with Pick and
// takes the slot again for the others.
func (b *Balancer) Take(slot, limit int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := &b.st
	if slot < 0 || slot >= len(st.live) || !st.live[slot] {
		return false
	}
	b.setLimit(limit)
	if !st.hasRoom(slot) {
		return false
	}
	b.record(slot)
	return true
}

// setLimit makes the eligibility structures reflect limit.
func (b *Balancer) setLimit(limit int) {
	if limit = max(limit, 0); limit != b.st.limit {
		b.st.limit = limit
		b.pol.rebuild()
	}
}

// record counts the start of a call on slot.
func (b *Balancer) record(slot int) {
	st := &b.st
	st.active[slot]++
	st.total[slot]++
	st.dispatched++
	b.pol.started(slot)
}

// NeedsDone reports whether Done affects which slot Pick(limit) selects. It does only for LeastActive and under a
// cap (limit > 0); otherwise Done keeps just the in-flight counts (Active, LeastActive's stats) and lets Add reuse a
// removed slot's index, so a hot path that needs neither may skip it and spare the lock.
func (b *Balancer) NeedsDone(limit int) bool { return limit > 0 || b.alg == LeastActive }

// Done records that a call on slot ended: its active count goes down by one,
// never below zero. It is accepted for removed slots, whose in-flight calls
// still finish; an index that never existed is ignored.
func (b *Balancer) Done(slot int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := &b.st
	if slot < 0 || slot >= len(st.live) || st.active[slot] == 0 {
		return
	}
	st.active[slot]--
	switch {
	case st.live[slot]:
		b.pol.ended(slot)
	case st.active[slot] == 0:
		st.free++
	}
}

// Add makes a new live slot with no call in flight and returns its index. It
// reuses the lowest removed index whose calls have all ended (so a late Done
// for a lost worker's call is never charged to its replacement), else it
// appends index n. A reused index starts with total_calls 0.
//
// Under LeastTotal the new slot's selection score starts at the lowest score
// among the other live slots with room (among all live slots when none has
// room) rather than at 0, so a replacement worker joins the rotation instead
// of receiving every call until it has caught up.
func (b *Balancer) Add() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := &b.st
	slot := -1
	if st.free > 0 {
		for i, live := range st.live {
			if !live && st.active[i] == 0 {
				slot = i
				break
			}
		}
		st.free--
	} else {
		slot = len(st.live)
		b.grow(slot + 1)
	}
	st.live[slot] = true
	st.total[slot] = 0
	if st.others[slot] > 0 {
		st.loaded--
	}
	st.others[slot], st.othersTotal[slot] = 0, 0
	st.nLive++
	b.pol.added(slot)
	return slot
}

// SetLoad tells the Balancer what other callers have on slot's worker, as the worker last reported it: active calls
// it holds for them now, and total calls it served them. LeastActive counts active with the slot's own calls in
// flight, and LeastTotal total with its own picks, so that callers sharing workers (client.Attach) spread their calls
// by the fleet's load rather than each by its own; Pick's limit still caps the slot's own calls only. RoundRobin and
// Random ignore it. A slot starts with none; Add clears it.
func (b *Balancer) SetLoad(slot, active int, total uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := &b.st
	if slot < 0 || slot >= len(st.live) {
		return
	}
	active = max(active, 0)
	prev, prevTotal := st.others[slot], st.othersTotal[slot]
	if prev == active && prevTotal == total {
		return
	}
	switch {
	case prev == 0 && active > 0:
		st.loaded++
	case prev > 0 && active == 0:
		st.loaded--
	}
	st.others[slot], st.othersTotal[slot] = active, total
	if st.live[slot] {
		b.pol.reloaded(slot, prev, prevTotal)
	}
}

// Remove takes slot out of the live set: it is never picked again. Calls in
// flight on it still end with [Balancer.Done]. Removing a slot that is not
// live is a no-op.
func (b *Balancer) Remove(slot int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := &b.st
	if slot < 0 || slot >= len(st.live) || !st.live[slot] {
		return
	}
	st.live[slot] = false
	st.nLive--
	b.pol.removed(slot)
	if st.active[slot] == 0 {
		st.free++
	}
}

// Len returns the number of live slots.
func (b *Balancer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.st.nLive
}

// Active returns the number of calls in flight on slot (0 for an index that
// never existed).
func (b *Balancer) Active(slot int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if slot < 0 || slot >= len(b.st.active) {
		return 0
	}
	return b.st.active[slot]
}

// Algorithm returns the Balancer's algorithm (canonical name).
func (b *Balancer) Algorithm() Algorithm { return b.alg }

// hasRoom reports whether a live slot's in-flight count is under st.limit.
func (st *slotState) hasRoom(slot int) bool {
	return st.limit == 0 || st.active[slot] < st.limit
}
