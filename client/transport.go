package client

import (
	"context"

	"github.com/natsfleet/natsfleet/fleet"
)

// A transport carries a pool's calls to its workers: goroutines of this process (thread, asyncio and sync pools,
// local.go) or workers reached over NATS (process, fleet and attached pools, remote.go). The pool's dispatcher
// (dispatch.go) picks a worker for each call and hands the call to it; the transport adds the workers it starts or
// discovers with Pool.admit, takes away those it loses with Pool.drop, and completes every call it was handed.
type transport interface {
	// start starts the pool's worker of the given index and returns it once it serves.
	start(ctx context.Context, index int) (worker, error)
	// prepare readies a call before dispatch: argument conversion for in-process workers, encoding for remote
	// ones. An error fails the call without dispatching it.
	prepare(c *call) error
	// run sizes the run in which the dispatcher hands consecutive calls to one worker (runs.go): 1 hands out each
	// call on its own. whole says the run's last call should send what the worker holds back.
	run(inFlight int64, workers int) (n int, whole bool)
	// waiting is told that a caller is about to wait for a call, so that calls held back to travel together leave
	// now instead of at their timer.
	waiting()
	// cancel tells the worker that was sent c that c was cancelled.
	cancel(c *call)
	// close releases what the transport holds once the pool's workers have stopped.
	close(ctx context.Context) error
	// report adds the transport's own figures to the pool's stats.
	report(s *PoolStats)
}

// worker is the pool's end of one worker, wherever it runs. Its methods never block on the worker, but stop.
type worker interface {
	id() string
	// send hands c to the worker, behind the calls it holds. A failure completes c.
	send(c *call)
	// sendUrgent runs c at once, beside the call the worker is busy with (Broadcast, health checks).
	sendUrgent(c *call)
	// abort fails the calls the worker holds with err at once and cancels their methods' contexts: Stop's context
	// ended before they finished.
	abort(err error)
	// stop drains and stops the worker (see Pool.Stop for the ctx rules).
	stop(ctx context.Context) error
	stats() fleet.WorkerStats
}
