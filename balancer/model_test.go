package balancer

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"testing"
)

// model is a deliberately naive O(n) re-statement of the selection rules,
// including the FIFO tie-break (since: when a slot entered its current
// count/score bucket), against which the O(1) structures are checked.
type model struct {
	alg    Algorithm
	live   []bool
	active []int
	total  []uint64
	score  []uint64 // LeastTotal selection score
	others []int    // SetLoad's active
	oTotal []uint64 // SetLoad's total
	listed []bool   // LeastTotal: slot is in the eligible structure
	since  []int
	seq    int
	cursor int
	limit  int
}

func newModel(alg Algorithm, n, offset int) *model {
	m := &model{alg: alg}
	for range n {
		m.grow()
	}
	for i := range n {
		m.live[i] = true
	}
	if n > 0 {
		m.cursor = offset % n
	}
	m.rebuild()
	return m
}

func (m *model) grow() {
	m.live = append(m.live, false)
	m.active = append(m.active, 0)
	m.total = append(m.total, 0)
	m.score = append(m.score, 0)
	m.others = append(m.others, 0)
	m.oTotal = append(m.oTotal, 0)
	m.listed = append(m.listed, false)
	m.since = append(m.since, 0)
}

func (m *model) hasRoom(i int) bool  { return m.limit == 0 || m.active[i] < m.limit }
func (m *model) eligible(i int) bool { return m.live[i] && m.hasRoom(i) }
func (m *model) stamp(i int)         { m.seq++; m.since[i] = m.seq }

// rebuild mirrors a limit change: bucket order restarts by (key, index).
func (m *model) rebuild() {
	order := make([]int, 0, len(m.live))
	for i := range m.live {
		m.listed[i] = false
		if m.live[i] && (m.alg != LeastTotal || m.hasRoom(i)) {
			order = append(order, i)
		}
	}
	if m.alg == LeastTotal {
		slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(m.score[a], m.score[b]) })
	}
	for _, i := range order {
		m.listed[i] = true
		m.stamp(i)
	}
}

// want returns the slot the algorithm must pick (-1: none), or for Random
// -2, meaning "any eligible slot".
func (m *model) want() int {
	best := -1
	better := func(i int) bool {
		switch m.alg {
		case LeastActive:
			li, lb := m.active[i]+m.others[i], m.active[best]+m.others[best]
			return li < lb || li == lb && m.since[i] < m.since[best]
		default: // LeastTotal
			return m.score[i] < m.score[best] || m.score[i] == m.score[best] && m.since[i] < m.since[best]
		}
	}
	switch m.alg {
	case RoundRobin:
		n := len(m.live)
		for k := range n {
			if i := (m.cursor + k) % n; m.eligible(i) {
				return i
			}
		}
		return -1
	case Random:
		for i := range m.live {
			if m.eligible(i) {
				return -2
			}
		}
		return -1
	}
	for i := range m.live {
		if m.eligible(i) && (best < 0 || better(i)) {
			best = i
		}
	}
	return best
}

func (m *model) picked(i int) {
	m.cursor = i + 1
	m.taken(i)
}

// taken records a call on i as a pick does, but leaves the round-robin cursor where it was.
func (m *model) taken(i int) {
	m.active[i]++
	m.total[i]++
	switch m.alg {
	case LeastActive:
		m.stamp(i)
	case LeastTotal:
		m.score[i]++
		m.listed[i] = m.hasRoom(i)
		if m.listed[i] {
			m.stamp(i)
		}
	}
}

func (m *model) done(i int) {
	if i < 0 || i >= len(m.live) || m.active[i] == 0 {
		return
	}
	m.active[i]--
	if !m.live[i] {
		return
	}
	switch m.alg {
	case LeastActive:
		m.stamp(i)
	case LeastTotal:
		if !m.listed[i] && m.hasRoom(i) {
			m.listed[i] = true
			m.stamp(i)
		}
	}
}

func (m *model) add() int {
	slot := -1
	for i := range m.live {
		if !m.live[i] && m.active[i] == 0 {
			slot = i
			break
		}
	}
	if slot < 0 {
		slot = len(m.live)
		m.grow()
	}
	// The lowest score among the live slots with room, else among all live ones.
	var low uint64
	found := false
	for _, withRoom := range []bool{true, false} {
		for i := range m.live {
			if i != slot && m.live[i] && (!withRoom || m.listed[i]) && (!found || m.score[i] < low) {
				low, found = m.score[i], true
			}
		}
		if found {
			break
		}
	}
	m.live[slot], m.total[slot], m.score[slot], m.listed[slot] = true, 0, low, true
	m.others[slot], m.oTotal[slot] = 0, 0
	m.stamp(slot)
	return slot
}

