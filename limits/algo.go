package limits

import (
	"math"
	"slices"
	"time"
)

// The rate algorithms are pure functions of (parameters, state, now): no clock,
// no lock, no I/O. The in-memory backend applies them under a mutex with its
// monotonic clock; the KV backend applies the same functions to the state it
// read from the bucket and writes the result back with a compare-and-set.
// Times are nanoseconds; in the KV backend they are Unix nanoseconds, so that
// every process reads them alike.
//
// An acquisition over several limits is all-or-nothing: the caller advances
// every state to now, asks each for its wait, and takes from all only when every
// wait is zero.

// slidingSlots bounds the sliding-window log: above this capacity, admission
// times are rounded up to a multiple of Window/slidingSlots, so the log keeps at
// most about slidingSlots entries whatever the capacity. Rounding up makes an
// admission expire later than its true time: the window can under-admit for up
// to Window/slidingSlots, never over-admit. At or below this capacity every
// admission keeps its exact time (the log never holds more than Capacity
// entries then).
const slidingSlots = 128

// gcraSlack absorbs float rounding in GCRA's comparison with its tolerance
// (a millionth of a nanosecond), so that exactly Capacity units fit in a burst.
const gcraSlack = 1e-6

// rateParams are the constants of one rate limit.
type rateParams struct {
	alg      Algorithm
	capacity float64
	window   int64 // ns
	// margin delays the recorded time of windowed admissions (sliding and fixed
	// window) by the clock-skew bound, so that a process whose clock is behind
	// another's by up to margin still sees them as recent. Zero in memory.
	margin int64
	// quantum: sliding-window admission times are rounded up to a multiple of it.
	quantum int64
}

func newRateParams(d limitDef, margin time.Duration) rateParams {
	p := rateParams{alg: d.alg, capacity: d.capacity, window: int64(d.window), margin: int64(margin), quantum: 1}
	if d.alg == SlidingWindow && d.capacity > slidingSlots {
		p.quantum = max(1, (p.window+slidingSlots-1)/slidingSlots)
	}
	return p
}

// rateState is the state of one rate limit. One struct serves every algorithm
// so that a set's whole state encodes as one value; each algorithm uses some of
// the fields.
type rateState struct {
	// Level: token bucket tokens left; leaky bucket queue length; window
	// algorithms units counted in the window.
	Level float64 `msgpack:"l,omitempty"`
	// Mark: token bucket last refill; leaky bucket time of the last drip; fixed
	// window start; GCRA theoretical arrival time (whole nanoseconds).
	Mark int64 `msgpack:"m,omitempty"`
	// Frac: fraction of a nanosecond added to Mark (leaky bucket, GCRA), so that
	// emission intervals that are not whole nanoseconds do not drift.
	Frac float64 `msgpack:"f,omitempty"`
	// Log: sliding window admissions, sorted by time.
	Log slotLog `msgpack:"s,omitempty"`
	// Out: units of a bucket algorithm (token, leaky, GCRA) leased to
	// reservoirs in Lease mode and not yet settled. They were taken already, but
	// the bucket must not refill over them while they can still be used: refill
	// stops at capacity minus Out (so bucket plus reservoirs never hold more than
	// capacity). The KV backend derives it from the live leases before each use;
	// it is never stored. Zero in memory.
	Out float64 `msgpack:"-"`
}

// slot is N units admitted (or leased) at At, counted until At+Window.
type slot struct {
	At int64
	N  float64
}

// slotLog is a sliding window's admissions, sorted by time.
type slotLog []slot

func (st rateState) clone() rateState {
	st.Log = slices.Clone(st.Log)
	return st
}

// init is the state of a fresh limit at now: token bucket full, leaky bucket
// empty, GCRA with no debt, fixed window starting now.
func (p *rateParams) init(now int64) rateState {
	switch p.alg {
	case TokenBucket:
		return rateState{Level: p.capacity, Mark: now}
	case FixedWindow:
		return rateState{Mark: now + p.margin}
	case SlidingWindow:
		return rateState{}
	}
	return rateState{Mark: now}
}

// interval is the time one unit takes to refill or drain, in nanoseconds.
func (p *rateParams) interval() float64 { return float64(p.window) / p.capacity }

