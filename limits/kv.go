package limits

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/vmihailenco/msgpack/v5"
)

// The KV backend keeps a shared set's whole state in ONE key of a JetStream KV
// bucket: every rate limit's state and every resource holder's lease. An
// acquisition over several limits is therefore one read-modify-write, made
// atomic by a compare-and-set on the key's revision (kvtx.go). A set whose
// limits are per partition keeps each partition's state in a key of its own,
// <name>._p.<partition>, and its own key holds only the definition that every
// process must agree on.
//
// Each set also watches its keys: the watch keeps a fresh copy of the state
// (so most acquisitions are one round trip, the CAS itself) and wakes waiters
// when another process releases or refunds.

// shardIdle is how long a partition's key stays cached in this process after
// its last use here, when it holds nothing of this process's.
const shardIdle = time.Minute

type kvBackend struct {
	s      *Set
	name   string
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	sig    string
	holder string
	margin int64         // MaxSkew, ns
	resTTL int64         // ResourceLeaseTTL, ns
	hasRes bool          // the set has a ResourceLimit
	msgTTL time.Duration // time to live of partitions' keys; 0: the bucket has none
	done   chan struct{} // closed by Close: waiters give up
	bgCtx  context.Context
	cancel context.CancelFunc

	life    sync.Mutex // guards closing, so that no goroutine starts once Close waits
	closing bool
	wg      sync.WaitGroup

	lease *reservoir // Lease mode only
	main  *shard     // the set's own key

	partMu sync.Mutex
	parts  partitions[*shard] // by KV key; per-partition sets only
}

func newKVBackend(s *Set) (*kvBackend, error) {
	o := s.opts
	sigs := make([]string, len(s.defs))
	b := &kvBackend{s: s, name: o.Name, margin: int64(o.MaxSkew), resTTL: int64(o.ResourceLeaseTTL),
		done: make(chan struct{}), holder: o.Holder}
	for i, d := range s.defs {
		sigs[i] = d.signature()
		b.hasRes = b.hasRes || d.kind == kindResource
	}
	b.sig = strings.Join(sigs, ";")
	if b.holder == "" {
		host, _ := os.Hostname()
		b.holder = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), nuid.Next())
	}
	b.main = b.newShard(o.Name, "")
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	var err error
	if b.js, err = jetstream.New(o.Conn); err != nil {
		return nil, fmt.Errorf("limits: shared set %q: %w", o.Name, err)
	}
	if err := b.openBucket(ctx); err != nil {
		return nil, err
	}
	if err := waitOut(ctx, func(ctx context.Context) error {
		_, err := b.main.latest(ctx)
		return err
	}); err != nil {
		return nil, err
	}
	b.bgCtx, b.cancel = context.WithCancel(context.Background())
	watcher, err := b.startWatch(ctx)
	if err != nil {
		b.cancel()
		return nil, err
	}
	b.wg.Add(1)
	go b.watch(watcher)
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