func (m *model) setLoad(i, active int, total uint64) {
	if i < 0 || i >= len(m.live) {
		return
	}
	prev, prevTotal := m.others[i], m.oTotal[i]
	m.others[i], m.oTotal[i] = active, total
	if !m.live[i] {
		return
	}
	switch m.alg {
	case LeastActive:
		if active != prev {
			m.stamp(i)
		}
	case LeastTotal:
		if total > prevTotal {
			m.score[i] += total - prevTotal
			if m.listed[i] {
				m.stamp(i)
			}
		}
	}
}

func (m *model) remove(i int) {
	if i >= 0 && i < len(m.live) {
		m.live[i], m.listed[i] = false, false
	}
}

func TestMatchesModel(t *testing.T) {
	t.Parallel()
	for _, alg := range allAlgorithms {
		t.Run(string(alg), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(1, 2))
			const offset = 7
			b := mustNew(t, alg, 5, Options{Offset: offset, Seed: 3})
			m := newModel(alg, 5, offset)
			var inflight []int
			dispatched := uint64(0)
			for op := range 20000 {
				switch r := rng.IntN(100); {
				case r < 8:
					s := rng.IntN(len(m.live)+2) - 1
					want := s >= 0 && s < len(m.live) && m.eligible(s)
					if got := b.Take(s, m.limit); got != want {
						t.Fatalf("op %d: Take(%d, %d) = %t, want %t", op, s, m.limit, got, want)
					}
					if want {
						m.taken(s)
						inflight = append(inflight, s)
						dispatched++
					}
				case r < 50:
					// Mostly one cap, the way a pool uses it, with rare changes.
					limit := m.limit
					if rng.IntN(200) == 0 {
						limit = rng.IntN(4)
						if limit != m.limit {
							m.limit = limit
							m.rebuild()
						}
					}
					want := m.want()
					got, ok := b.Pick(limit)
					switch {
					case want == -1:
						if ok {
							t.Fatalf("op %d: Pick(%d) = %d, want none", op, limit, got)
						}
					case !ok:
						t.Fatalf("op %d: Pick(%d) found nothing, want %d", op, limit, want)
					case want == -2 && !m.eligible(got), want >= 0 && got != want:
						t.Fatalf("op %d: Pick(%d) = %d, want %d (cursor %d, n %d, active %v, live %v)", op, limit, got, want, m.cursor, len(m.live), m.active, m.live)
					}
					if ok {
						m.picked(got)
						inflight = append(inflight, got)
						dispatched++
					}
				case r < 85:
					if len(inflight) > 0 {
						k := rng.IntN(len(inflight))
						s := inflight[k]
						inflight = slices.Delete(inflight, k, k+1)
						b.Done(s)
						m.done(s)
					}
				case r < 88:
					// Done without a call in flight: ignored.
					s := rng.IntN(len(m.live)+2) - 1
					if s < 0 || s >= len(m.live) || m.active[s] == 0 {
						b.Done(s)
					}
				case r < 91:
					s := rng.IntN(len(m.live)+2) - 1
					active, total := rng.IntN(4), uint64(rng.IntN(3))
					if s >= 0 && s < len(m.live) {
						total += m.oTotal[s]
					}
					if rng.IntN(10) == 0 {
						total = 0 // a worker that restarted counts afresh
					}
					b.SetLoad(s, active, total)
					m.setLoad(s, active, total)
				case r < 94:
					if got, want := b.Add(), m.add(); got != want {
						t.Fatalf("op %d: Add() = %d, want %d", op, got, want)
					}
				default:
					s := rng.IntN(len(m.live)+1) - 1
					b.Remove(s)
					m.remove(s)
				}
				if err := checkInvariants(b); err != nil {
					t.Fatalf("op %d: %v", op, err)
				}
				for i := range m.live {
					if b.Active(i) != m.active[i] {
						t.Fatalf("op %d: Active(%d) = %d, want %d", op, i, b.Active(i), m.active[i])
					}
				}
			}
			if got := b.Stats().TotalDispatched; got != dispatched {
				t.Errorf("TotalDispatched = %d, want %d", got, dispatched)
			}
		})
	}
}
