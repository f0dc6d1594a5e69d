package limits

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/vmihailenco/msgpack/v5"
)

// The KV backend keeps a shared set's whole state in ONE key of a JetStream KV
// bucket: every rate limit's state and every resource holder's lease. An
// acquisition over several limits is therefore one read-modify-write, made
// atomic by a compare-and-set on the key's revision (kv.Update): a writer that
// lost the race gets jetstream.ErrKeyRevisionMismatch and redoes the
// computation on the newer state. Nothing is ever admitted from a state that
// was not the latest, which is what makes the shared limits exact.
//
// Each set also watches the key: the watch keeps a fresh copy of the state
// (so most acquisitions are one round trip, the CAS itself) and wakes waiters
// when another process releases or refunds.

const (
	// setupTimeout bounds NewSet's bucket and key setup, Release, and Close's
	// return of leased units: calls that take no context.
	setupTimeout = 10 * time.Second
	// maxConflicts CAS conflicts in a row are retried after a jittered backoff;
	// then the caller waits for the state to move (the watch) before trying again.
	maxConflicts = 8
	backoffBase  = 100 * time.Microsecond
	backoffMax   = 10 * time.Millisecond
	// watchGrace is how long a conflicting writer waits for the watch to bring
	// the winner's state before reading the key itself.
	watchGrace = 2 * time.Millisecond
)

type kvBackend struct {
	s       *Set
	name    string
	kv      jetstream.KeyValue
	sig     string
	holder  string
	margin  int64 // MaxSkew, ns
	resTTL  int64 // ResourceLeaseTTL, ns
	hasRes  bool
	gate    chan struct{} // one transaction of this set in flight at a time
	done    chan struct{} // closed by Close: waiters give up
	bgCtx   context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	watcher jetstream.KeyWatcher
	lease   *reservoir // Lease mode only

	mu   sync.Mutex
	cur  snapshot
	wake chan struct{}
	held []float64 // resource slots held through this set, by def index
	lost bool      // our resource lease expired before renewal (logged once)
}

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

// putHolding stores h as key's entry, or deletes the entry if h holds nothing.
func putHolding(m map[string]holder, key string, h holder) {
	if slices.ContainsFunc(h.Slots, func(v float64) bool { return v > 0 }) {
		m[key] = h
	} else {
		delete(m, key)
	}
}

func newKVBackend(s *Set) (*kvBackend, error) {
	o := s.opts
	sigs := make([]string, len(s.defs))
	b := &kvBackend{s: s, name: o.Name, margin: int64(o.MaxSkew), resTTL: int64(o.ResourceLeaseTTL),
		gate: make(chan struct{}, 1), done: make(chan struct{}), held: make([]float64, len(s.defs)), holder: o.Holder}
	for i, d := range s.defs {
		sigs[i] = d.signature()
		b.hasRes = b.hasRes || d.kind == kindResource
	}
	b.sig = strings.Join(sigs, ";")
	if b.holder == "" {
		host, _ := os.Hostname()
		b.holder = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), nuid.Next())
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	js, err := jetstream.New(o.Conn)
	if err != nil {
		return nil, fmt.Errorf("limits: shared set %q: %w", o.Name, err)
	}
	b.kv, err = js.KeyValue(ctx, o.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		b.kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: o.Bucket, History: 1,
			Description: "natsfleet shared limit sets"})
		if errors.Is(err, jetstream.ErrBucketExists) {
			b.kv, err = js.KeyValue(ctx, o.Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("limits: shared set %q: bucket %q: %w", o.Name, o.Bucket, err)
	}
	if err := b.fetch(ctx); err != nil {
		return nil, err
	}
	if _, err := b.latest(ctx); err != nil {
		return nil, err
	}
	b.bgCtx, b.cancel = context.WithCancel(context.Background())
	b.watcher, err = b.kv.Watch(b.bgCtx, o.Name)
	if err != nil {
		b.cancel()
		return nil, fmt.Errorf("limits: shared set %q: watching: %w", o.Name, err)
	}
	b.wg.Add(1)
	go b.watch()
	if b.hasRes {
		b.wg.Add(1)
		go b.keepalive()
	}
	if o.Mode == Lease {
		b.lease = newReservoir(b)
		b.wg.Add(1)
		go b.lease.loop()
	}
	return b, nil
}

func (b *kvBackend) now() int64 { return b.s.opts.Clock().UnixNano() }

