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
	rates    []rateState // by def index
	held     []float64   // resource slots in use, by def index
	wake     chan struct{}
	done     chan struct{}
	isClosed bool
}

func newMemBackend(s *Set) *memBackend {
	m := &memBackend{s: s, epoch: s.opts.Clock(), done: make(chan struct{})}
	m.epochNs = m.epoch.UnixNano()
	now := m.now()
	m.rates = make([]rateState, len(s.defs))
	m.held = make([]float64, len(s.defs))
	for i := range s.defs {
		if s.defs[i].kind != kindResource {
			m.rates[i] = s.params[i].init(now)
		}
	}
	return m
}

// now reads the clock as Unix nanoseconds, but measured from epoch so that
// time.Now's monotonic reading keeps it from ever going back.
func (m *memBackend) now() int64 {
	return m.epochNs + int64(m.s.opts.Clock().Sub(m.epoch))
}

func (m *memBackend) acquire(ctx context.Context, a *Acquisition, block bool) error {
	m.mu.Lock()
	for {
		if m.isClosed {
			m.mu.Unlock()
			return ErrClosed
		}
		now := m.now()
		bl := m.try(a, now)
		if bl.wait == 0 {
			a.at = now
			m.mu.Unlock()
			return nil
		}
		if !block {
			m.mu.Unlock()
			return wouldWait(bl.key, bl.wait)
		}
		if m.wake == nil {
			m.wake = make(chan struct{})
		}
		wake := m.wake
		m.mu.Unlock()
		if err := sleep(ctx, wake, m.done, bl.wait); err != nil {
			return waitErr(bl.key, err)
		}
		m.mu.Lock()
	}
}

// try takes a's amounts at now if all fit; otherwise it changes nothing but
// time-driven state and says what blocks.
func (m *memBackend) try(a *Acquisition, now int64) blocker {
	defs, params := m.s.defs, m.s.params
	var bl blocker
	for i := range defs {
		if a.taken&(1<<i) == 0 {
			continue
		}
		if defs[i].kind == kindResource {
			if m.held[i]+a.amounts[i] > defs[i].capacity {
				bl.add(defs[i].key, untilChange)
			}
			continue
		}
		p, st := &params[i], &m.rates[i]
		p.advance(st, now)
		bl.add(defs[i].key, p.wait(st, now, a.amounts[i]))
	}
	if bl.wait != 0 {
		return bl
	}
	for i := range defs {
		if a.taken&(1<<i) == 0 {
			continue
		}
		if defs[i].kind == kindResource {
			m.held[i] += a.amounts[i]
		} else {
			params[i].take(&m.rates[i], now, a.amounts[i], now)
		}
	}
	return bl
}

func (m *memBackend) release(a *Acquisition) error {
	defs, params := m.s.defs, m.s.params
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for i := range defs {
		if a.taken&(1<<i) == 0 {
			continue
		}
		if defs[i].kind == kindResource {
			m.held[i] -= a.amounts[i]
		} else if r := a.refund(i); r > 0 {
			params[i].advance(&m.rates[i], now)
			params[i].refund(&m.rates[i], now, r)
		}
	}
	m.broadcast()
	return nil
}

// broadcast wakes every waiter: capacity came back.
func (m *memBackend) broadcast() {
	if m.wake != nil {
		close(m.wake)
		m.wake = nil
	}
}

func (m *memBackend) stats() map[string]Stats {
	defs, params := m.s.defs, m.s.params
	out := make(map[string]Stats, len(defs))
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for i, d := range defs {
		if d.kind == kindResource {
			out[d.key] = resourceStats(d, m.held[i])
			continue
		}
		params[i].advance(&m.rates[i], now)
		out[d.key] = params[i].stats(d.key, &m.rates[i], now)
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
