package limits

import (
	"context"
	"math"
	"sync"
	"time"
)

// reservoir is Lease mode's local stock of units taken from a shared set.
//
// A batch is taken in one compare-and-set and recorded in the shared state as
// if all of it were used: token bucket, GCRA and leaky bucket units are taken at
// once; window algorithms count the batch at the END of its validity (sliding
// window: a slot at lease end + MaxSkew; fixed window: the batch is only valid
// until MaxSkew before its window ends). Local admissions are served from
// batches only while they are valid, so every admission is covered by a
// shared record at least as late as itself: the fleet-wide count can only be
// overstated, never understated. When a batch expires, its unused units go
// back (giveBack) in one more compare-and-set.
type reservoir struct {
	b    *kvBackend
	size []float64 // batch size by def index
	ttl  int64
	kick chan struct{} // a batch was added: recompute the next expiry

	mu       sync.Mutex
	batches  [][]batch     // by def index
	fetching chan struct{} // non-nil while a caller takes a batch for the others; closed when done
}

type batch struct {
	left    float64
	expires int64 // by the set's clock; unusable from then on
	at      int64 // sliding window slot, or fixed window start
}

func newReservoir(b *kvBackend) *reservoir {
	o := b.s.opts
	r := &reservoir{b: b, ttl: int64(o.LeaseTTL), kick: make(chan struct{}, 1),
		size: make([]float64, len(b.s.defs)), batches: make([][]batch, len(b.s.defs))}
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
			return waitErr(r.b.s.defs[firstTaken(a)].key, ctx.Err())
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

func firstTaken(a *Acquisition) int {
	for i := range a.amounts {
		if a.taken&(1<<i) != 0 {
			return i
		}
	}
	return 0
}

// takeLocal serves a entirely from valid batches, or takes nothing.
func (r *reservoir) takeLocal(a *Acquisition, now int64) bool {
	for i := range a.amounts {
		if a.taken&(1<<i) != 0 && r.local(i, now) < a.amounts[i] {
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

// local is what limit i's valid batches hold. Callers hold r.mu.
func (r *reservoir) local(i int, now int64) float64 {
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
	now, err := b.update(ctx, mode, func(st *sharedState, now int64) (blocker, bool) {
		b.prune(st, now)
		if bl := b.check(st, now, a); bl.wait != 0 {
			return bl, false
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
			}
		}
		b.takeResources(st, now, a)
		return blocker{}, true
	}, func(now int64) {
		b.holdResources(a, 1)
		r.mu.Lock()
		for i := range got {
			if left := got[i] - a.amounts[i]; left > 0 && expires[i] > now {
				r.batches[i] = append(r.batches[i], batch{left: left, expires: expires[i], at: at[i]})
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

// refund puts a's unused units of refunding algorithms into the reservoir,
// to be used here or given back when the batch expires.
func (r *reservoir) refund(a *Acquisition) {
	now := r.b.now()
	added := false
	r.mu.Lock()
	for i := range a.amounts {
		if u := a.refund(i); a.taken&(1<<i) != 0 && u > 0 {
			r.batches[i] = append(r.batches[i], batch{left: u, expires: now + r.ttl})
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
		next := int64(math.MaxInt64)
		for _, bs := range r.batches {
			for _, bt := range bs {
				next = min(next, bt.expires)
			}
		}
		r.mu.Unlock()
		d := time.Hour
		if next != math.MaxInt64 {
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
		ctx, cancel := context.WithTimeout(b.bgCtx, setupTimeout)
		if err := r.giveBack(ctx, r.take(b.now())); err != nil && b.bgCtx.Err() == nil {
			b.s.opts.Logger.Error("limits: giving back leased units", "set", b.name, "err", err)
		}
		cancel()
	}
}

// returnAll gives back every batch, valid or not: the set is closing.
func (r *reservoir) returnAll() error {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	return r.giveBack(ctx, r.take(math.MaxInt64))
}

type leftover struct {
	i    int
	left float64
	at   int64
}

// take removes the batches expired at now and returns their unused units.
func (r *reservoir) take(now int64) []leftover {
	var out []leftover
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, bs := range r.batches {
		keep := bs[:0]
		for _, bt := range bs {
			switch {
			case bt.left <= 0:
			case bt.expires <= now:
				out = append(out, leftover{i: i, left: bt.left, at: bt.at})
			default:
				keep = append(keep, bt)
			}
		}
		r.batches[i] = keep
	}
	return out
}

func (r *reservoir) giveBack(ctx context.Context, ls []leftover) error {
	params := r.b.s.params
	worth := false
	for _, l := range ls {
		worth = worth || params[l.i].alg != LeakyBucket
	}
	if !worth {
		return nil
	}
	_, err := r.b.update(ctx, txBackground, func(st *sharedState, now int64) (blocker, bool) {
		for _, l := range ls {
			params[l.i].advance(&st.Rates[l.i], now)
			params[l.i].giveBack(&st.Rates[l.i], now, l.left, l.at)
		}
		return blocker{}, true
	}, nil)
	return err
}
