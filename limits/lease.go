package limits

import (
	"context"
	"errors"
	"math"
	"math/bits"
	"sync"
	"time"
)

// reservoir is Lease mode's local stock of units taken from a shared set.
//
// A batch is taken in one compare-and-set and recorded in the shared state as
// if all of it were used, in a way that keeps the fleet-wide promise:
//   - window algorithms count the batch at the END of its validity (sliding
//     window: a slot at lease end + MaxSkew; fixed window: the batch is only
//     valid until MaxSkew before its window ends), so every local admission is
//     covered by a shared record at least as late as itself;
//   - bucket algorithms (token, leaky, GCRA) take the batch at once and also
//     record it in a lease entry of the shared state (sharedState.Leases): the
//     bucket does not refill over leased units, so the shared bucket plus every
//     reservoir never hold more than capacity. The entry expires by itself if
//     this process dies.
//
// Local admissions are served from batches only while they are valid. When a
// batch expires, its lease entry is settled and its unused units go back
// (giveBack), in one more compare-and-set.
type reservoir struct {
	b    *kvBackend
	size []float64 // batch size by def index
	ttl  int64
	kick chan struct{} // batches or refunds were added: recompute the next deadline

	mu        sync.Mutex
	batches   [][]batch     // by def index
	pending   []float64     // refunds that fit no batch, by def index: for the shared state
	unsettled []leftover    // taken for a give-back that failed: retried with the next one
	fetching  chan struct{} // non-nil while a caller takes a batch for the others; closed when done
}

type batch struct {
	left    float64
	size    float64 // bucket algorithms: units in the lease entry, settled at expiry
	expires int64   // by the set's clock; unusable from then on
	at      int64   // sliding window slot, or fixed window start
}

func newReservoir(b *kvBackend) *reservoir {
	o := b.s.opts
	r := &reservoir{b: b, ttl: int64(o.LeaseTTL), kick: make(chan struct{}, 1),
		size: make([]float64, len(b.s.defs)), batches: make([][]batch, len(b.s.defs)), pending: make([]float64, len(b.s.defs))}
	for i, d := range b.s.defs {
		if d.kind == kindResource {
			continue
		}
		n := max(1, d.capacity/20)
		if o.LeaseSize > 0 {
			n = o.LeaseSize
		}
		n = min(n, d.capacity)
		if d.alg.wholeUnits() {
			n = max(1, math.Floor(n))
		}
		r.size[i] = n
	}
	return r
}

func (r *reservoir) acquire(ctx context.Context, a *Acquisition, block bool) error {
	resources := false
	for i, d := range r.b.s.defs {
		resources = resources || (a.taken&(1<<i) != 0 && d.kind == kindResource)
	}
	mine := false
	for !resources {
		r.mu.Lock()
		now := r.b.now()
		if r.takeLocal(a, now) {
			r.mu.Unlock()
			a.at = now
			return nil
		}
		ch := r.fetching
		if ch == nil || !block {
			// Take a batch ourselves. Blocking callers take turns, so that the
			// others wait for that batch instead of each taking one.
			if block {
				r.fetching, mine = make(chan struct{}), true
			}
			r.mu.Unlock()
			break
		}
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return waitErr(r.b.s.defs[bits.TrailingZeros64(a.taken)].key, ctx.Err())
		case <-r.b.done:
			return ErrClosed
		}
	}
	err := r.fetch(ctx, a, block)
	if mine {
		r.mu.Lock()
		close(r.fetching)
		r.fetching = nil
		r.mu.Unlock()
	}
	return err
}

// takeLocal serves a entirely from valid batches, or takes nothing.
func (r *reservoir) takeLocal(a *Acquisition, now int64) bool {
	for i := range a.amounts {
		if a.taken&(1<<i) != 0 && r.localLocked(i, now) < a.amounts[i] {
			return false
		}
	}
	for i := range a.amounts {
		if a.taken&(1<<i) == 0 {
			continue
		}
		need := a.amounts[i]
		bs := r.batches[i]
		for j := range bs {
			if bs[j].expires <= now || bs[j].left == 0 {
				continue
			}
			n := min(need, bs[j].left)
			bs[j].left -= n
			if need -= n; need == 0 {
				break
			}
		}
	}
	return true
}

