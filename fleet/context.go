package fleet

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/natsfleet/natsfleet/internal/actor"
	"github.com/natsfleet/natsfleet/internal/wire"
	"github.com/natsfleet/natsfleet/limits"
)

type envKey struct{}

// callEnv is what a method's context carries: who runs it, its limits and where progress goes. One per call, built
// only for methods that take a context.
type callEnv struct {
	worker *actor.Worker
	task   *actor.Task
}

func env(ctx context.Context) *callEnv {
	e, _ := ctx.Value(envKey{}).(*callEnv)
	return e
}

// Limits returns the limits shared by the pool that runs the calling method: the set or pool of sets given in
// client.Options, with this worker's round-robin offset. Outside a worker, or when the pool has no limits, it
// returns limits.Noop, whose Acquire succeeds at once; methods can therefore always write
//
//	acq, err := fleet.Limits(ctx).Acquire(ctx, limits.Request{"tokens": 100})
func Limits(ctx context.Context) limits.Provider {
	if e := env(ctx); e != nil && e.worker.Limits() != nil {
		return e.worker.Limits()
	}
	return limits.Noop
}

// Info describes the worker and call a method runs in.
type Info struct {
	Kind        string // registered kind name
	WorkerID    string // unique in the fleet
	WorkerIndex int    // index in its pool (the limits' round-robin offset)
	CallID      string
	Method      string
}

// CallInfo returns the worker and call the method runs in; ok is false outside a worker.
func CallInfo(ctx context.Context) (info Info, ok bool) {
	e := env(ctx)
	if e == nil {
		return Info{}, false
	}
	return Info{Kind: e.worker.Kind(), WorkerID: e.worker.ID(), WorkerIndex: e.worker.Index(),
		CallID: e.task.CallID, Method: e.task.Method.Name()}, true
}

// ProgressInterval is the least time between two progress events of one bar; updates in between are merged, and the
// last state is always delivered, so a tight loop cannot flood the connection.
const ProgressInterval = 100 * time.Millisecond

// Bar reports the progress of one piece of work inside a method to the caller, wherever the method runs. Its
// methods are safe for concurrent use; a Bar from a context with no caller listening discards what it is told.
type Bar struct {
	sink  func(wire.Progress)
	mu    sync.Mutex
	ev    wire.Progress
	last  time.Time
	timer *time.Timer
	dirty bool
}

// Progress starts a progress bar of total steps (0 when unknown) described by desc for the calling method. The
// caller sees it as a terminal bar or through client.Options.Progress.
func Progress(ctx context.Context, total int64, desc string) *Bar {
	e := env(ctx)
	if e == nil || e.task.Progress == nil {
		return &Bar{}
	}
	n := e.task.NextBar()
	b := &Bar{sink: e.task.Progress}
	b.ev = wire.Progress{Bar: e.task.CallID + "/" + strconv.Itoa(int(n)), Desc: desc, Total: total}
	b.mu.Lock()
	b.emitLocked(time.Now())
	b.mu.Unlock()
	return b
}

// Add advances the bar by n steps.
func (b *Bar) Add(n int64) { b.update(func(ev *wire.Progress) { ev.N += n }) }

// Set moves the bar to n steps.
func (b *Bar) Set(n int64) { b.update(func(ev *wire.Progress) { ev.N = n }) }

// SetTotal changes the number of steps.
func (b *Bar) SetTotal(total int64) { b.update(func(ev *wire.Progress) { ev.Total = total }) }

// Finish marks the bar complete and delivers its final state at once.
func (b *Bar) Finish() {
	if b.sink == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ev.Done {
		return
	}
	if b.timer != nil {
		b.timer.Stop()
	}
	b.ev.Done = true
	if b.ev.Total > 0 && b.ev.N < b.ev.Total {
		b.ev.N = b.ev.Total
	}
	b.emitLocked(time.Now())
}

func (b *Bar) update(f func(*wire.Progress)) {
	if b.sink == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ev.Done {
		return
	}
	f(&b.ev)
	now := time.Now()
	if b.ev.Total > 0 && b.ev.N >= b.ev.Total {
		b.ev.Done = true
		if b.timer != nil {
			b.timer.Stop()
		}
		b.emitLocked(now)
		return
	}
	if wait := ProgressInterval - now.Sub(b.last); wait > 0 {
		// Merge into the next event; a timer makes sure the latest state is not lost if no update follows.
		b.dirty = true
		if b.timer == nil {
			b.timer = time.AfterFunc(wait, b.flush)
		}
		return
	}
	b.emitLocked(now)
}

func (b *Bar) flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.timer = nil
	if b.dirty && !b.ev.Done {
		b.emitLocked(time.Now())
	}
}

func (b *Bar) emitLocked(now time.Time) {
	b.ev.Seq++
	b.last, b.dirty = now, false
	b.sink(b.ev)
}