// advance brings st to now: refill, drain, expire, roll the window. A now
// earlier than the state's own time (another process's clock was ahead)
// changes nothing: state time never goes back.
func (p *rateParams) advance(st *rateState, now int64) {
	switch p.alg {
	case TokenBucket:
		if now > st.Mark {
			st.Level = max(st.Level, min(p.capacity-st.Out, st.Level+float64(now-st.Mark)/p.interval()))
			st.Mark = now
		}
	case LeakyBucket:
		if now <= st.Mark {
			return
		}
		free := st.Level - st.Out // leased units stay in the queue until settled
		if free <= 0 {
			st.Mark, st.Frac = now, 0
			return
		}
		iv := p.interval()
		drained := math.Floor((float64(now-st.Mark) - st.Frac) / iv)
		switch {
		case drained >= free:
			st.Level, st.Mark, st.Frac = st.Out, now, 0
		case drained > 0:
			st.Level -= drained
			adv := drained*iv + st.Frac
			whole := math.Floor(adv)
			st.Mark += int64(whole)
			st.Frac = adv - whole
		}
	case SlidingWindow:
		cut := now - p.window
		i := 0
		for i < len(st.Log) && st.Log[i].At <= cut {
			st.Level -= st.Log[i].N
			i++
		}
		switch {
		case i == len(st.Log):
			st.Log, st.Level = st.Log[:0], 0
		case i > 0:
			st.Log = st.Log[i:]
		}
	case FixedWindow:
		if now >= st.Mark+p.window {
			st.Mark, st.Level = now+p.margin, 0
		}
	case GCRA:
		// The arrival time never lags now, nor the emission of leased units:
		// units used from a lease settled later still count as sent by now.
		p.setTAT(st, now, p.gcraDebt(st, now))
	}
}

// wait returns 0 when n units fit now (st advanced to now), else how long until
// they would fit if nothing else changed: a hint for sleeping, always > 0;
// untilChange when only the settling of leased units can make room.
func (p *rateParams) wait(st *rateState, now int64, n float64) int64 {
	switch p.alg {
	case TokenBucket:
		if st.Level >= n {
			return 0
		}
		if n > p.capacity-st.Out {
			return untilChange
		}
		return ceilNanos((n - st.Level) * p.interval())
	case LeakyBucket:
		excess := st.Level + n - p.capacity
		if excess <= 0 {
			return 0
		}
		if math.Ceil(excess) > st.Level-st.Out {
			return untilChange
		}
		return ceilNanos(float64(st.Mark-now) + st.Frac + math.Ceil(excess)*p.interval())
	case SlidingWindow:
		over := st.Level + n - p.capacity
		if over <= 0 {
			return 0
		}
		for _, s := range st.Log {
			if over -= s.N; over <= 0 {
				return max(1, s.At+p.window-now)
			}
		}
		return max(1, p.window) // n > capacity: callers reject that before asking
	case FixedWindow:
		if st.Level+n <= p.capacity {
			return 0
		}
		return max(1, st.Mark+p.window-now)
	case GCRA:
		over := p.gcraDebt(st, now) + n*p.interval() - float64(p.window)
		if over <= gcraSlack {
			return 0
		}
		if (st.Out+n)*p.interval()-float64(p.window) > gcraSlack {
			return untilChange
		}
		return ceilNanos(over)
	}
	panic("limits: unknown algorithm " + string(p.alg))
}

// gcraDebt is how far the theoretical arrival time is ahead of now; never less
// than the emission time of the leased units.
func (p *rateParams) gcraDebt(st *rateState, now int64) float64 {
	return max(st.Out*p.interval(), float64(st.Mark-now)+st.Frac)
}

// take consumes n units at now (after wait returned 0). Windowed admissions are
// recorded as made at `at` (now, or the end of a lease) plus the skew margin.
func (p *rateParams) take(st *rateState, now int64, n float64, at int64) {
	switch p.alg {
	case TokenBucket:
		st.Level -= n
	case LeakyBucket, FixedWindow:
		st.Level += n
	case SlidingWindow:
		p.record(st, at+p.margin, n)
	case GCRA:
		p.setTAT(st, now, p.gcraDebt(st, now)+n*p.interval())
	}
}

// setTAT sets the theoretical arrival time to now+debt.
func (p *rateParams) setTAT(st *rateState, now int64, debt float64) {
	whole := math.Floor(debt)
	st.Mark, st.Frac = now+int64(whole), debt-whole
}

