package client

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/natsfleet/natsfleet/internal/wire"
)

// Liveness of remote workers. A worker is ready at its first heartbeat, and lost when it has been silent for three
// of its heartbeat intervals while the pool's connection was up, or when its process exits. A lost worker's calls
// fail with ErrWorkerLost, it is fenced (fence.go) and told to stop, and the pool starts a replacement, trying again
// with backoff until one serves. While the pool's own connection is down nothing is lost for silence; once it is
// back, every worker has three intervals to be heard from again, and the pool reconciles its calls with each
// (reconcile.go). A connection down for a whole lease fails the calls in flight with ErrConnectionLost: by then the
// pool's workers have stopped. The pool publishes a keepalive every interval; a worker it started stops when it has
// heard none for its lease (ten intervals).

// leaseBeats is the lease of a pool's workers, in heartbeat intervals: how long they outlive a silent pool, and how
// long the pool waits for its connection before it gives up the calls in flight.
const leaseBeats = 10

// interval is the worker's heartbeat interval: the pool's, or the longer one the worker says it keeps.
func (w *remoteWorker) interval() time.Duration {
	iv := w.t.pool.opts.HeartbeatInterval
	if hb := w.beat.Load(); hb != nil && hb.Interval > iv {
		iv = hb.Interval
	}
	return iv
}

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
		switch {
		case t.mux.fences.of(hb.WorkerID) != 0:
			t.tellLost(hb.WorkerID) // a worker declared lost lives on: it must stop
		case t.attach && hb.Pool == "" && !hb.Stopping:
			t.join(hb)
		}
		return
	}
	w.lastSeen.Store(time.Now().UnixNano())
	prev := w.beat.Swap(&hb)
	if prev == nil {
		w.chooseRoute(&hb) // before it is ready: its first call takes the route it keeps
	}
	if w.standing {
		w.beatLoad(&hb)
	}
	w.readyOne.Do(func() { close(w.ready) })
	// A worker whose connection came back may have missed calls or lost replies.
	if old := w.rec.conn.Swap(hb.Conn); prev != nil && old != hb.Conn {
		w.rec.needed.Store(true)
	}
	if w.rec.needed.Load() && !w.rec.running.Load() {
		go w.reconcile()
	}
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
	w.rec.conn.Store(hb.Conn)
	w.readyOne.Do(func() { close(w.ready) })
	t.workers[hb.WorkerID] = w
	t.mu.Unlock()
	if !t.pool.admit(w) {
		t.forget(w)
	}
}

// monitor follows the pool's connection and its workers' heartbeats: it declares lost the workers whose heartbeats
// stopped, reconciles overdue calls, and publishes the pool's keepalive.
func (t *remoteTransport) monitor() {
	defer close(t.monDone)
	p := t.pool
	iv := p.opts.HeartbeatInterval
	tick := time.NewTicker(iv / 4)
	defer tick.Stop()
	status := t.nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING, nats.DISCONNECTED)
	defer t.nc.RemoveStatusListener(status)
	if !t.nc.IsConnected() {
		t.downSince = time.Now().UnixNano()
	}
	keepalive := p.kind != nil // a pool that started its workers keeps them alive; Attach's outlive it
	var ticks int
	last := time.Now().UnixNano()
	for {
		select {
		case <-t.quit:
			return
		case s := <-status:
			t.connChanged(s)
			continue
		case <-tick.C:
		}
		now := time.Now().UnixNano()
		// A tick far later than its interval: this process did not run (frozen, starved), and heard nothing.
		// Like a connection that came back, that proves nothing about the workers.
		if away := now - last; away > int64(2*iv) {
			t.heardNothingFor(now)
		}
		last = now
		if ticks++; keepalive && ticks%4 == 0 {
			_ = t.nc.Publish(t.subj.PoolKeepalive(p.id), nil)
		}
		if t.downSince != 0 {
			if down := time.Duration(now - t.downSince); down > leaseBeats*iv {
				t.giveUp(down)
			}
			continue
		}
		var silent []*remoteWorker
		t.mu.Lock()
		for _, w := range t.workers {
			// A worker still starting is bounded by its start's timeout, not by heartbeats it has not begun to send.
			if !w.isReady() {
				continue
			}
			if now-w.lastSeen.Load() > int64(3*w.interval()) {
				silent = append(silent, w)
			} else if !w.rec.running.Load() && w.overdue(now) {
				go w.reconcile()
			}
		}
		t.mu.Unlock()
		for _, w := range silent {
			t.lose(w, fmt.Sprintf("no heartbeat for %s", 3*w.interval()))
		}
	}
}

