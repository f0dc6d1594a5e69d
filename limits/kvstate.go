package limits

import (
	"fmt"
	"math"
	"slices"

	"github.com/vmihailenco/msgpack/v5"
)

// The value of a shared set's key (or of one partition's key) is the whole
// state of its limits: every rate limit's state and every holder's lease.
// These functions compute on it, purely: the transactions of kvtx.go read it,
// run them on a copy and write the result back with a compare-and-set.

// snapshot is one revision of the key.
type snapshot struct {
	rev     uint64
	raw     []byte
	st      *sharedState // decoded lazily, then immutable
	missing bool         // the key was deleted or purged
}

// sharedState is the value of a shared set's key.
type sharedState struct {
	// Sig is the set's definition; every process must agree on it.
	Sig string `msgpack:"g"`
	// Rates holds each rate or call limit's state, by def index.
	Rates []rateState `msgpack:"r"`
	// Holders maps each holder of resource slots to its lease.
	Holders map[string]holder `msgpack:"h,omitempty"`
	// Leases maps each holder to the units of bucket algorithms its Lease-mode
	// reservoir holds (rateState.Out). An entry ends when its holder settles it
	// or, if the holder died, when it expires.
	Leases map[string]holder `msgpack:"l,omitempty"`
}

// holder is what one set holds of the shared state until Expires: resource
// slots, or leased units.
type holder struct {
	_msgpack struct{}  `msgpack:",as_array"`
	Expires  int64     // Unix ns, by the holder's clock; others add MaxSkew
	Slots    []float64 // by def index
}