func (b *kvBackend) initial(now int64) *sharedState {
	st := &sharedState{Sig: b.sig, Rates: make([]rateState, len(b.s.defs))}
	for i, d := range b.s.defs {
		if d.kind != kindResource {
			st.Rates[i] = b.s.params[i].init(now)
		}
	}
	return st
}

// fetch reads the key, creating it when missing, and stores what it found.
func (b *kvBackend) fetch(ctx context.Context) error {
	for {
		e, err := b.kv.Get(ctx, b.name)
		if err == nil {
			b.store(snapshot{rev: e.Revision(), raw: e.Value()})
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("limits: reading shared set %q: %w", b.name, err)
		}
		st := b.initial(b.now())
		raw, err := msgpack.Marshal(st)
		if err != nil {
			return fmt.Errorf("limits: encoding shared set %q: %w", b.name, err)
		}
		rev, err := b.kv.Create(ctx, b.name, raw)
		if err == nil {
			b.store(snapshot{rev: rev, raw: raw, st: st})
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("limits: creating shared set %q: %w", b.name, err)
		}
		// Another process created it first: read theirs.
	}
}

// store keeps s if it is newer than what we have and wakes the waiters.
func (b *kvBackend) store(s snapshot) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.rev == b.cur.rev && b.cur.st == nil && !b.cur.missing {
		b.cur.st = s.st // the watch was first with our own write: keep it decoded
	}
	if s.rev <= b.cur.rev {
		return
	}
	b.cur = s
	if b.wake != nil {
		close(b.wake)
		b.wake = nil
	}
}

// latest returns the newest state seen, decoded, reading the key if the last
// thing seen was a deletion.
func (b *kvBackend) latest(ctx context.Context) (snapshot, error) {
	b.mu.Lock()
	snap := b.cur
	b.mu.Unlock()
	if snap.missing {
		if err := b.fetch(ctx); err != nil {
			return snap, err
		}
		b.mu.Lock()
		snap = b.cur
		b.mu.Unlock()
	}
	if snap.st != nil {
		return snap, nil
	}
	st, err := b.decode(snap.raw)
	if err != nil {
		return snap, err
	}
	snap.st = st
	b.mu.Lock()
	if b.cur.rev == snap.rev {
		b.cur.st = st
	}
	b.mu.Unlock()
	return snap, nil
}

func (b *kvBackend) decode(raw []byte) (*sharedState, error) {
	st := new(sharedState)
	if err := msgpack.Unmarshal(raw, st); err != nil {
		return nil, fmt.Errorf("limits: decoding shared set %q: %w", b.name, err)
	}
	if st.Sig != b.sig || len(st.Rates) != len(b.s.defs) {
		return nil, invalidf("shared set %q holds other limits (%s) than given (%s): use another name, or delete key %q of bucket %q when no process uses it",
			b.name, st.Sig, b.sig, b.name, b.s.opts.Bucket)
	}
	return st, nil
}

// waitChan returns a channel closed at the next change of state, or changed
// true if the state already moved past rev.
func (b *kvBackend) waitChan(rev uint64) (wake <-chan struct{}, changed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur.rev != rev {
		return nil, true
	}
	if b.wake == nil {
		b.wake = make(chan struct{})
	}
	return b.wake, false
}

// txFunc computes a new state from st at now, in place. It returns what
// blocks it, and whether st must be written: a blocked txFunc may still ask
// for its settled state to be written (expired leases dropped), so that
// waiters do not redo that settling on a stale state forever.
type txFunc func(st *sharedState, now int64) (bl blocker, write bool)

// txMode says how a transaction treats a blocked txFunc.
type txMode uint8

const (
	txTry        txMode = iota // fail with ErrWouldWait
	txWait                     // wait for a change or the hinted time; give up when the set closes
	txBackground               // never blocked; keeps working after Close
)

