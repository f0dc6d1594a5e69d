package balancer

import (
	"math/rand/v2"
)

// roomSet keeps the set of live slots with room under the current limit, the
// eligibility structure RoundRobin and Random share.
type roomSet struct {
	st   *slotState
	room bitset
}

func (r *roomSet) grow(n int) { r.room.grow(n) }

func (r *roomSet) rebuild() {
	for i, live := range r.st.live {
		if live && r.st.hasRoom(i) {
			r.room.set(i)
		} else {
			r.room.clear(i)
		}
	}
}

func (r *roomSet) started(slot int) {
	if !r.st.hasRoom(slot) {
		r.room.clear(slot)
	}
}

func (r *roomSet) ended(slot int) {
	if r.st.hasRoom(slot) {
		r.room.set(slot)
	}
}

func (r *roomSet) added(slot int)   { r.room.set(slot) }
func (r *roomSet) removed(slot int) { r.room.clear(slot) }

// reloaded: round robin and random do not weigh load.
func (r *roomSet) reloaded(int, int, uint64) {}

// roundRobin walks the slots in circular index order from a cursor, skipping
// slots that are removed or full.
type roundRobin struct {
	roomSet
	cursor int // next index to consider
}

func (r *roundRobin) pick() (int, bool) {
	from := r.cursor
	if from >= r.room.n {
		from = 0 // the cursor passed the last slot
	}
	slot := r.room.nextFrom(from)
	if slot < 0 {
		return -1, false
	}
	r.cursor = slot + 1
	return slot, true
}

// random draws uniformly among live slots with room.
type random struct {
	roomSet
	rng *rand.Rand
}

// randomTries is how many uniform draws over all indices Random makes before
// it counts the eligible slots and draws among them directly. Both ways are
// uniform over eligible slots; the draws are cheaper while most slots have
// room, which is the common case.
const randomTries = 4

func newRandom(st *slotState, seed uint64) *random {
	var src *rand.PCG
	if seed == 0 {
		src = rand.NewPCG(rand.Uint64(), rand.Uint64())
	} else {
		src = rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)
	}
	return &random{roomSet: roomSet{st: st}, rng: rand.New(src)}
}

func (r *random) pick() (int, bool) {
	if r.room.count == 0 {
		return -1, false
	}
	for range randomTries {
		if i := r.rng.IntN(r.room.n); r.room.has(i) {
			return i, true
		}
	}
	return r.room.nth(r.rng.IntN(r.room.count)), true
}
