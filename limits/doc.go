// Package limits enforces call rates, token budgets and concurrent-resource
// caps across every worker of a pool, and across every process of a fleet
// that names the same shared set, without ever admitting more than the budget.
//
// # Limits
//
// Three kinds of limit describe a budget:
//
//	limits.CallLimit{Window: time.Minute, Capacity: 100}      // 100 calls a minute; key "call_count"
//	limits.RateLimit{Key: "tokens", Window: time.Minute,      // 1000 tokens a minute
//		Capacity: 1000, Algorithm: limits.GCRA}
//	limits.ResourceLimit{Key: "connections", Capacity: 5}    // 5 at once: a counting semaphore
//
// A [Set] enforces a group of limits together. A worker acquires what it is
// about to use, reports what it used, and releases:
//
//	acq, err := set.Acquire(ctx, limits.Request{"tokens": 100}) // waits until all fit
//	if err != nil {
//		return err
//	}
//	defer acq.Release()
//	resp, err := callModel(ctx, prompt)
//	acq.Update(limits.Usage{"tokens": resp.TokensUsed}) // refunds the rest where it can
//
// The rules are concurry's:
//
//   - Acquisition is all or nothing over the set's limits: it takes every
//     amount at once, or nothing and waits.
//   - CallLimits and ResourceLimits are taken with 1 unless the request names
//     them (naming one with 0 skips it). A RateLimit is taken only when named.
//   - A request above a limit's capacity can never fit: Acquire fails at once
//     with an [*ExceedsCapacityError]. Exactly the capacity is fine.
//   - Keys the set does not know are ignored, with one warning per key per set.
//   - An acquisition that took a RateLimit (or a CallLimit with more than 1)
//     needs [Acquisition.Update] with the actual usage before Release. Usage
//     below the request is refunded by the algorithms that can (token bucket,
//     GCRA); usage above it is logged and counted as the request.
//   - [Acquisition.Release] is idempotent. Unlike concurry, it returns the
//     resources even when Update was never called (say the call failed): it
//     releases everything first, counts the un-updated limits as fully used,
//     then reports them with a [*NotUpdatedError].
//
// Unlike concurry, an empty request does not fail on a set that has
// RateLimits: it takes the calls and resources and leaves the RateLimits
// alone, as a request that names other keys does.
//
// # Algorithms
//
// Every rate or call limit runs one of five algorithms (the zero value is
// SlidingWindow):
//
//	algorithm       allows                                          refunds  fractions
//	SlidingWindow   Capacity in any span of Window                  no       no
//	FixedWindow     Capacity per window; 2x at a window's edge      no       no
//	TokenBucket     bursts of Capacity, refilled Capacity/Window    yes      yes
//	LeakyBucket     a queue of Capacity draining one per interval   no       no
//	GCRA            bursts of Capacity, emission Window/Capacity    yes      yes
//
// Each algorithm is a pure function of its state and an explicit time, so the
// in-memory and shared backends run the same code. The sliding window is
// exact: it keeps admission times, not an estimate. Above a capacity of 128 it
// rounds each admission time up to a multiple of Window/128, which bounds its
// state at about 128 entries whatever the capacity; rounding up makes an
// admission expire later, so the window may under-admit by up to Window/128,
// never over-admit.
//
// # Waiting
//
// Acquire waits until the request fits or ctx ends (the error then wraps
// ctx.Err()). It does not poll: a waiter sleeps until the time its limits
// compute for enough refill or expiry, or until a release, refund or (for a
// shared set) another process's change wakes it. [Set.TryAcquire] never waits
// for capacity: it fails with [ErrWouldWait]. The waiters of an in-memory set
// are not served in FIFO order; those of a shared set in Exact mode are, in
// each process (see Coalescing).
//
// # Shared sets
//
// A set made with a name and a NATS connection keeps its state in one key of
// a JetStream KV bucket, and every set of every process naming it enforces
// the same limits together:
//
//	set, err := limits.NewSet(limits.SetOptions{Name: "openai", Conn: nc}, ls...)
//
// The whole state of the set, every limit and every resource holder, lives in
// that one key, so an acquisition over several limits is one
// read-modify-write made atomic by a compare-and-set on the key's revision.
// A writer that loses the race (jetstream.ErrKeyRevisionMismatch) retries on
// the newer state: at once the first time, then with jittered exponential
// backoff, and after a bounded number of conflicts it waits for the key's
// watch to show progress before trying again. Within a process, one
// transaction per key is in flight at a time, so a process never collides
// with itself. Nothing is admitted from a state that was not the latest: the
// shared limits are exact. Sets naming the same key must be given the same
// limits; NewSet fails otherwise.
//
// Exact mode (the default) writes every admission to the shared state
// (combining the writes of concurrent acquisitions: see Coalescing). [Lease] mode
// takes a batch of units per limit into a local reservoir and serves
// acquisitions from it without a round trip, giving back what is unused when
// the batch expires (SetOptions.LeaseTTL). Batches are recorded so that the
// fleet-wide total still never exceeds capacity: window algorithms count a
// batch at the end of its validity, bucket algorithms stop refilling over
// units that are out in reservoirs until their lease is settled (or, if the
// process died, expires).
//
// ResourceLimit slots of a shared set are leases: a keepalive renews them
// while they are held, so a live holder keeps its slots however long it works,
// and the slots of a process that dies come back within
// SetOptions.ResourceLeaseTTL+MaxSkew with nobody's help.
//
// Processes' clocks may differ by up to SetOptions.MaxSkew (100ms by default).
// Windowed admissions are recorded MaxSkew later than they happen and leases
// are judged expired MaxSkew after their end, so skew within that bound never
// over-admits; the price is up to MaxSkew of extra window. Bucket algorithms
// keep a state clock that never goes back: a process whose clock runs ahead
// by d can bring refill forward by at most d, once, and a bucket never goes
// negative.
//
// [Set.Close] stops the set's background work and gives back leased units; it
// does not release acquisitions still held (their Release keeps working, and
// their resource slots expire if nobody releases them).
//
// A program that does not use a set can still see it: ReadState turns the
// value of a set's key, read or watched in the bucket, into the Stats the set
// would report, from the definition stored with the state. The fleet's
// dashboard (package dashboard) charts shared limits that way.
//
// # Coalescing
//
// In Exact mode (the default) the acquisitions of one set that wait at the
// same time in one process are served together: while one compare-and-set is
// in flight the others queue, and the next one takes, from the newest state,
// as many of the queue as fit, in arrival order, each wholly or not at all.
// A busy set therefore costs one write per batch instead of one per
// acquisition, and since each batch is one transaction the fleet-wide count
// stays exact.
//
// Arrival order is kept strictly, as in golang.org/x/sync/semaphore: a
// request that does not fit stops the batch, and the requests behind it wait
// for their turn even if they would fit. A large request is thus never
// starved by a stream of small ones, and a small one may wait behind a large
// one. A TryAcquire that would have to wait its turn fails with
// [ErrWouldWait]; an Acquire whose ctx ends leaves the queue, and the next in
// line is served. The order is per process: processes sharing a set still
// race for its key.
//
// # Replicas and outages
//
// The bucket a shared set lives in is replicated: NewSet creates it with
// SetOptions.Replicas servers keeping it, by default 3 when the server belongs
// to a JetStream cluster that can place them, else 1. A bucket that exists is
// used as it is: its replicas and history are reported once per process
// (a warning) when they differ from what NewSet would have made, and can be
// changed by updating the stream behind it ("KV_" + bucket name).
//
// When the bucket cannot be written for a while (its stream electing a new
// leader after a server died, a lost quorum, a reconnection), acquisitions
// wait, retrying with backoff of up to 250ms, and go on once it is back; they
// fail only when their ctx ends, with an error wrapping ctx.Err() and naming
// the outage. NewSet waits up to 30s for the bucket the same way. A write
// whose answer was lost may have been applied: it is then redone only where
// applying it twice is harmless (an admission counted twice, a resource slot
// held twice until the next release or renewal trims the holder's lease),
// never for give-backs (refunds, unused leased units), which are dropped
// instead: an outage can cost capacity, never over-admit. A waiter that
// hears nothing from the key's watch reads the key itself every 5s.
//
// # Partitions
//
// A limit declared PerPartition gives every partition its own budget: a
// partition is a name the acquisition gives with [Set.AcquireIn], a customer
// or tenant ID for example.
//
//	set, err := limits.NewSet(opts,
//		limits.CallLimit{Window: time.Minute, Capacity: 100, PerPartition: true},
//		limits.ResourceLimit{Key: "connections", Capacity: 2, PerPartition: true})
//	acq, err := set.AcquireIn(ctx, customerID, nil) // 100 calls/min and 2 connections per customer
//
// The limits of a set are all per partition or none: an acquisition over a
// set-wide and a per-partition budget would not be atomic in a shared set.
// For a global budget as well, use a second set and acquire from it after the
// partition's. A set with per-partition limits runs in Exact mode; Acquire on
// it fails with [ErrInvalidPartition]. AcquireIn on a set without them ignores
// the partition (one warning per set).
//
// A partition's budget is made on first use, and the state is bounded:
//
//   - In memory, a partition is forgotten as soon as it is at rest, that is
//     counts nothing (windows empty, buckets full, no slot held): forgetting
//     it then changes no decision. Each acquisition looks at two other
//     partitions, round robin, so the set holds about the partitions used
//     within the last window, whatever the number ever used.
//   - In a shared set, each partition has its own key in the bucket,
//     <name>._p.<partition> (bytes other than letters, digits, '-' and '_'
//     escaped as =XX), and acquisitions of different partitions do not
//     conflict. Each write gives the key a time to live (nats-server 2.11 and
//     later, in a bucket made with per-message TTL, as NewSet makes it): the
//     longer of the longest window and ResourceLeaseTTL, plus twice MaxSkew
//     and a second, in whole seconds. Past it the state is at rest and the
//     server removes the key. Without per-message TTL (older servers, or a
//     bucket made without it; NewSet warns) the keys of idle partitions stay
//     in the bucket. A process caches the keys it uses and forgets those
//     unused for a minute that hold nothing of its own.
//
// [Set.Stats] of a partitioned set reports a fresh partition and, in
// Extra["partitions"], how many partitions this process keeps state for;
// [Set.StatsIn] reports one partition.
//
// # Pools of sets and workers
//
// A [Pool] spreads acquisitions over several sets, one per account or region
// for example: each acquisition picks one set, in round robin or at random,
// and waits on it alone. Pool.ForWorker(i) gives worker i a view whose round
// robin starts at set i. [Noop] is the provider of workers configured without
// limits: it admits everything at once without allocating.
//
// # Errors
//
//   - [ErrInvalidLimit]: a bad limit, set or pool definition (NewSet, NewPool,
//     UnmarshalLimits), including a shared set whose stored limits differ.
//   - [ErrInvalidAmount]: a negative, non-finite or fractional-where-whole
//     amount in a request or usage.
//   - [ErrExceedsCapacity]: a request that can never fit; an
//     [*ExceedsCapacityError] names the limit.
//   - [ErrWouldWait]: TryAcquire found the request does not fit now.
//   - [ErrNotUpdated]: Release found required updates missing (after releasing
//     everything); a [*NotUpdatedError] names the keys.
//   - [ErrReleased]: Update after Release.
//   - [ErrClosed]: Acquire on a closed set, or a waiter when the set closed.
//   - [ErrInvalidPartition]: Acquire on a set with per-partition limits, or
//     AcquireIn with an empty partition or one longer than MaxPartitionLen.
//   - context.Canceled, context.DeadlineExceeded (wrapped): Acquire's ctx ended
//     while it waited, also for the bucket to come back after an outage.
//   - Errors from NATS (wrapped, with the set's name) when a shared set cannot
//     use its bucket for a reason other than an outage.
package limits