// local is what limit i's valid batches hold.
func (r *reservoir) local(i int, now int64) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.localLocked(i, now)
}

func (r *reservoir) localLocked(i int, now int64) float64 {
	var n float64
	for _, bt := range r.batches[i] {
		if bt.expires > now {
			n += bt.left
		}
	}
	return n
}

// fetch takes a's amounts from the shared state together with a new batch for
// each rate limit a names, as large as the batch size and what is available
// allow. Resources are taken exactly, as in Exact mode.
func (r *reservoir) fetch(ctx context.Context, a *Acquisition, block bool) error {
	b := r.b
	n := len(b.s.defs)
	got, at, expires := make([]float64, n), make([]int64, n), make([]int64, n)
	mode := txTry
	if block {
		mode = txWait
	}
	now, err := b.main.update(ctx, mode, func(st *sharedState, now int64, _ bool) (blocker, bool) {
		pruned := b.settle(st, now)
		if b.hasRes { // as in Exact mode (planBatch)
			trimHolding(st.Holders, b.holder, b.main.holding())
		}
		if bl := b.check(st, now, a); bl.wait != 0 {
			return bl, pruned
		}
		for i, d := range b.s.defs {
			if a.taken&(1<<i) == 0 || d.kind == kindResource {
				continue
			}
			p, rs := &b.s.params[i], &st.Rates[i]
			got[i], expires[i] = r.batchSize(i, rs, now, a.amounts[i]), now+r.ttl
			switch p.alg {
			case SlidingWindow:
				at[i] = p.record(rs, expires[i]+p.margin, got[i])
			case FixedWindow:
				at[i] = rs.Mark
				if end := rs.Mark + p.window - p.margin; end < expires[i] {
					expires[i] = end
				}
				if expires[i] <= now {
					got[i] = a.amounts[i]
				}
				p.take(rs, now, got[i], now)
			default:
				p.take(rs, now, got[i], now)
				addHolding(&st.Leases, b.holder, n, i, got[i], expires[i])
			}
		}
		b.takeResources(st, now, a)
		return blocker{}, true
	}, func(now int64) {
		b.main.holdResources(a, 1)
		r.mu.Lock()
		for i, d := range b.s.defs {
			if a.taken&(1<<i) == 0 || d.kind == kindResource {
				continue
			}
			bt := batch{left: got[i] - a.amounts[i], expires: expires[i], at: at[i]}
			if d.alg.bucket() {
				bt.size = got[i]
			}
			if bt.size > 0 || (bt.left > 0 && bt.expires > now) {
				r.batches[i] = append(r.batches[i], bt)
			}
		}
		r.mu.Unlock()
		r.poke()
	})
	a.at = now
	return err
}

// batchSize is how much to take for a request of want from a limit with
// state rs: the batch size if available, never less than want.
func (r *reservoir) batchSize(i int, rs *rateState, now int64, want float64) float64 {
	p := &r.b.s.params[i]
	avail := p.available(rs, now)
	if p.alg.wholeUnits() {
		avail = math.Floor(avail)
	}
	return max(want, min(r.size[i], avail))
}

func (r *reservoir) poke() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// refund puts a's unused units of refunding algorithms back into valid
// batches, up to each batch's size (so that the reservoir never holds more
// than its lease entries cover); the rest goes to the shared state with the
// next give-back, which is due at once.
func (r *reservoir) refund(a *Acquisition) {
	now := r.b.now()
	added := false
	r.mu.Lock()
	for i := range a.amounts {
		u := a.refund(i)
		if a.taken&(1<<i) == 0 || u <= 0 {
			continue
		}
		for j := range r.batches[i] {
			bt := &r.batches[i][j]
			if bt.expires > now && bt.left < bt.size {
				n := min(u, bt.size-bt.left)
				bt.left += n
				u -= n
			}
		}
		if u > 0 {
			r.pending[i] += u
			added = true
		}
	}
	r.mu.Unlock()
	if added {
		r.poke()
	}
}