// update runs fn on the newest state and writes the result with a
// compare-and-set, until it succeeds, fn blocks (txTry), ctx ends or the set
// closes (txWait). commit runs after a successful unblocked write, still in
// order with this set's other transactions. It returns the now of that run.
func (b *kvBackend) update(ctx context.Context, mode txMode, fn txFunc, commit func(now int64)) (int64, error) {
	var done <-chan struct{}
	if mode == txWait {
		done = b.done
	}
	conflicts := 0
	for {
		select {
		case b.gate <- struct{}{}:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-done:
			return 0, ErrClosed
		}
		snap, err := b.latest(ctx)
		if err != nil {
			<-b.gate
			return 0, err
		}
		st := snap.st.clone()
		now := b.now()
		bl, write := fn(st, now)
		rev := snap.rev
		if write {
			rev, err = b.write(ctx, st, snap.rev)
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				// Lost a race with another process: someone made progress.
				// Retry on the newer state at once; after more conflicts in a
				// row, back off with jitter first, holding the gate (this
				// process's other callers would only collide too). After
				// maxConflicts, wait for the watch to show the state moving.
				conflicts++
				if conflicts <= maxConflicts {
					err = nil
					if conflicts > 1 {
						err = sleep(ctx, nil, done, jitter(conflicts-1))
					}
					if err == nil {
						err = b.refreshPast(ctx, done, snap.rev)
					}
					<-b.gate
					if err != nil {
						return 0, err
					}
					continue
				}
				conflicts = 0
				wake, changed := b.waitChan(snap.rev)
				<-b.gate
				if !changed {
					if err := sleep(ctx, wake, done, jitter(maxConflicts)); err != nil {
						return 0, err
					}
				}
				continue
			}
			if err != nil {
				<-b.gate
				return 0, err
			}
		}
		if bl.wait == 0 {
			if write && commit != nil {
				commit(now)
			}
			<-b.gate
			return now, nil
		}
		wake, changed := b.waitChan(rev)
		<-b.gate
		switch {
		case changed:
		case mode != txWait:
			return 0, wouldWait(bl.key, bl.wait)
		default:
			if err := sleep(ctx, wake, done, bl.wait); err != nil {
				return 0, waitErr(bl.key, err)
			}
		}
	}
}

// write stores st as the revision after rev. The write itself ignores the
// caller's cancellation: a write abandoned in flight may still commit, and its
// units would be spent with nobody holding them.
func (b *kvBackend) write(ctx context.Context, st *sharedState, rev uint64) (uint64, error) {
	raw, err := msgpack.Marshal(st)
	if err != nil {
		return 0, fmt.Errorf("limits: encoding shared set %q: %w", b.name, err)
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), setupTimeout)
	defer cancel()
	newRev, err := b.kv.Update(wctx, b.name, raw, rev)
	if err != nil {
		return 0, fmt.Errorf("limits: writing shared set %q: %w", b.name, err)
	}
	b.store(snapshot{rev: newRev, raw: raw, st: st})
	return newRev, nil
}

// refreshPast makes sure the state we hold is newer than rev: the watch
// usually delivers it within a moment of the conflict; else read the key.
func (b *kvBackend) refreshPast(ctx context.Context, done <-chan struct{}, rev uint64) error {
	wake, changed := b.waitChan(rev)
	if changed {
		return nil
	}
	if err := sleep(ctx, wake, done, int64(watchGrace)); err != nil {
		return err
	}
	if _, changed = b.waitChan(rev); changed {
		return nil
	}
	return b.fetch(ctx)
}

// jitter is a random backoff in [d/2, d], d doubling per conflict.
func jitter(conflicts int) int64 {
	d := min(int64(backoffMax), int64(backoffBase)<<min(conflicts-1, 16))
	return d/2 + rand.Int64N(d/2+1)
}

