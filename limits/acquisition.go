package limits

import (
	"errors"
	"math"
	"sync"
	"time"
)

// Acquisition is what Acquire granted. Report actual usage with Update, then
// Release (typically deferred). Safe for concurrent use.
type Acquisition struct {
	set        *Set // nil: Noop's acquisition
	part       string
	at         int64
	amounts    []float64 // requested, by def index
	used       []float64 // reported usage, by def index
	taken      uint64
	mustUpdate uint64
	updated    uint64
	mu         sync.Mutex
	released   bool
	buf        [2 * inlineLimits]float64
}

func (s *Set) newAcquisition() *Acquisition {
	a := &Acquisition{set: s}
	if n := len(s.defs); n <= inlineLimits {
		a.amounts, a.used = a.buf[:n:n], a.buf[inlineLimits:inlineLimits+n]
	} else {
		b := make([]float64, 2*n)
		a.amounts, a.used = b[:n:n], b[n:]
	}
	return a
}

// Time is when the limits admitted the acquisition, by the set's clock.
func (a *Acquisition) Time() time.Time { return time.Unix(0, a.at) }

// Partition is the partition the acquisition was taken in; "" outside a set
// with per-partition limits.
func (a *Acquisition) Partition() string { return a.part }

// Requested returns the amount taken from the limit key (0 if none).
func (a *Acquisition) Requested(key string) float64 {
	if a.set == nil {
		return 0
	}
	if i, ok := a.set.index[key]; ok {
		return a.amounts[i]
	}
	return 0
}

// Update records the amount actually used per key; the last call wins. Release
// refunds requested-minus-used where the algorithm allows (token bucket, GCRA).
// Usage above the request is logged and counted as the request (the units were
// spent; nothing more is taken). Unknown keys are logged once and ignored.
// Errors: ErrReleased after Release; ErrInvalidAmount for a negative amount or
// an implicit CallLimit usage other than 1 (nothing is recorded then).
func (a *Acquisition) Update(u Usage) error {
	s := a.set
	if s == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.released {
		return ErrReleased
	}
	for k, v := range u {
		i, ok := s.index[k]
		if !ok || a.taken&(1<<i) == 0 {
			continue
		}
		if !(v >= 0) || math.IsInf(v, 1) {
			return amountf("usage must be finite and >= 0, got %g for limit %q", v, k)
		}
		if s.defs[i].kind == kindCall && a.amounts[i] == 1 && v != 1 {
			return amountf("usage %g for limit %q of an implicit acquisition must be 1", v, k)
		}
	}
	for k, v := range u {
		i, ok := s.index[k]
		if !ok || a.taken&(1<<i) == 0 {
			s.warnOnce("update", k, "limits: update of a limit key not acquired; ignored")
			continue
		}
		if v > a.amounts[i] {
			s.warnOnce("overuse", k, "limits: usage exceeds the requested amount; counted as the requested amount")
			v = a.amounts[i]
		}
		a.used[i] = v
		a.updated |= 1 << i
	}
	return nil
}

// Release gives back what the acquisition holds: resource slots, and unused
// units of refunding algorithms. It is idempotent, and it releases everything
// even when a required Update is missing (those limits count as fully used);
// then it also returns a *NotUpdatedError naming the keys. A shared set's
// Release waits at most 10s for the bucket.
func (a *Acquisition) Release() error {
	s := a.set
	if s == nil {
		return nil
	}
	a.mu.Lock()
	if a.released {
		a.mu.Unlock()
		return nil
	}
	a.released = true
	missing := a.mustUpdate &^ a.updated
	a.mu.Unlock()
	var err error
	if a.holdsReturnable() {
		err = s.be.release(a)
	}
	if missing != 0 {
		var keys []string
		for i, d := range s.defs {
			if missing&(1<<i) != 0 {
				keys = append(keys, d.key)
			}
		}
		err = errors.Join(err, &NotUpdatedError{Keys: keys})
	}
	return err
}

// holdsReturnable reports whether release has anything to give back.
func (a *Acquisition) holdsReturnable() bool {
	for i, d := range a.set.defs {
		if a.taken&(1<<i) != 0 && (d.kind == kindResource || a.refund(i) > 0) {
			return true
		}
	}
	return false
}

// refund is what release gives back to rate limit i.
func (a *Acquisition) refund(i int) float64 {
	if a.updated&(1<<i) == 0 || !a.set.defs[i].alg.refunds() {
		return 0
	}
	return a.amounts[i] - a.used[i]
}