// EncodeMsgpack writes the log compactly, since it is most of a shared set's
// state: an array of times and counts, each time as the difference from the
// previous one and each number in the smallest msgpack form that holds it
// exactly (a count of whole units is an integer).
func (l slotLog) EncodeMsgpack(e *msgpack.Encoder) error {
	if err := e.EncodeArrayLen(2 * len(l)); err != nil {
		return err
	}
	prev := int64(0)
	for _, s := range l {
		if err := e.EncodeInt(s.At - prev); err != nil {
			return err
		}
		prev = s.At
		var err error
		if s.N == math.Trunc(s.N) && math.Abs(s.N) < 1<<53 {
			err = e.EncodeInt(int64(s.N))
		} else {
			err = e.EncodeFloat64(s.N)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// DecodeMsgpack reads what EncodeMsgpack wrote.
func (l *slotLog) DecodeMsgpack(d *msgpack.Decoder) error {
	n, err := d.DecodeArrayLen()
	if err != nil || n <= 0 {
		*l = nil
		return err
	}
	if n%2 != 0 {
		return fmt.Errorf("limits: sliding log of odd length %d", n)
	}
	out := make(slotLog, n/2)
	prev := int64(0)
	for i := range out {
		delta, err := d.DecodeInt64()
		if err != nil {
			return err
		}
		cnt, err := d.DecodeFloat64()
		if err != nil {
			return err
		}
		prev += delta
		out[i] = slot{At: prev, N: cnt}
	}
	*l = out
	return nil
}

func (st *sharedState) clone() *sharedState {
	c := &sharedState{Sig: st.Sig, Rates: make([]rateState, len(st.Rates)), Holders: cloneHolders(st.Holders), Leases: cloneHolders(st.Leases)}
	for i := range st.Rates {
		c.Rates[i] = st.Rates[i].clone()
	}
	return c
}

func cloneHolders(m map[string]holder) map[string]holder {
	if len(m) == 0 {
		return nil
	}
	c := make(map[string]holder, len(m))
	for k, h := range m {
		h.Slots = slices.Clone(h.Slots)
		c[k] = h
	}
	return c
}

// addHolding adds n to slot i of key's entry, creating it; the entry lives at
// least until expires.
func addHolding(m *map[string]holder, key string, slots int, i int, n float64, expires int64) {
	if *m == nil {
		*m = make(map[string]holder)
	}
	h := (*m)[key]
	if len(h.Slots) < slots {
		h.Slots = append(h.Slots, make([]float64, slots-len(h.Slots))...)
	}
	h.Slots[i] += n
	h.Expires = max(h.Expires, expires)
	(*m)[key] = h
}

// subHolding removes n from slot i of key's entry, deleting an entry left
// empty.
func subHolding(m map[string]holder, key string, i int, n float64) {
	h, ok := m[key]
	if !ok || i >= len(h.Slots) {
		return
	}
	h.Slots[i] = max(0, h.Slots[i]-n)
	putHolding(m, key, h)
}

// trimHolding lowers key's resource slots to at most keep (by def index):
// what the holder still holds. Unlike subtracting what was released, it can
// be applied twice, which a write whose outcome is unknown may be.
func trimHolding(m map[string]holder, key string, keep []float64) {
	h, ok := m[key]
	if !ok {
		return
	}
	for i := range h.Slots {
		if i < len(keep) {
			h.Slots[i] = min(h.Slots[i], keep[i])
		}
	}
	putHolding(m, key, h)
}

// putHolding stores h as key's entry, or deletes the entry if h holds nothing.
func putHolding(m map[string]holder, key string, h holder) {
	if slices.ContainsFunc(h.Slots, func(v float64) bool { return v > 0 }) {
		m[key] = h
	} else {
		delete(m, key)
	}
}

// settle brings st to now: every rate limit advanced (refill, expiry), and
// resource and unit leases expired by now dropped (MaxSkew late, so that a
// holder whose clock is behind ours is not cut short). Rates advance before
// expired unit leases are dropped: a dead holder's leased units count as used
// at the moment they expire, not returned.
// It reports whether it dropped anything.
func (b *kvBackend) settle(st *sharedState, now int64) (pruned bool) {
	b.setOut(st)
	for i, d := range b.s.defs {
		if d.kind != kindResource {
			b.s.params[i].advance(&st.Rates[i], now)
		}
	}
	for _, m := range []map[string]holder{st.Holders, st.Leases} {
		for k, h := range m {
			if h.Expires+b.margin <= now {
				delete(m, k)
				pruned = true
			}
		}
	}
	b.setOut(st)
	return pruned
}

func (b *kvBackend) setOut(st *sharedState) {
	for i, d := range b.s.defs {
		if d.kind != kindResource {
			st.Rates[i].Out = held(st.Leases, i)
		}
	}
}

// held is how much of slot i the live entries of m hold.
func held(m map[string]holder, i int) float64 {
	var n float64
	for _, h := range m {
		if i < len(h.Slots) {
			n += h.Slots[i]
		}
	}
	return n
}

// expiryHint is how long until an entry of m holding slot i (other than
// ours, when skipOwn) could be judged dead: when to look again if nobody
// gives anything back.
func (b *kvBackend) expiryHint(m map[string]holder, i int, now int64, skipOwn bool) int64 {
	w := int64(untilChange)
	for k, h := range m {
		if !(skipOwn && k == b.holder) && i < len(h.Slots) && h.Slots[i] > 0 {
			w = min(w, max(1, h.Expires+b.margin-now))
		}
	}
	return w
}

// check reports what blocks a's amounts in st at now (st settled).
func (b *kvBackend) check(st *sharedState, now int64, a *Acquisition) blocker {
	var bl blocker
	for i, d := range b.s.defs {
		if a.taken&(1<<i) == 0 {
			continue
		}
		if d.kind == kindResource {
			if held(st.Holders, i)+a.amounts[i] > d.capacity {
				bl.add(d.key, b.expiryHint(st.Holders, i, now, true))
			}
			continue
		}
		w := b.s.params[i].wait(&st.Rates[i], now, a.amounts[i])
		if w == untilChange { // only leased units settling make room
			w = b.expiryHint(st.Leases, i, now, false)
		}
		bl.add(d.key, w)
	}
	return bl
}

// takeResources adds a's resource slots to our lease in st and renews it.
func (b *kvBackend) takeResources(st *sharedState, now int64, a *Acquisition) {
	for i, d := range b.s.defs {
		if a.taken&(1<<i) != 0 && d.kind == kindResource {
			addHolding(&st.Holders, b.holder, len(b.s.defs), i, a.amounts[i], now+b.resTTL)
		}
	}
}

// take takes a's amounts from st at now (after check found none blocked).
func (b *kvBackend) take(st *sharedState, now int64, a *Acquisition) {
	for i, d := range b.s.defs {
		if a.taken&(1<<i) != 0 && d.kind != kindResource {
			b.s.params[i].take(&st.Rates[i], now, a.amounts[i], now)
		}
	}
	b.takeResources(st, now, a)
}
