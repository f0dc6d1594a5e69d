// Package balancer chooses which worker of a pool gets the next call.
//
// It implements concurry's four load-balancing algorithms as pure data
// structures: no NATS, no goroutines, no clocks. A [Balancer] manages n
// slots (one per worker, numbered from 0); the pool's dispatcher calls
// [Balancer.Pick] when it has a call to send and [Balancer.Done] when that
// call ends, and the Balancer keeps the per-slot counts its algorithm needs:
//
//	b, err := balancer.New(balancer.LeastActive, 5, balancer.Options{})
//	slot, ok := b.Pick(maxQueued) // ok=false: every worker is at its cap; keep the call queued
//	... send the call to worker slot ...
//	b.Done(slot) // when its reply (or failure) arrives
//
// Pick's limit is the per-worker in-flight cap (concurry's max_queued_tasks):
// slots at the cap are not eligible, and Pick reports ok=false instead of
// over-filling one. Because the pool keeps one queue and asks the Balancer
// at dispatch time, the choice always reflects current load.
//
// Workers come and go: [Balancer.Add] makes a slot for a new worker and
// [Balancer.Remove] retires one (a lost worker); calls already in flight on a
// removed slot still end with Done.
//
// # Algorithms
//
// [RoundRobin] (the default of persistent pools; aliases "rr", "round_robin")
// hands calls out in circular order: with 5 workers, calls go to 0, 1, 2, 3,
// 4, 0, 1, ... [Options].Offset moves the starting point, as concurry's
// LimitPool does with each worker's index. Slots at the cap are skipped. It
// is simple and fair when workers are alike and calls take about as long as
// each other.
//
// [LeastActive] ("active", "least_active"; concurry's LeastActiveLoad) sends
// each call to the worker with the fewest calls in flight, so it adapts to
// load as it happens: when one call is slow, the calls after it go to the
// other workers instead of queueing behind it. Use it for calls with variable
// execution times, heterogeneous workers, and to avoid overloading a slow
// worker.
//
// [LeastTotal] ("total", "least_total"; concurry's LeastTotalLoad) sends each
// call to the worker that has been picked the fewest times over its lifetime,
// so every worker ends up with the same number of calls in the long run: use
// it to monitor or even out total work (wear) across workers when calls cost
// about the same.
//
// [Random] ("rand", "random"; the default of on-demand pools) picks a worker
// uniformly at random among those with room. It keeps no per-worker history,
// which suits stateless workers, on-demand pools and high-throughput pools.
//
// # Keeping calls together
//
// [Balancer.Take] records a call on a slot the caller chose instead of one
// the algorithm picks, when that slot is live and has room: a caller that
// wants several calls on one worker (calls that travel together in one
// message, a session's calls) picks the first with Pick and takes the same
// slot for the rest. The counts, the cap and the statistics treat taken calls
// as picked ones.
//
// # Load from other callers
//
// Workers shared by several callers (standing workers that many clients
// attach to) are busy with calls the Balancer never saw. Balancer.SetLoad
// tells it what a slot's worker last reported of the others' calls: their
// count in flight, which LeastActive adds to the slot's own, and the calls
// served for them, which LeastTotal adds to its score. The cap still counts
// the slot's own calls only: it bounds what this caller queues on a worker.
//
// # Differences from concurry
//
// Ties. concurry's LeastActiveLoad and LeastTotalLoad break ties by the
// lowest index. Here, among slots with the same count, the one that has held
// that count longest wins (each count is a FIFO queue). On a fresh balancer
// this gives the same order, 0, 1, 2, ..., but a pool that sends one call at
// a time, each ending before the next starts, rotates 0, 1, 2, ... instead
// of sending every call to slot 0 and leaving the other workers cold.
//
// Replacement workers. A slot made by Add under LeastTotal starts its
// selection score at the lowest score among the live slots rather than at 0;
// otherwise a worker that replaces a lost one would receive every call until
// its lifetime count caught up with the others. Its reported total_calls
// still counts only its real picks.
//
// Index reuse. Add reuses a removed index only once every call in flight on
// it has ended, so a late Done for a lost worker's call is never charged to
// the worker that replaces it; otherwise it appends a new index.
//
// Stats. total_dispatched counts every pick since New (also for LeastTotal,
// where concurry reports the sum of its counters), while active_calls,
// total_active, total_calls and sum_total_calls cover live slots only.
//
// # Cost
//
// Each Balancer has its own mutex, and neither Pick nor Done allocates.
// LeastActive keeps slots in buckets by in-flight count (a doubly linked list
// per count, threaded through preallocated arrays) and LeastTotal keeps them
// in a sorted list of buckets by score, the layout of an O(1) LFU cache, so
// both pick and update in O(1) however many workers there are. One case is
// not O(1): when a LeastTotal slot that was at the cap gets room again with a
// score between other slots' scores, Done walks the distinct scores below
// it, of which there are few because the algorithm keeps scores level.
// RoundRobin and Random find the next slot with room in a bitset, one
// machine word per 64 slots; Random draws a few indices first and only
// counts the bitset when most slots are full, so its choice stays uniform
// among the slots with room. Calling Pick with a different limit than the
// previous call rebuilds these structures once, in O(n log n): a pool should
// use one limit.
package balancer
