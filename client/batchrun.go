package client

import (
	"sync/atomic"
	"time"
)

// batchRuns sizes the runs in which a pool of batching workers (Process and Fleet modes) hands out its calls: the
// balancer gives the worker it picks the next run calls (balancer.Balancer.PickRun), and the run's last call sends
// the batch. Handing calls out one at a time to every worker in turn would put a slice of each burst on every
// worker: a caller that waits for its calls in order (a ring of futures, a pipeline) then waits for the slowest
// worker every time, and the workers answer in lockstep, idle while the caller refills them all. In runs, each
// worker holds a stretch of the caller's calls, answers it in one message, and is refilled while the others work.
//
// A run is the pool's calls in flight shared among its workers (so that every worker keeps getting calls), less than
// twice the calls its workers lately answered per reply message, and at most maxBatch. Slow calls, answered one at a
// time, are thus still handed out one at a time, so a burst of them spreads evenly; short calls travel in batches
// anyway (remoteWorker.publish), and as their replies grow, so do the runs, up to the pool's share.
type batchRuns struct {
	// The most calls the pool has had in flight lately: the larger of the peaks of the current and of the previous
	// span of peakSpan reply messages, so that it follows a pipeline's depth rather than the dips between its
	// refills, and forgets a depth two spans after it ended. Updates race (a load, then a store); the figure only
	// sizes runs.
	peak, lastPeak atomic.Int64
	replies        atomic.Int64 // reply messages so far: every peakSpan of them starts a span
	// perReply is a moving average of the calls answered per reply message, in sixteenths.
	perReply atomic.Int64
	// lastReply is when the last reply message came (Unix nanoseconds).
	lastReply atomic.Int64
}

const (
	// peakSpan is the number of reply messages over which batchRuns remembers a peak: dozens of a pipeline's
	// refills.
	peakSpan = 256
	// runIdle is how long a pool with no call in flight waits before its runs start over, as a new pool's do: what
	// comes after a pause may be a burst of slow calls, which runs sized by the calls before would pile onto a few
	// workers. A pipeline whose calls all came back before it sent more (every worker answered at once) has not
	// paused.
	runIdle = 10 * time.Millisecond
)

func newBatchRuns() *batchRuns {
	r := &batchRuns{}
	r.perReply.Store(16)
	return r
}

// size is the run for the next pick, with pending calls in flight on workers live workers. whole reports a run of
// the pool's full share: its last call closes a batch. A run cut short because calls have lately been answered a few
// at a time is only a way to spread them; its calls still gather in batches as they would one by one.
func (r *batchRuns) size(pending int64, workers int) (run int, whole bool) {
	peak := r.peak.Load()
	if pending > peak {
		r.peak.Store(pending)
		peak = pending
	}
	peak = max(peak, r.lastPeak.Load())
	if workers <= 0 {
		return 1, false
	}
	share := min((peak+int64(workers)-1)/int64(workers), maxBatch)
	if answered := max(r.perReply.Load()/8-1, 1); answered < share {
		return int(answered), false
	}
	return int(share), true
}

// wake is called at time now with a call submitted to a pool that had none in flight: it starts the runs over when
// the pool has been idle for runIdle.
func (r *batchRuns) wake(now int64) {
	if now-r.lastReply.Load() < int64(runIdle) {
		return
	}
	r.peak.Store(0)
	r.lastPeak.Store(0)
	r.perReply.Store(16)
}

// replied records a reply message that answered n calls at time now.
func (r *batchRuns) replied(n int, now int64) {
	r.lastReply.Store(now)
	if r.replies.Add(1)%peakSpan == 0 {
		r.lastPeak.Store(r.peak.Swap(0))
	}
	// A step of an eighth of the way, rounded away from the average, so that it reaches a steady n.
	avg := r.perReply.Load()
	d := int64(n)*16 - avg
	if d > 0 {
		d += 7
	} else {
		d -= 7
	}
	r.perReply.Store(avg + d/8)
}
