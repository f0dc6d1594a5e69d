package fleet

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// connWatch follows one connection for the workers it serves: how many times it came back after it dropped (the
// workers' heartbeats report it, so that their callers reconcile), how long it was down each time (longer than two
// heartbeat intervals, and callers may have declared its workers lost: fence.go), and the keepalives of the pools its
// workers belong to (leases). One goroutine a connection, whatever the number of workers on it.
type connWatch struct {
	nc        *nats.Conn
	gen       atomic.Uint32 // reconnects so far
	downSince atomic.Int64  // Unix nanoseconds; 0 while connected
	status    chan nats.Status
	done      chan struct{}

	mu     sync.Mutex
	hosted map[*hosted]struct{}
	pools  map[string]*poolLease // by keepalive subject
}

// poolLease is what a connection's workers of one pool know of it: when they last heard its keepalive.
type poolLease struct {
	sub     *nats.Subscription
	last    atomic.Int64 // Unix nanoseconds
	lease   time.Duration
	workers map[*hosted]struct{}
}

// leaseTick is how often a connection's leases are checked: a lease ends at most this late.
const leaseTick = 100 * time.Millisecond

var watches = struct {
	sync.Mutex
	m map[*nats.Conn]*connWatch
}{m: make(map[*nats.Conn]*connWatch)}

// watchConn registers h with its connection's watch, starting the watch for the connection's first worker.
func watchConn(h *hosted) *connWatch {
	watches.Lock()
	defer watches.Unlock()
	w := watches.m[h.nc]
	if w == nil {
		w = &connWatch{nc: h.nc, status: h.nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING, nats.DISCONNECTED,
			nats.CLOSED), done: make(chan struct{}), hosted: make(map[*hosted]struct{}),
			pools: make(map[string]*poolLease)}
		if !h.nc.IsConnected() {
			w.downSince.Store(time.Now().UnixNano())
		}
		watches.m[h.nc] = w
		go w.run()
	}
	w.mu.Lock()
	w.hosted[h] = struct{}{}
	w.mu.Unlock()
	return w
}

// unwatch removes h; the watch ends with the connection's last worker.
func (w *connWatch) unwatch(h *hosted) {
	watches.Lock()
	w.mu.Lock()
	delete(w.hosted, h)
	for subj, pl := range w.pools {
		if _, ok := pl.workers[h]; ok {
			delete(pl.workers, h)
			if len(pl.workers) == 0 {
				_ = pl.sub.Unsubscribe()
				delete(w.pools, subj)
			}
		}
	}
	last := len(w.hosted) == 0
	w.mu.Unlock()
	if last {
		delete(watches.m, w.nc)
		w.nc.RemoveStatusListener(w.status) // closes the channel: run returns
	}
	watches.Unlock()
	if last {
		<-w.done
	}
}

// follow makes h stop when the pool whose keepalives arrive on subject has been silent for lease, counted while the
// connection is up.
func (w *connWatch) follow(h *hosted, subject string, lease time.Duration) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	pl := w.pools[subject]
	if pl == nil {
		pl = &poolLease{lease: lease, workers: make(map[*hosted]struct{})}
		pl.last.Store(time.Now().UnixNano())
		sub, err := w.nc.Subscribe(subject, func(*nats.Msg) { pl.last.Store(time.Now().UnixNano()) })
		if err != nil {
			return err
		}
		pl.sub = sub
		w.pools[subject] = pl
	}
	pl.workers[h] = struct{}{}
	return nil
}

func (w *connWatch) run() {
	defer close(w.done)
	tick := time.NewTicker(leaseTick)
	defer tick.Stop()
	for {
		select {
		case s, ok := <-w.status:
			if !ok {
				return
			}
			w.changed(s)
		case now := <-tick.C:
			w.checkLeases(now)
		}
	}
}

func (w *connWatch) changed(s nats.Status) {
	switch s {
	case nats.RECONNECTING, nats.DISCONNECTED:
		w.downSince.CompareAndSwap(0, time.Now().UnixNano())
	case nats.CONNECTED:
		since := w.downSince.Swap(0)
		if since == 0 {
			return
		}
		w.gen.Add(1)
		now := time.Now()
		down := now.Sub(time.Unix(0, since))
		w.mu.Lock()
		hs := make([]*hosted, 0, len(w.hosted))
		for h := range w.hosted {
			hs = append(hs, h)
		}
		// The pools could not be heard while the connection was down: their leases start over.
		for _, pl := range w.pools {
			pl.last.Store(now.UnixNano())
		}
		w.mu.Unlock()
		for _, h := range hs {
			h.reconnected(down)
		}
	}
}

// checkLeases stops the workers of pools silent for longer than their lease, while the connection is up.
func (w *connWatch) checkLeases(now time.Time) {
	if w.downSince.Load() != 0 {
		return
	}
	var expired []*hosted
	w.mu.Lock()
	for _, pl := range w.pools {
		if now.Sub(time.Unix(0, pl.last.Load())) > pl.lease {
			for h := range pl.workers {
				expired = append(expired, h)
			}
		}
	}
	w.mu.Unlock()
	for _, h := range expired {
		go h.expire("its pool has been silent for its lease") // stopping unwatches, which waits for this goroutine
	}
}
