package limits

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"
)

// A transaction reads a key's newest state, computes the new one and writes
// it with a compare-and-set on the key's revision. Nothing is ever admitted
// from a state that was not the latest, which is what makes the shared
// limits exact. Two kinds of failure are retried:
//
//   - a conflict (jetstream.ErrKeyRevisionMismatch): another process wrote
//     first; the transaction is redone on the newer state;
//   - an outage: no stream leader (an election, a lost quorum), a server
//     that went away with the request, a timeout. The transaction waits with
//     backoff and tries again, until its context ends.
//
// A write that timed out may still have been applied. Redoing a transaction
// then applies it twice, which is harmless for what takes (units counted
// twice are under-admission, never over-admission; resource slots counted
// twice are trimmed by the next release or renewal), but not for what gives
// back. Each txFunc is told when an earlier attempt may have been applied
// (redo) and leaves out its give-backs then.

const (
	// attemptTimeout bounds each read or write of a transaction, so that a
	// request lost with a server that died is retried elsewhere soon.
	attemptTimeout = 2 * time.Second
	// maxConflicts CAS conflicts in a row are retried after a jittered backoff;
	// then the caller waits for the state to move (the watch) before trying again.
	maxConflicts = 8
	backoffBase  = 100 * time.Microsecond
	backoffMax   = 10 * time.Millisecond
	// watchGrace is how long a conflicting writer waits for the watch to bring
	// the winner's state before reading the key itself.
	watchGrace = 2 * time.Millisecond
	// Outages are retried after outageBase, doubling to outageMax: often
	// enough to see a new stream leader within a fraction of a second.
	outageBase = 10 * time.Millisecond
	outageMax  = 250 * time.Millisecond
)

// shard is one key of a shared set: the set's own key, or one partition's.
type shard struct {
	b    *kvBackend
	key  string
	part string        // "" for the set's own key
	gate chan struct{} // one transaction of this key in flight in this process

	mu   sync.Mutex
	cur  snapshot
	wake chan struct{} // closed at the next change of cur
	held []float64     // resource slots held through this key, by def index
	lost bool          // our resource lease expired before renewal (logged once)
	// The coalescing queue of Exact-mode acquisitions (combine.go).
	queue   []*waiter
	running bool          // a combiner serves the queue
	kick    chan struct{} // the queue changed
	// The partition table's bookkeeping, guarded by its mutex.
	pins    int   // operations under way
	lastUse int64 // by the set's clock
}

func (b *kvBackend) newShard(key, part string) *shard {
	return &shard{b: b, key: key, part: part, gate: make(chan struct{}, 1), kick: make(chan struct{}, 1),
		held: make([]float64, len(b.s.defs))}
}

// fetch reads the key, creating it when missing, and stores what it found.
func (sh *shard) fetch(ctx context.Context) error {
	b := sh.b
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		e, err := b.kv.Get(actx, sh.key)
		cancel()
		if err == nil {
			sh.store(snapshot{rev: e.Revision(), raw: e.Value()})
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
		var opts []jetstream.KVCreateOpt
		if sh.part != "" && b.msgTTL > 0 {
			opts = append(opts, jetstream.KeyTTL(b.msgTTL))
		}
		actx, cancel = context.WithTimeout(context.WithoutCancel(ctx), attemptTimeout)
		rev, err := b.kv.Create(actx, sh.key, raw, opts...)
		cancel()
		if err == nil {
			sh.store(snapshot{rev: rev, raw: raw, st: st})
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("limits: creating shared set %q: %w", b.name, err)
		}
		// Another process created it first: read theirs.
	}
}

// store keeps s if it is newer than what we have and wakes the waiters.
func (sh *shard) store(s snapshot) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s.rev == sh.cur.rev && sh.cur.st == nil && !sh.cur.missing {
		sh.cur.st = s.st // the watch was first with our own write: keep it decoded
	}
	if s.rev <= sh.cur.rev {
		return
	}
	sh.cur = s
	if sh.wake != nil {
		close(sh.wake)
		sh.wake = nil
	}
}

// latest returns the newest state seen, decoded, reading the key if nothing
// was seen yet or the last thing seen was a deletion.
func (sh *shard) latest(ctx context.Context) (snapshot, error) {
	sh.mu.Lock()
	snap := sh.cur
	sh.mu.Unlock()
	if snap.missing || snap.rev == 0 {
		if err := sh.fetch(ctx); err != nil {
			return snap, err
		}
		sh.mu.Lock()
		snap = sh.cur
		sh.mu.Unlock()
	}
	if snap.st != nil {
		return snap, nil
	}
	st, err := sh.b.decode(snap.raw)
	if err != nil {
		return snap, err
	}
	snap.st = st
	sh.mu.Lock()
	if sh.cur.rev == snap.rev {
		sh.cur.st = st
	}
	sh.mu.Unlock()
	return snap, nil
}