// record adds n units at time at to the sliding log, rounding at up to the
// quantum (later expiry: conservative) and merging equal times.
func (p *rateParams) record(st *rateState, at int64, n float64) int64 {
	if q := p.quantum; q > 1 {
		at = (at + q - 1) / q * q
	}
	st.Level += n
	i := len(st.Log)
	for i > 0 && st.Log[i-1].At > at {
		i--
	}
	if i > 0 && st.Log[i-1].At == at {
		st.Log[i-1].N += n
	} else {
		st.Log = slices.Insert(st.Log, i, slot{At: at, N: n})
	}
	return at
}

// refund gives back n unused units where the algorithm allows it (token
// bucket, GCRA); the others keep what was taken.
func (p *rateParams) refund(st *rateState, now int64, n float64) {
	switch p.alg {
	case TokenBucket:
		st.Level = max(st.Level, min(p.capacity-st.Out, st.Level+n))
	case GCRA:
		p.setTAT(st, now, max(st.Out*p.interval(), p.gcraDebt(st, now)-n*p.interval()))
	}
}

// atRest reports whether st (advanced to now) counts nothing, so that it
// decides as init(now) would: forgetting it changes no admission. A fixed
// window that is open but empty is at rest too: a fresh one opens at its
// first use, which admits no more in any span than the open one would.
func (p *rateParams) atRest(st *rateState, now int64) bool {
	if st.Out != 0 {
		return false
	}
	switch p.alg {
	case TokenBucket:
		return st.Level >= p.capacity
	case GCRA:
		return p.gcraDebt(st, now) <= 0
	case SlidingWindow:
		return len(st.Log) == 0
	}
	return st.Level == 0
}

// available is how many units fit now (st advanced to now).
func (p *rateParams) available(st *rateState, now int64) float64 {
	switch p.alg {
	case TokenBucket:
		return max(0, st.Level)
	case GCRA:
		return max(0, (float64(p.window)-p.gcraDebt(st, now))/p.interval())
	}
	return max(0, p.capacity-st.Level)
}

// stats reports st (advanced to now) with concurry's keys in Extra.
func (p *rateParams) stats(key string, st *rateState, now int64) Stats {
	avail := p.available(st, now)
	windowSec := float64(p.window) / 1e9
	perSecond := p.capacity / windowSec
	s := Stats{Key: key, Algorithm: p.alg, Capacity: p.capacity, Available: avail,
		Utilization: (p.capacity - avail) / p.capacity, Extra: map[string]float64{"window": windowSec}}
	switch p.alg {
	case TokenBucket:
		s.Extra["available_tokens"], s.Extra["max_rate"] = avail, perSecond
	case LeakyBucket:
		s.Extra["queue_size"], s.Extra["max_rate"] = st.Level, perSecond
	case SlidingWindow, FixedWindow:
		s.Extra["current_requests"], s.Extra["max_rate"], s.Extra["window_seconds"] = st.Level, p.capacity, windowSec
	case GCRA:
		s.Extra["available_tokens"], s.Extra["max_rate"], s.Extra["emission_interval"] = avail, perSecond, p.interval()/1e9
	}
	return s
}

func ceilNanos(x float64) int64 {
	return max(1, int64(math.Ceil(x)))
}

// giveBack returns n units of a lease that were never used, after the lease's
// units left st.Out. at is what take recorded: the sliding-window slot, or the
// fixed window's start. Buckets take them back (for a leaky bucket: out of its
// queue, which is sound because the queue could not drain leased units while
// they were out); the windows uncount them if their slot or window is still
// there.
func (p *rateParams) giveBack(st *rateState, now int64, n float64, at int64) {
	switch p.alg {
	case TokenBucket, GCRA:
		p.refund(st, now, n)
	case LeakyBucket:
		st.Level = max(st.Out, st.Level-n)
	case FixedWindow:
		if st.Mark == at {
			st.Level = max(0, st.Level-n)
		}
	case SlidingWindow:
		for j := range st.Log {
			if st.Log[j].At != at {
				continue
			}
			n = min(n, st.Log[j].N)
			st.Log[j].N -= n
			st.Level -= n
			if st.Log[j].N <= 0 {
				st.Log = slices.Delete(st.Log, j, j+1)
			}
			if len(st.Log) == 0 {
				st.Level = 0
			}
			return
		}
	}
}
