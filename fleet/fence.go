package fleet

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/internal/actor"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// Fencing. A caller declares a worker lost when it has heard nothing from it for three heartbeat intervals, fails the
// calls it had sent, and may send them elsewhere. A worker that was frozen (SIGSTOP, a machine suspended, a starved
// process) or cut off for that long must then start none of them when it wakes up. So a worker whose heartbeats
// stalled for more than two intervals, or whose connection was down that long, is suspect: before it starts a call,
// it asks the call's caller (at the caller's reply prefix and wire.FenceToken) whether the caller still counts on
// it. The caller answers with the highest call number it had sent when it declared the worker lost, 0 if it never
// did; the worker starts no call of that caller numbered at or below it. Callers that do not answer (gone, or not
// natsfleet clients) fence nothing. The suspicion ends once the calls buffered while the worker was away have come
// through. A spawned worker fenced by its pool stops: the pool has replaced it.

// fenced is the error of a call a worker did not start because its caller had declared the worker lost.
var errFenced = errors.New("fleet: the caller declared this worker lost before the call started")

// fence is a served worker's suspicion and what its callers answered.
type fence struct {
	suspect  atomic.Bool
	verdicts atomic.Bool // some caller fenced the worker: calls are checked even when it is not suspect
	since    atomic.Int64
	mu       sync.Mutex
	asked    map[string]bool   // caller prefixes asked during this suspicion
	below    map[string]uint64 // caller prefix → calls numbered at or below it must not start
}

// suspectFor is how long a worker may have been away before it suspects its callers declared it lost: less than the
// three heartbeat intervals after which they do.
func (h *hosted) suspectFor() time.Duration { return 2 * h.spec.HeartbeatInterval }

// suspect starts a suspicion (or extends the one under way).
func (h *hosted) suspect(why string) {
	h.fence.since.Store(time.Now().UnixNano())
	if h.fence.suspect.CompareAndSwap(false, true) {
		h.fence.mu.Lock()
		h.fence.asked = nil
		h.fence.mu.Unlock()
		h.log.Warn("fleet: worker was away; asking its callers before it starts their calls", "worker", h.spec.ID,
			"why", why)
	}
}

// reconnected learns that the worker's connection is back after being down for down.
func (h *hosted) reconnected(down time.Duration) {
	if down > h.suspectFor() {
		h.suspect(fmt.Sprintf("its connection was down for %s", down.Round(time.Millisecond)))
	}
	// The heartbeat tells the callers of the reconnect at once (it counts them), so that they reconcile now rather
	// than up to an interval later.
	h.beat()
}

// endSuspicion ends a suspicion once what was buffered while the worker was away has come through: nothing waits in
// the call subscription and a heartbeat interval has passed.
func (h *hosted) endSuspicion(now time.Time) {
	if !h.fence.suspect.Load() || now.Sub(time.Unix(0, h.fence.since.Load())) < h.spec.HeartbeatInterval {
		return
	}
	if _, buffered := h.deliveriesAhead(); !buffered {
		h.fence.suspect.Store(false)
	}
}

// gate is the worker's actor.Options.Gate: a call starts unless the worker is aborting or its caller fenced the
// worker (see above).
func (h *hosted) gate(t *actor.Task, now time.Time) error {
	if r := h.refusal.Load(); r != nil {
		return r.errFor(t.CallID)
	}
	// The last tick first: a heartbeat goroutine that noticed the gap has marked the worker suspect before it moved
	// the tick on, so one of the two checks sees the worker was away.
	last := h.lastTick.Load()
	if !h.fence.suspect.Load() && !h.fence.verdicts.Load() {
		if now.UnixNano()-last <= int64(h.suspectFor()) {
			return nil
		}
		h.suspect("its heartbeats stalled")
	}
	c, ok := t.Reply.(*call)
	if !ok || c.inbox == "" {
		return nil
	}
	i := strings.LastIndexByte(c.inbox, '.')
	prefix, n, numbered := callNumber(c.CallID)
	if i < 0 || !numbered {
		return nil // not a natsfleet caller's call: nobody to ask
	}
	below := h.verdict(c.inbox[:i+1], prefix)
	if n > below || below == 0 {
		return nil
	}
	if h.spec.Pool != "" {
		go h.expire("its pool declared it lost") // replaced already: nothing of it is wanted
	}
	return errFenced
}

// verdict returns the fence of the caller whose calls have IDs starting with callerID and whose replies go to
// replyPrefix, asking it during a suspicion.
func (h *hosted) verdict(replyPrefix, callerID string) uint64 {
	f := &h.fence
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.suspect.Load() && !f.asked[callerID] {
		if f.asked == nil {
			f.asked = make(map[string]bool)
		}
		f.asked[callerID] = true
		if below := h.ask(replyPrefix); below > 0 {
			if f.below == nil {
				f.below = make(map[string]uint64)
			}
			f.below[callerID] = max(f.below[callerID], below)
			f.verdicts.Store(true)
		}
	}
	return f.below[callerID]
}

// ask asks a caller whether it declared the worker lost; 0 when it did not, or does not answer.
func (h *hosted) ask(replyPrefix string) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), h.suspectFor())
	defer cancel()
	m, err := h.nc.RequestWithContext(ctx, replyPrefix+wire.FenceToken, []byte(h.spec.ID))
	if err != nil {
		if !errors.Is(err, nats.ErrNoResponders) {
			h.log.Warn("fleet: a caller did not say whether it counts on this worker", "worker", h.spec.ID,
				"caller", replyPrefix, "err", err)
		}
		return 0
	}
	var below uint64
	if err := codec.Msgpack.Unmarshal(m.Data, &below); err != nil {
		return 0
	}
	return below
}

// expire stops a worker nobody counts on any more: calls still buffered fail unrun, queued ones are dropped, running
// ones have their contexts cancelled, and the worker stops, which frees its agent's capacity or ends its process.
func (h *hosted) expire(why string) {
	if h.stopping.Load() {
		return
	}
	h.log.Warn("fleet: worker stops", "worker", h.spec.ID, "pool", h.spec.Pool, "why", why)
	h.cancelAll()
	ctx, cancel := context.WithTimeout(context.Background(), h.drain)
	defer cancel()
	_ = h.stop(ctx, nil)
}
