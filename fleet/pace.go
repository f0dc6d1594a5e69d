package fleet

import (
	"sync/atomic"
	"time"
)

// inlineBudget is the longest typical run of a method whose calls may run inline, in the goroutine that receives
// calls, instead of being handed to the worker's goroutine. While a call runs inline the calls behind it wait in
// nats.go's buffer, where a wire.ControlCancel is applied only when they come out and heartbeats do not count them, so
// only methods that run this briefly run inline; a longer method does not notice the handoff's few microseconds.
const inlineBudget = 200 * time.Microsecond

// pace is what a worker learned of how long one method runs: a moving average of its run times.
type pace struct {
	avg atomic.Int64 // nanoseconds; -1 before the first run
}

func newPace() *pace {
	p := &pace{}
	p.avg.Store(-1)
	return p
}

// short reports whether the method's calls may run inline: it ran, and typically within inlineBudget. A method not
// yet run is not short, so a first call that runs long never blocks the calls behind it.
func (p *pace) short() bool {
	a := p.avg.Load()
	return a >= 0 && a <= int64(inlineBudget)
}

// observe adds a run of d. The average weighs the latest run 1/8: an odd slow run (a GC pause) does not send a
// short method back to the worker's goroutine, while one long call is enough to (a call of a minute lifts the
// average to over 7s).
func (p *pace) observe(d time.Duration) {
	a := p.avg.Load()
	if a < 0 {
		a = int64(d)
	} else {
		a += (int64(d) - a) / 8
	}
	p.avg.Store(a) // runs of one method seldom overlap; a lost update only delays what the average learns
}