// waitChan returns a channel closed at the next change of state, or changed
// true if the state already moved past rev.
func (sh *shard) waitChan(rev uint64) (wake <-chan struct{}, changed bool) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.cur.rev != rev {
		return nil, true
	}
	if sh.wake == nil {
		sh.wake = make(chan struct{})
	}
	return sh.wake, false
}

// txFunc computes a new state from st at now, in place. It returns what
// blocks it, and whether st must be written: a blocked txFunc may still ask
// for its settled state to be written (expired leases dropped), so that
// waiters do not redo that settling on a stale state forever. redo says that
// an earlier attempt's write may have been applied: leave out give-backs.
type txFunc func(st *sharedState, now int64, redo bool) (bl blocker, write bool)

// txMode says how a transaction treats a blocked txFunc.
type txMode uint8

const (
	txTry        txMode = iota // fail with ErrWouldWait
	txWait                     // wait for a change or the hinted time; give up when the set closes
	txBackground               // never blocked; keeps working after Close
)

// attempt is one run of a transaction, with sh.gate held: fn on a copy of
// the newest state, then the compare-and-set if fn asks for it.
type attempt struct {
	now   int64
	base  uint64 // the revision fn ran on
	rev   uint64 // the revision after the attempt
	bl    blocker
	wrote bool
}

func (sh *shard) try(ctx context.Context, fn txFunc, redo bool) (attempt, error) {
	snap, err := sh.latest(ctx)
	if err != nil {
		return attempt{}, err
	}
	st := snap.st.clone()
	at := attempt{now: sh.b.now(), base: snap.rev, rev: snap.rev}
	var write bool
	at.bl, write = fn(st, at.now, redo)
	if write {
		if at.rev, err = sh.write(ctx, st, snap.rev); err != nil {
			return at, err
		}
		at.wrote = true
	}
	return at, nil
}

// update runs fn on the newest state and writes the result with a
// compare-and-set, until it succeeds, fn blocks (txTry), ctx ends or the set
// closes (txWait). commit runs after a successful unblocked write, still in
// order with this key's other transactions. It returns the now of that run.
func (sh *shard) update(ctx context.Context, mode txMode, fn txFunc, commit func(now int64)) (int64, error) {
	var done <-chan struct{}
	if mode == txWait {
		done = sh.b.done
	}
	var r retry
	fail := func(err error) (int64, error) {
		if r.redo {
			err = fmt.Errorf("%w (%w)", err, errMaybeWritten)
		}
		return 0, err
	}
	for {
		select {
		case sh.gate <- struct{}{}:
		case <-ctx.Done():
			return fail(r.gaveUp(sh, ctx.Err()))
		case <-done:
			return fail(ErrClosed)
		}
		at, err := sh.try(ctx, fn, r.redo)
		if err != nil {
			<-sh.gate
			if err = sh.recover(ctx, done, &r, at.base, err); err != nil {
				return fail(err)
			}
			continue
		}
		r = retry{redo: r.redo} // a write of this transaction may still have been applied
		if at.bl.wait == 0 {
			if at.wrote && commit != nil {
				commit(at.now)
			}
			<-sh.gate
			return at.now, nil
		}
		wake, changed := sh.waitChan(at.rev)
		<-sh.gate
		switch {
		case changed:
		case mode != txWait:
			return 0, wouldWait(at.bl.key, at.bl.wait)
		default:
			if err := sleep(ctx, wake, done, at.bl.wait); err != nil {
				return 0, waitErr(at.bl.key, err)
			}
		}
	}
}

// errMaybeWritten marks a transaction that gave up after a write whose
// outcome is unknown.
var errMaybeWritten = errors.New("limits: a write's outcome is unknown")

// retry counts a transaction's failed attempts.
type retry struct {
	conflicts int
	outages   int
	last      error // the last outage, for the error when ctx ends first
	redo      bool  // an earlier attempt's write may have been applied
}

// gaveUp is the error for a context that ended while the transaction was
// kept from the bucket by an outage (or just waited for its turn).
func (r *retry) gaveUp(sh *shard, err error) error {
	if r.last == nil {
		return err
	}
	return fmt.Errorf("limits: shared set %q unavailable: %w (last: %v)", sh.b.name, err, r.last)
}