// spawn runs f in a goroutine that Close waits for, unless the set closes.
func (b *kvBackend) spawn(f func()) bool {
	b.life.Lock()
	defer b.life.Unlock()
	if b.closing {
		return false
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		f()
	}()
	return true
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

// shardFor returns the key an acquisition in part works on, pinned until
// unpin: a partition's on first use, and a few idle partitions forgotten.
func (b *kvBackend) shardFor(part string) *shard {
	if part == "" {
		return b.main
	}
	key := partitionKey(b.name, part)
	now := b.now()
	b.partMu.Lock()
	defer b.partMu.Unlock()
	sh, ok := b.parts.get(key)
	if !ok {
		sh = b.newShard(key, part)
		b.parts.put(key, sh)
	}
	sh.pins++
	sh.lastUse = now
	b.parts.sweep(sh, func(o *shard) bool { return o.idle(now) })
	return sh
}

func (b *kvBackend) unpin(sh *shard) {
	if sh.part == "" {
		return
	}
	b.partMu.Lock()
	sh.pins--
	b.partMu.Unlock()
}

// idle reports whether this process may forget the partition's key: nothing
// under way, nothing held, unused for shardIdle. Called with partMu held.
func (sh *shard) idle(now int64) bool {
	if sh.pins > 0 || now-sh.lastUse < int64(shardIdle) {
		return false
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return !sh.running && len(sh.queue) == 0 && !slices.ContainsFunc(sh.held, func(n float64) bool { return n > 0 })
}

// startWatch watches the set's key, or its partitions' keys, waiting out an outage until ctx ends.
func (b *kvBackend) startWatch(ctx context.Context) (jetstream.KeyWatcher, error) {
	pattern, wopts := b.name, []jetstream.WatchOpt(nil)
	if b.s.partitioned {
		pattern, wopts = b.name+partitionSep+">", []jetstream.WatchOpt{jetstream.UpdatesOnly()}
	}
	var w jetstream.KeyWatcher
	err := waitOut(ctx, func(context.Context) error {
		var err error
		w, err = b.kv.Watch(b.bgCtx, pattern, wopts...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("limits: shared set %q: watching: %w", b.name, err)
	}
	return w, nil
}

// watch stores the changes of the watched keys, which wakes their waiters, until the set closes. A server restart
// can take the watch's consumer with it, and nats.go makes a new one only after its heartbeats have been missed for
// a while (about 20 s), when waiters would hear of no release meanwhile; so each reconnect starts a new watch at once.
func (b *kvBackend) watch(w jetstream.KeyWatcher) {
	defer b.wg.Done()
	nc := b.s.opts.Conn
	status := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(status)
	defer func() { b.stopWatch(w) }()
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			b.apply(e)
		case <-status:
			b.stopWatch(w)
			nw, err := b.startWatch(b.bgCtx)
			if err != nil {
				return // the set closed
			}
			w = nw
			if b.s.partitioned { // a watch of updates only: read what changed meanwhile
				b.partMu.Lock()
				var shards []*shard
				b.parts.each(func(sh *shard) { shards = append(shards, sh) })
				b.partMu.Unlock()
				for _, sh := range shards {
					_ = sh.fetch(b.bgCtx) // a failure leaves the shard to its next transaction
				}
			}
		case <-b.bgCtx.Done():
			return
		}
	}
}

func (b *kvBackend) apply(e jetstream.KeyValueEntry) {
	if e == nil {
		return
	}
	sh := b.main
	if b.s.partitioned {
		b.partMu.Lock()
		sh, _ = b.parts.get(e.Key())
		b.partMu.Unlock()
		if sh == nil {
			return // not used here: read when it is
		}
	}
	if e.Operation() == jetstream.KeyValuePut {
		sh.store(snapshot{rev: e.Revision(), raw: e.Value()})
	} else {
		sh.store(snapshot{rev: e.Revision(), missing: true})
	}
}

func (b *kvBackend) stopWatch(w jetstream.KeyWatcher) {
	err := w.Stop()
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, nats.ErrConsumerNotFound) &&
		!errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
		b.s.opts.Logger.Debug("limits: stopping a watch", "set", b.name, "err", err)
	}
}

// holdResources counts a's resource slots as held through sh (or, with sign
// -1, no longer held): the keepalive renews what is held.
func (sh *shard) holdResources(a *Acquisition, sign float64) bool {
	holds := false
	sh.mu.Lock()
	for i, d := range sh.b.s.defs {
		if a.taken&(1<<i) != 0 && d.kind == kindResource {
			sh.held[i] += sign * a.amounts[i]
			holds = true
		}
	}
	sh.mu.Unlock()
	return holds
}

func (b *kvBackend) acquire(ctx context.Context, a *Acquisition, block bool) error {
	if b.lease != nil {
		return b.lease.acquire(ctx, a, block)
	}
	sh := b.shardFor(a.part)
	defer b.unpin(sh)
	return sh.acquire(ctx, a, block)
}

