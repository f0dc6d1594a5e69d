package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// Control of remote workers, on their control subjects: cancel a call, ask for stats, stop.

// cancel tells the worker c was sent to that c was cancelled.
func (t *remoteTransport) cancel(c *call) {
	if c.rc == nil {
		return
	}
	w := c.rc.w.Load()
	if w == nil {
		return // not sent yet: send drops it
	}
	w.done(c)
	o := wire.GetOut(t.subj.Control(w.wid))
	o.Set(wire.FieldControl, wire.ControlCancel)
	o.Set(wire.FieldCallID, c.callID())
	_ = t.nc.PublishMsg(&o.Msg)
	o.Put()
}

func (w *remoteWorker) stats() fleet.WorkerStats {
	t := w.t
	o := wire.GetOut(t.subj.Control(w.wid))
	o.Set(wire.FieldControl, wire.ControlStats)
	reply, err := t.nc.RequestMsg(&o.Msg, 2*time.Second)
	o.Put()
	var ws fleet.WorkerStats
	if err == nil && msgpack.Unmarshal(reply.Data, &ws) == nil {
		return ws
	}
	// An unreachable worker still reports what its last heartbeat said.
	ws = fleet.WorkerStats{ID: w.wid, Index: w.index, Kind: t.pool.name}
	if hb := w.beat.Load(); hb != nil {
		ws.Calls, ws.InFlight = hb.Calls, hb.InFlight
	}
	w.mu.Lock()
	ws.Stopped = w.lost || w.stopping
	w.mu.Unlock()
	return ws
}

// abort fails the calls the worker holds with err and cancels them on the worker.
func (w *remoteWorker) abort(err error) {
	w.mu.Lock()
	calls := make([]*call, 0, len(w.inflight))
	for c := range w.inflight {
		calls = append(calls, c)
	}
	w.mu.Unlock()
	for _, c := range calls {
		c.cancel(err)
	}
}

// stop stops the worker: drained by a control message, or cancelled first when ctx has ended. Standing workers
// joined with Attach are left running.
func (w *remoteWorker) stop(ctx context.Context) error {
	w.mu.Lock()
	w.stopping = true
	w.mu.Unlock()
	abort := ctx.Err() != nil
	if abort {
		w.abort(fmt.Errorf("%w before the call finished: %w", ErrPoolStopped, ctx.Err()))
	}
	w.t.forget(w)
	if w.standing {
		return nil
	}
	o := wire.GetOut(w.t.subj.Control(w.wid))
	defer o.Put()
	o.Set(wire.FieldControl, wire.ControlStop)
	if abort {
		o.Set(wire.FieldAbort, "1")
	}
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok && !abort {
		timeout = max(time.Until(dl), time.Second)
	}
	var err error
	if w.t.nc.IsConnected() {
		_, err = w.t.nc.RequestMsg(&o.Msg, timeout)
	} else {
		// Nobody can be told; a child learns from its stdin closing.
		err = nats.ErrConnectionClosed
	}
	if w.proc != nil {
		return w.proc.stop(timeout)
	}
	if err != nil && !errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("client: stop worker %s: %w", w.wid, err)
	}
	return nil
}