func (b *kvBackend) watch() {
	defer b.wg.Done()
	for e := range b.watcher.Updates() {
		if e == nil {
			continue
		}
		if e.Operation() == jetstream.KeyValuePut {
			b.store(snapshot{rev: e.Revision(), raw: e.Value()})
		} else {
			b.store(snapshot{rev: e.Revision(), missing: true})
		}
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

// holdResources counts a's resource slots as held by this set (or, with
// sign -1, no longer held): the keepalive renews what is held.
func (b *kvBackend) holdResources(a *Acquisition, sign float64) bool {
	holds := false
	b.mu.Lock()
	for i, d := range b.s.defs {
		if a.taken&(1<<i) != 0 && d.kind == kindResource {
			b.held[i] += sign * a.amounts[i]
			holds = true
		}
	}
	b.mu.Unlock()
	return holds
}

func (b *kvBackend) acquire(ctx context.Context, a *Acquisition, block bool) error {
	if b.lease != nil {
		return b.lease.acquire(ctx, a, block)
	}
	mode := txTry
	if block {
		mode = txWait
	}
	now, err := b.update(ctx, mode, func(st *sharedState, now int64) (blocker, bool) {
		pruned := b.settle(st, now)
		if bl := b.check(st, now, a); bl.wait != 0 {
			return bl, pruned
		}
		for i, d := range b.s.defs {
			if a.taken&(1<<i) != 0 && d.kind != kindResource {
				b.s.params[i].take(&st.Rates[i], now, a.amounts[i], now)
			}
		}
		b.takeResources(st, now, a)
		return blocker{}, true
	}, func(int64) { b.holdResources(a, 1) })
	a.at = now
	return err
}

func (b *kvBackend) release(a *Acquisition) error {
	hasRes := b.holdResources(a, -1)
	refunds := false
	if b.lease != nil {
		b.lease.refund(a)
	} else {
		for i := range b.s.defs {
			refunds = refunds || (a.taken&(1<<i) != 0 && a.refund(i) > 0)
		}
	}
	if !hasRes && !refunds {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	_, err := b.update(ctx, txBackground, func(st *sharedState, now int64) (blocker, bool) {
		b.settle(st, now)
		for i, d := range b.s.defs {
			if a.taken&(1<<i) != 0 && d.kind == kindResource {
				subHolding(st.Holders, b.holder, i, a.amounts[i])
			}
		}
		if refunds {
			for i := range b.s.defs {
				if r := a.refund(i); a.taken&(1<<i) != 0 && r > 0 {
					b.s.params[i].refund(&st.Rates[i], now, r)
				}
			}
		}
		return blocker{}, true
	}, nil)
	return err
}

// keepalive renews this set's resource lease while it holds slots, every
// ResourceLeaseTTL/4, so that a live holder keeps them for as long as it works.
func (b *kvBackend) keepalive() {
	defer b.wg.Done()
	every := time.Duration(b.resTTL / 4)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.bgCtx.Done():
			return
		case <-t.C:
		}
		if err := b.renew(every); err != nil && b.bgCtx.Err() == nil {
			b.s.opts.Logger.Error("limits: renewing resource lease", "set", b.name, "holder", b.holder, "err", err)
		}
	}
}

func (b *kvBackend) renew(timeout time.Duration) error {
	b.mu.Lock()
	holding := slices.ContainsFunc(b.held, func(n float64) bool { return n > 0 })
	b.mu.Unlock()
	if !holding {
		return nil
	}
	ctx, cancel := context.WithTimeout(b.bgCtx, timeout)
	defer cancel()
	_, err := b.update(ctx, txBackground, func(st *sharedState, now int64) (blocker, bool) {
		b.settle(st, now)
		h, ok := st.Holders[b.holder]
		b.mu.Lock()
		defer b.mu.Unlock()
		if !ok {
			if !b.lost {
				b.lost = true
				b.s.opts.Logger.Error("limits: resource lease expired before renewal; its slots may be in use by others",
					"set", b.name, "holder", b.holder)
			}
			return blocker{}, false
		}
		// Keep only what this set still holds: a Release whose write failed
		// is completed here.
		for i := range h.Slots {
			h.Slots[i] = min(h.Slots[i], b.held[i])
		}
		h.Expires = now + b.resTTL
		putHolding(st.Holders, b.holder, h)
		return blocker{}, true
	}, nil)
	return err
}

func (b *kvBackend) stats() map[string]Stats {
	b.mu.Lock()
	snap := b.cur
	b.mu.Unlock()
	now := b.now()
	st := snap.st
	if st == nil && !snap.missing {
		st, _ = b.decode(snap.raw)
	}
	if st == nil {
		st = b.initial(now)
	} else {
		st = st.clone()
	}
	b.settle(st, now)
	out := make(map[string]Stats, len(b.s.defs))
	for i, d := range b.s.defs {
		if d.kind == kindResource {
			out[d.key] = resourceStats(d, held(st.Holders, i))
			continue
		}
		s := b.s.params[i].stats(d.key, &st.Rates[i], now)
		if b.lease != nil {
			s.Extra["leased_local"] = b.lease.local(i, now)
		}
		out[d.key] = s
	}
	return out
}

func (b *kvBackend) close() error {
	close(b.done)
	err := b.watcher.Stop()
	b.cancel()
	b.wg.Wait()
	if b.lease != nil {
		err = errors.Join(err, b.lease.returnAll())
	}
	if err != nil {
		return fmt.Errorf("limits: closing shared set %q: %w", b.name, err)
	}
	return nil
}