func (b *kvBackend) release(a *Acquisition) error {
	sh := b.shardFor(a.part)
	defer b.unpin(sh)
	hasRes := sh.holdResources(a, -1)
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
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	_, err := sh.update(ctx, txBackground, func(st *sharedState, now int64, redo bool) (blocker, bool) {
		b.settle(st, now)
		if hasRes {
			sh.mu.Lock()
			trimHolding(st.Holders, b.holder, sh.held)
			sh.mu.Unlock()
		}
		if refunds && !redo { // a refund applied twice would over-admit
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

// keepalive renews this set's resource leases while it holds slots, every
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
		shards := []*shard{b.main}
		if b.s.partitioned {
			b.partMu.Lock()
			b.parts.each(func(sh *shard) { shards = append(shards, sh) })
			b.partMu.Unlock()
		}
		for _, sh := range shards {
			if err := sh.renew(every); err != nil && b.bgCtx.Err() == nil {
				b.s.opts.Logger.Error("limits: renewing resource lease", "set", b.name, "key", sh.key, "holder", b.holder, "err", err)
			}
		}
	}
}

func (sh *shard) renew(timeout time.Duration) error {
	b := sh.b
	sh.mu.Lock()
	holding := slices.ContainsFunc(sh.held, func(n float64) bool { return n > 0 })
	sh.mu.Unlock()
	if !holding {
		return nil
	}
	ctx, cancel := context.WithTimeout(b.bgCtx, timeout)
	defer cancel()
	_, err := sh.update(ctx, txBackground, func(st *sharedState, now int64, _ bool) (blocker, bool) {
		b.settle(st, now)
		h, ok := st.Holders[b.holder]
		sh.mu.Lock()
		defer sh.mu.Unlock()
		if !ok {
			if !sh.lost {
				sh.lost = true
				b.s.opts.Logger.Error("limits: resource lease expired before renewal; its slots may be in use by others",
					"set", b.name, "key", sh.key, "holder", b.holder)
			}
			return blocker{}, false
		}
		// Keep only what this set still holds: a Release whose write failed
		// is completed here.
		for i := range h.Slots {
			h.Slots[i] = min(h.Slots[i], sh.held[i])
		}
		h.Expires = now + b.resTTL
		putHolding(st.Holders, b.holder, h)
		return blocker{}, true
	}, nil)
	return err
}

func (b *kvBackend) stats(part string) map[string]Stats {
	sh, partitions := b.main, 0
	if b.s.partitioned {
		b.partMu.Lock()
		partitions = b.parts.len()
		sh = nil
		if part != "" {
			sh, _ = b.parts.get(partitionKey(b.name, part))
		}
		b.partMu.Unlock()
	}
	now := b.now()
	var st *sharedState
	if sh != nil {
		sh.mu.Lock()
		snap := sh.cur
		sh.mu.Unlock()
		st = snap.st
		if st == nil && !snap.missing && snap.rev != 0 {
			st, _ = b.decode(snap.raw)
		}
	}
	if st == nil {
		st = b.initial(now)
	} else {
		st = st.clone()
	}
	b.settle(st, now)
	out := make(map[string]Stats, len(b.s.defs))
	for i, d := range b.s.defs {
		var s Stats
		if d.kind == kindResource {
			s = resourceStats(d, held(st.Holders, i))
		} else {
			s = b.s.params[i].stats(d.key, &st.Rates[i], now)
		}
		if b.lease != nil && d.kind != kindResource {
			s.Extra["leased_local"] = b.lease.local(i, now)
		}
		if b.s.partitioned && part == "" {
			s.Extra["partitions"] = float64(partitions)
		}
		out[d.key] = s
	}
	return out
}

func (b *kvBackend) close() error {
	b.life.Lock()
	b.closing = true
	b.life.Unlock()
	close(b.done)
	b.cancel() // the watch stops with it
	b.wg.Wait()
	var err error
	if b.lease != nil {
		err = b.lease.returnAll()
	}
	if err != nil {
		return fmt.Errorf("limits: closing shared set %q: %w", b.name, err)
	}
	return nil
}
