package limits

import (
	"context"
	"sync"
	"time"
)

// memBackend keeps a set's state in this process, under one mutex.
type memBackend struct {
	s        *Set
	epoch    time.Time // clock reading at creation; now is measured from it
	epochNs  int64     // epoch as Unix nanoseconds
	mu       sync.Mutex
	main     memState // the state of an unpartitioned set
	parts    partitions[*memState]
	done     chan struct{}
	isClosed bool
}

// memState is the state of a set, or of one partition of it.
type memState struct {
	rates []rateState // by def index
	held  []float64   // resource slots in use, by def index
	wake  chan struct{}
}

func newMemBackend(s *Set) *memBackend {
	m := &memBackend{s: s, epoch: s.opts.Clock(), done: make(chan struct{})}
	m.epochNs = m.epoch.UnixNano()
	m.main = m.fresh(m.now())
	return m
}

// fresh is the state of limits nobody used, at now.
func (m *memBackend) fresh(now int64) memState {
	st := memState{rates: make([]rateState, len(m.s.defs)), held: make([]float64, len(m.s.defs))}
	for i, d := range m.s.defs {
		if d.kind != kindResource {
			st.rates[i] = m.s.params[i].init(now)
		}
	}
	return st
}

// now reads the clock as Unix nanoseconds, but measured from epoch so that
// time.Now's monotonic reading keeps it from ever going back.
func (m *memBackend) now() int64 {
	return m.epochNs + int64(m.s.opts.Clock().Sub(m.epoch))
}

// state returns the state a's acquisition works on, making a partition's on
// first use; it also forgets a few partitions that are back at rest. Called
// with m.mu held.
func (m *memBackend) state(part string, now int64) *memState {
	if !m.s.partitioned {
		return &m.main
	}
	st, ok := m.parts.get(part)
	if !ok {
		fresh := m.fresh(now)
		st = &fresh
		m.parts.put(part, st)
	}
	m.parts.sweep(st, func(o *memState) bool {
		if !m.atRest(o, now) {
			return false
		}
		if o.wake != nil { // a waiter whose timer has not fired yet: let it look again
			close(o.wake)
		}
		return true
	})
	return st
}

// atRest reports whether st, brought to now, holds nothing and counts
// nothing: it is then the same as a fresh state, so forgetting it changes no
// decision.
func (m *memBackend) atRest(st *memState, now int64) bool {
	for i, d := range m.s.defs {
		if d.kind == kindResource {
			if st.held[i] != 0 {
				return false
			}
			continue
		}
		p := &m.s.params[i]
		p.advance(&st.rates[i], now)
		if !p.atRest(&st.rates[i], now) {
			return false
		}
	}
	return true
}

func (m *memBackend) acquire(ctx context.Context, a *Acquisition, block bool) error {
	m.mu.Lock()
	for {
		if m.isClosed {
			m.mu.Unlock()
			return ErrClosed
		}
		now := m.now()
		st := m.state(a.part, now)
		bl := m.try(st, a, now)
		if bl.wait == 0 {
			a.at = now
			m.mu.Unlock()
			return nil
		}
		if !block {
			m.mu.Unlock()
			return wouldWait(bl.key, bl.wait)
		}
		if st.wake == nil {
			st.wake = make(chan struct{})
		}
		wake := st.wake
		m.mu.Unlock()
		if err := sleep(ctx, wake, m.done, bl.wait); err != nil {
			return waitErr(bl.key, err)
		}
		m.mu.Lock()
	}
}

// try takes a's amounts from st at now if all fit; otherwise it changes
// nothing but time-driven state and says what blocks.
func (m *memBackend) try(st *memState, a *Acquisition, now int64) blocker {
	defs, params := m.s.defs, m.s.params
	var bl blocker
	for i := range defs {
		if a.taken&(1<<i) == 0 {
			continue
		}
		if defs[i].kind == kindResource {
			if st.held[i]+a.amounts[i] > defs[i].capacity {
				bl.add(defs[i].key, untilChange)
			}
			continue
		}
		p, rs := &params[i], &st.rates[i]
		p.advance(rs, now)
		bl.add(defs[i].key, p.wait(rs, now, a.amounts[i]))
	}
	if bl.wait != 0 {
		return bl
	}
	for i := range defs {
		if a.taken&(1<<i) == 0 {
			continue
		}
		if defs[i].kind == kindResource {
			st.held[i] += a.amounts[i]
		} else {
			params[i].take(&st.rates[i], now, a.amounts[i], now)
		}
	}
	return bl
}

func (m *memBackend) release(a *Acquisition) error {
	defs, params := m.s.defs, m.s.params
	m.mu.Lock()
	defer m.mu.Unlock()
	st := &m.main
	if m.s.partitioned {
		var ok bool
		// A partition forgotten at rest held nothing of a's: no slots, and a
		// full bucket that a refund cannot fill further.
		if st, ok = m.parts.get(a.part); !ok {
			return nil
		}
	}
	now := m.now()
	for i := range defs {
		if a.taken&(1<<i) == 0 {
			continue
		}
		if defs[i].kind == kindResource {
			st.held[i] -= a.amounts[i]
		} else if r := a.refund(i); r > 0 {
			params[i].advance(&st.rates[i], now)
			params[i].refund(&st.rates[i], now, r)
		}
	}
	// Wake every waiter of the state: capacity came back.
	if st.wake != nil {
		close(st.wake)
		st.wake = nil
	}
	return nil
}

func (m *memBackend) stats(part string) map[string]Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	st := &m.main
	if m.s.partitioned {
		var ok bool
		if st, ok = m.parts.get(part); !ok {
			fresh := m.fresh(now)
			st = &fresh
		}
	}
	out := make(map[string]Stats, len(m.s.defs))
	for i, d := range m.s.defs {
		if d.kind == kindResource {
			out[d.key] = resourceStats(d, st.held[i])
		} else {
			m.s.params[i].advance(&st.rates[i], now)
			out[d.key] = m.s.params[i].stats(d.key, &st.rates[i], now)
		}
		if m.s.partitioned && part == "" {
			out[d.key].Extra["partitions"] = float64(m.parts.len())
		}
	}
	return out
}

func (m *memBackend) close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.isClosed = true
	close(m.done)
	return nil
}

func resourceStats(d limitDef, inUse float64) Stats {
	return Stats{Key: d.key, Capacity: d.capacity, Available: d.capacity - inUse, Utilization: inUse / d.capacity,
		Extra: map[string]float64{"current_usage": inUse}}
}
