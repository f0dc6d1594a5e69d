package client

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/natsfleet/natsfleet/internal/wire"
)

// Liveness of remote workers: a worker is ready at its first heartbeat, and lost when it has been silent for three
// heartbeat intervals or its process exits. A lost worker's calls fail with ErrWorkerLost and the pool starts a
// replacement.

func (w *remoteWorker) waitReady(ctx context.Context) error {
	var exited <-chan struct{}
	if w.proc != nil {
		exited = w.proc.exited
	}
	select {
	case <-w.ready:
		return nil
	case <-exited:
		return fmt.Errorf("client: worker %s exited before serving: %w", w.wid, w.proc.exitErr())
	case <-ctx.Done():
		return fmt.Errorf("client: worker %s did not start: %w", w.wid, ctx.Err())
	}
}

func (w *remoteWorker) isReady() bool {
	select {
	case <-w.ready:
		return true
	default:
		return false
	}
}

func (t *remoteTransport) onBeat(msg *nats.Msg) {
	var hb wire.Heartbeat
	if err := msgpack.Unmarshal(msg.Data, &hb); err != nil {
		return
	}
	t.mu.Lock()
	w := t.workers[hb.WorkerID]
	t.mu.Unlock()
	if w == nil {
		if t.attach && hb.Pool == "" && !hb.Stopping {
			t.join(hb)
		}
		return
	}
	w.lastSeen.Store(time.Now().UnixNano())
	w.beat.Store(&hb)
	w.readyOne.Do(func() { close(w.ready) })
}

// join adds a standing worker that announced itself to an attached pool.
func (t *remoteTransport) join(hb wire.Heartbeat) {
	t.mu.Lock()
	if t.workers[hb.WorkerID] != nil {
		t.mu.Unlock()
		return
	}
	w := t.newWorker(hb.WorkerID, 0)
	w.standing, w.agent = true, hb.Agent
	w.beat.Store(&hb)
	w.readyOne.Do(func() { close(w.ready) })
	t.workers[hb.WorkerID] = w
	t.mu.Unlock()
	if !t.pool.admit(w) {
		t.forget(w)
	}
}

// monitor declares lost the workers whose heartbeats stopped.
func (t *remoteTransport) monitor() {
	defer close(t.monDone)
	iv := t.pool.opts.HeartbeatInterval
	tick := time.NewTicker(iv / 4)
	defer tick.Stop()
	for {
		select {
		case <-t.quit:
			return
		case <-tick.C:
		}
		deadline := time.Now().Add(-3 * iv).UnixNano()
		t.mu.Lock()
		var silent []*remoteWorker
		for _, w := range t.workers {
			// A worker still starting is bounded by its start's timeout, not by heartbeats it has not begun to send.
			if w.isReady() && w.lastSeen.Load() < deadline {
				silent = append(silent, w)
			}
		}
		t.mu.Unlock()
		for _, w := range silent {
			t.lose(w, fmt.Sprintf("no heartbeat for %s", 3*iv))
		}
	}
}

// lose takes a dead worker out of rotation, fails its in-flight calls with ErrWorkerLost and starts a replacement.
func (t *remoteTransport) lose(w *remoteWorker, reason string) {
	w.mu.Lock()
	if w.lost || w.stopping {
		w.mu.Unlock()
		return
	}
	w.lost = true
	calls := make([]*call, 0, len(w.inflight))
	for c := range w.inflight {
		calls = append(calls, c)
	}
	clear(w.inflight)
	w.mu.Unlock()
	t.forget(w)
	if w.proc != nil {
		w.proc.kill()
	}
	p := t.pool
	wasIn := p.drop(w)
	replace := wasIn && !w.standing && !p.opts.OnDemand && !p.stopping.Load()
	if replace {
		t.repl.Add(1)
	}
	p.opts.Logger.Warn("client: worker lost", "pool", p.id, "worker", w.wid, "reason", reason, "in_flight", len(calls))
	err := fmt.Errorf("%w: %s: %s", ErrWorkerLost, w.wid, reason)
	for _, c := range calls {
		t.mux.forget(c)
		c.complete(nil, err)
	}
	if replace {
		go t.replace(w.index)
	} else {
		p.failQueuedIfNoWorkers()
	}
}

// replace starts a worker in place of a lost one.
func (t *remoteTransport) replace(index int) {
	defer t.repl.Done()
	p := t.pool
	ctx, cancel := context.WithTimeout(p.ctx, p.opts.StartTimeout)
	defer cancel()
	w, err := t.start(ctx, index)
	if err != nil {
		p.opts.Logger.Error("client: replace lost worker", "pool", p.id, "index", index, "err", err)
		p.failQueuedIfNoWorkers()
		return
	}
	if !p.admit(w) {
		_ = w.stop(ctx)
	}
}