// recover waits as a failed attempt on revision rev calls for, and returns
// nil to try again or the error to give up with.
func (sh *shard) recover(ctx context.Context, done <-chan struct{}, r *retry, rev uint64, err error) error {
	switch {
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		// Lost a race with another process: someone made progress. Retry on
		// the newer state at once; after more conflicts in a row, back off
		// with jitter first. After maxConflicts, wait for the watch to show
		// the state moving.
		r.conflicts++
		if r.conflicts <= maxConflicts {
			if r.conflicts > 1 {
				if err := sleep(ctx, nil, done, jitter(r.conflicts-1)); err != nil {
					return err
				}
			}
			return sh.refreshPast(ctx, done, rev)
		}
		r.conflicts = 0
		wake, changed := sh.waitChan(rev)
		if changed {
			return nil
		}
		return sleep(ctx, wake, done, jitter(maxConflicts))
	case outage(err):
		if !notApplied(err) {
			r.redo = true
		}
		if ctx.Err() != nil { // the caller's own deadline, not the bucket's outage
			return r.gaveUp(sh, ctx.Err())
		}
		r.outages++
		r.last = err
		d := min(int64(outageMax), int64(outageBase)<<min(r.outages-1, 16))
		if err := sleep(ctx, nil, done, d/2+rand.Int64N(d/2+1)); err != nil {
			return r.gaveUp(sh, err)
		}
		return nil
	}
	return err
}

// outage reports whether err may go away by itself: a stream without a
// leader (an election, a lost quorum), a server that went away with the
// request, a timeout.
func outage(err error) bool {
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var api *jetstream.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode {
		case 10008, // JetStream system temporarily unavailable
			10118, 10194, // stream is offline
			10163: // expected last sequence per subject temporarily unavailable
			return true
		}
	}
	return false
}

// notApplied reports whether a failed write certainly changed nothing: the
// server refused it, or nobody received it.
func notApplied(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) || errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)
}

// write stores st as the revision after rev. The write itself ignores the
// caller's cancellation: a write abandoned in flight may still commit, and its
// units would be spent with nobody holding them.
func (sh *shard) write(ctx context.Context, st *sharedState, rev uint64) (uint64, error) {
	b := sh.b
	raw, err := msgpack.Marshal(st)
	if err != nil {
		return 0, fmt.Errorf("limits: encoding shared set %q: %w", b.name, err)
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), attemptTimeout)
	defer cancel()
	var newRev uint64
	if sh.part != "" && b.msgTTL > 0 {
		newRev, err = b.publish(wctx, sh.key, raw, rev)
	} else {
		newRev, err = b.kv.Update(wctx, sh.key, raw, rev)
	}
	if err != nil {
		return 0, fmt.Errorf("limits: writing shared set %q: %w", b.name, err)
	}
	sh.store(snapshot{rev: newRev, raw: raw, st: st})
	return newRev, nil
}

// publish is kv.Update with a time to live: a partition's key that nobody
// writes for b.msgTTL is at rest, and the server removes it.
func (b *kvBackend) publish(ctx context.Context, key string, raw []byte, rev uint64) (uint64, error) {
	m := &nats.Msg{Subject: "$KV." + b.s.opts.Bucket + "." + key, Header: nats.Header{}, Data: raw}
	ack, err := b.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(b.msgTTL))
	if err != nil {
		var api *jetstream.APIError
		if errors.As(err, &api) && (api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return 0, fmt.Errorf("%w: %w", err, jetstream.ErrKeyRevisionMismatch)
		}
		return 0, err
	}
	return ack.Sequence, nil
}

// refreshPast makes sure the state we hold is newer than rev: the watch
// usually delivers it within a moment of the conflict; else read the key.
func (sh *shard) refreshPast(ctx context.Context, done <-chan struct{}, rev uint64) error {
	wake, changed := sh.waitChan(rev)
	if changed {
		return nil
	}
	if err := sleep(ctx, wake, done, int64(watchGrace)); err != nil {
		return err
	}
	if _, changed = sh.waitChan(rev); changed {
		return nil
	}
	return sh.fetch(ctx)
}

// jitter is a random backoff in [d/2, d], d doubling per conflict.
func jitter(conflicts int) int64 {
	d := min(int64(backoffMax), int64(backoffBase)<<min(conflicts-1, 16))
	return d/2 + rand.Int64N(d/2+1)
}