// connChanged follows the pool's connection: while it is down, silence proves nothing; once it is back, every worker
// has three intervals to be heard from again, and the pool reconciles its calls with each.
func (t *remoteTransport) connChanged(s nats.Status) {
	now := time.Now().UnixNano()
	switch s {
	case nats.RECONNECTING, nats.DISCONNECTED:
		if t.downSince == 0 {
			t.downSince = now
		}
	case nats.CONNECTED:
		if t.downSince == 0 {
			return
		}
		t.downSince = 0
		t.heardNothingFor(now)
		t.reconcileAll()
	}
}

// reconcileAll reconciles with every worker now, not at its next heartbeat: the pool's connection is back.
func (t *remoteTransport) reconcileAll() {
	t.mu.Lock()
	for _, w := range t.workers {
		if w.isReady() && !w.rec.running.Load() {
			go w.reconcile()
		}
	}
	t.mu.Unlock()
}

// heardNothingFor gives every worker three intervals from now to be heard from again, and has the pool reconcile
// its calls with each at its next heartbeat: for a while the pool could hear nothing.
func (t *remoteTransport) heardNothingFor(now int64) {
	t.mu.Lock()
	for _, w := range t.workers {
		w.lastSeen.Store(now)
		w.rec.needed.Store(true)
	}
	t.mu.Unlock()
}

// giveUp fails the calls in flight on every worker once the pool's connection has been down for a whole lease: the
// workers have stopped by now, and no reply can come.
func (t *remoteTransport) giveUp(down time.Duration) {
	err := fmt.Errorf("%w: down for %s", ErrConnectionLost, down.Round(time.Millisecond))
	t.mu.Lock()
	ws := make([]*remoteWorker, 0, len(t.workers))
	for _, w := range t.workers {
		ws = append(ws, w)
	}
	t.mu.Unlock()
	for _, w := range ws {
		w.mu.Lock()
		calls := make([]*call, 0, len(w.inflight))
		for c := range w.inflight {
			calls = append(calls, c)
		}
		w.mu.Unlock()
		for _, c := range calls {
			w.fail(c, err)
		}
	}
}

// lose takes a dead worker out of rotation, fails its in-flight calls with ErrWorkerLost, fences it and starts a
// replacement.
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
	// Fenced before its calls fail: a caller who hears of the failure may send them elsewhere.
	t.mux.fences.fence(w.wid, t.mux.ids.Load())
	t.forget(w)
	if w.proc != nil {
		w.proc.kill()
	} else {
		t.tellLost(w.wid)
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
		if c.rc.idempotent && !c.rc.urgent && !c.settled() && !p.stopping.Load() && p.live.Load() > 0 {
			c.rc.w.Store(nil)
			c.rc.sentAt.Store(0)
			c.rc.resend, c.rc.endsRun = false, false
			p.failover(c)
			continue
		}
		c.complete(nil, err)
	}
	if replace {
		go t.replace(w.index)
	} else {
		p.failQueuedIfNoWorkers()
	}
}

// tellLost tells a worker declared lost to stop at once, cancelling what it holds: should it be alive after all, it
// frees its agent's capacity. A worker that misses the message and lives on is told again at its next heartbeat.
func (t *remoteTransport) tellLost(id string) {
	o := wire.GetOut(t.subj.Control(id))
	o.Set(wire.FieldControl, wire.ControlStop)
	o.Set(wire.FieldAbort, "1")
	_ = t.nc.PublishMsg(&o.Msg)
	o.Put()
}

// Replacements back off from replaceBackoff to maxReplaceBackoff between attempts.
const (
	replaceBackoff    = 100 * time.Millisecond
	maxReplaceBackoff = 10 * time.Second
)

// replace starts a worker in place of a lost one, trying again with backoff until one serves or the pool stops.
func (t *remoteTransport) replace(index int) {
	defer t.repl.Done()
	p := t.pool
	t.replacing.Add(1)
	defer t.replacing.Add(-1)
	wait := replaceBackoff
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(p.ctx, p.opts.StartTimeout)
		w, err := t.start(ctx, index)
		cancel()
		if err == nil {
			if !p.admit(w) {
				_ = w.stop(context.Background())
			}
			return
		}
		if p.ctx.Err() != nil {
			return
		}
		t.lastStartErr.Store(err.Error())
		p.opts.Logger.Error("client: replace lost worker", "pool", p.id, "index", index, "attempt", attempt,
			"retry_in", wait, "err", err)
		p.failQueuedIfNoWorkers()
		select {
		case <-time.After(wait):
		case <-p.ctx.Done():
			return
		}
		wait = min(2*wait, maxReplaceBackoff)
	}
}