// loop gives back expired batches' unused units.
func (r *reservoir) loop() {
	b := r.b
	defer b.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		r.mu.Lock()
		next, due := int64(math.MaxInt64), len(r.unsettled) > 0
		for i, bs := range r.batches {
			for _, bt := range bs {
				next = min(next, bt.expires)
			}
			due = due || r.pending[i] > 0
		}
		r.mu.Unlock()
		d := time.Hour
		switch {
		case due:
			d = 0
		case next != math.MaxInt64:
			d = time.Duration(max(0, next-b.now()))
		}
		t.Reset(d)
		select {
		case <-b.bgCtx.Done():
			return
		case <-r.kick:
			continue
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(b.bgCtx, releaseTimeout)
		if err := r.giveBack(ctx, r.take(b.now())); err != nil && b.bgCtx.Err() == nil {
			b.s.opts.Logger.Error("limits: giving back leased units", "set", b.name, "err", err)
			select { // before retrying: the bucket may be unreachable for a while
			case <-b.bgCtx.Done():
			case <-time.After(time.Second):
			}
		}
		cancel()
	}
}

// returnAll gives back every batch, valid or not: the set is closing.
func (r *reservoir) returnAll() error {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	return r.giveBack(ctx, r.take(math.MaxInt64))
}

type leftover struct {
	i      int
	left   float64 // unused units
	size   float64 // units to settle in the lease entry
	at     int64
	refund bool // left is a refund (Acquisition.Update), not a batch's rest
}

// take removes the batches expired at now, the pending refunds and what a
// failed give-back left, and returns what they leave to settle.
func (r *reservoir) take(now int64) []leftover {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.unsettled
	r.unsettled = nil
	for i, bs := range r.batches {
		keep := bs[:0]
		for _, bt := range bs {
			switch {
			case bt.expires <= now:
				if bt.left > 0 || bt.size > 0 {
					out = append(out, leftover{i: i, left: bt.left, size: bt.size, at: bt.at})
				}
			case bt.left > 0 || bt.size > 0:
				keep = append(keep, bt)
			}
		}
		r.batches[i] = keep
		if r.pending[i] > 0 {
			out = append(out, leftover{i: i, left: r.pending[i], refund: true})
			r.pending[i] = 0
		}
	}
	return out
}

// giveBack settles ls in the shared state: lease entries shrink by the
// batches' sizes, unused units go back. Refill up to now still counts the
// leased units as out; what is given back counts from now. If it fails, ls
// waits for the next give-back, unless a write of it may have been applied:
// giving back twice would over-admit, so ls is dropped then (its units
// count as used, and its lease entries expire by themselves).
func (r *reservoir) giveBack(ctx context.Context, ls []leftover) (err error) {
	if len(ls) == 0 {
		return nil
	}
	defer func() {
		if err != nil && !errors.Is(err, errMaybeWritten) {
			r.mu.Lock()
			r.unsettled = append(r.unsettled, ls...)
			r.mu.Unlock()
		}
	}()
	b := r.b
	params := b.s.params
	_, err = b.main.update(ctx, txBackground, func(st *sharedState, now int64, redo bool) (blocker, bool) {
		if redo {
			return blocker{}, false
		}
		b.settle(st, now)
		for _, l := range ls {
			if l.size > 0 {
				subHolding(st.Leases, b.holder, l.i, l.size)
			}
		}
		b.setOut(st)
		for _, l := range ls {
			if l.refund {
				params[l.i].refund(&st.Rates[l.i], now, l.left)
			} else {
				params[l.i].giveBack(&st.Rates[l.i], now, l.left, l.at)
			}
		}
		return blocker{}, true
	}, nil)
	return err
}
