package fleet

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/internal/wire"
)

func (h *hosted) onControl(m *nats.Msg) {
	op := m.Header.Get(wire.HeaderControl)
	if op == wire.ControlCall {
		h.onUrgentCall(m) // answered like a call, with the call's ID and codec
		return
	}
	c, err := codec.ForContentType(m.Header.Get(wire.HeaderContentType))
	if err != nil {
		h.respond(m, codec.JSON, encodeError(fmt.Errorf("%w: %w", ErrMalformed, err)), wire.StatusError)
		return
	}
	switch op {
	case wire.ControlCancel:
		h.cancelCall(m.Header.Get(wire.HeaderCallID))
	case wire.ControlStop:
		ctx, cancel := context.WithTimeout(context.Background(), h.drain)
		if dl, err := wire.ParseDeadline(m.Header.Get(wire.HeaderDeadline)); err == nil && !dl.IsZero() {
			cancel()
			ctx, cancel = context.WithDeadline(context.Background(), dl)
		}
		if m.Header.Get(wire.HeaderAbort) == "1" {
			h.cancelAll()
		}
		// Stopping waits for the calls to drain; the subscription goroutine must go on serving cancels meanwhile.
		go func() {
			defer cancel()
			_ = h.stop(ctx, func(err error) {
				if err != nil {
					h.respond(m, c, encodeError(err), wire.StatusError)
					return
				}
				h.respond(m, c, nil, wire.StatusOK)
			})
		}()
	case wire.ControlStats:
		h.respond(m, c, h.stats(), wire.StatusOK)
	case wire.ControlPing:
		h.respond(m, c, nil, wire.StatusOK)
	case wire.ControlReconcile:
		h.reconcile(m, c)
	default:
		h.respond(m, c, encodeError(fmt.Errorf("%w: unknown %s %q (want %s, %s, %s, %s, %s or %s)", ErrMalformed,
			wire.HeaderControl, op, wire.ControlCall, wire.ControlCancel, wire.ControlStop, wire.ControlStats,
			wire.ControlPing, wire.ControlReconcile)), wire.StatusError)
	}
}

// respond answers a control or discovery request; v nil means an empty body.
func (h *hosted) respond(m *nats.Msg, c codec.Codec, v any, status string) {
	if m.Reply == "" {
		return
	}
	r := nats.NewMsg(m.Reply)
	r.Header.Set(wire.HeaderStatus, status)
	r.Header.Set(wire.HeaderContentType, c.ContentType())
	if v != nil {
		b, err := c.Marshal(v)
		if err != nil {
			h.log.Warn("fleet: encode reply", "worker", h.spec.ID, "err", err)
			return
		}
		r.Data = b
	}
	if err := h.nc.PublishMsg(r); err != nil {
		h.log.Warn("fleet: reply", "worker", h.spec.ID, "err", err)
	}
}

// cancelCall aborts the call id wherever it is: running inline, queued or running in the worker, or still in nats.go's
// buffer behind a call running inline, where it is marked to be failed unrun when it comes out.
func (h *hosted) cancelCall(id string) {
	h.mu.Lock()
	c := h.calls[id]
	if c == nil && h.running != nil && h.running.CallID == id {
		c = h.running
	}
	if c == nil {
		h.tombLocked(id)
	}
	h.mu.Unlock()
	if c != nil {
		c.abort()
	}
}

// maxTombs bounds the cancels of buffered calls remembered at once; a flood of cancels for unknown IDs cannot grow
// the worker's memory beyond it.
const maxTombs = 4096

// tombLocked remembers a cancel of a call the worker has not received, if a subscription that brings it calls (its
// own, its agent's) holds messages it may be among; the mark lasts until both have delivered what they held.
func (h *hosted) tombLocked(id string) {
	mark, buffered := h.deliveriesAhead()
	if !buffered {
		return // the call was answered already (the cancel came late) or never sent
	}
	h.pruneTombsLocked(h.delivered(0))
	if len(h.tombs) >= maxTombs {
		h.log.Warn("fleet: too many cancels of calls not yet received; dropping one", "worker", h.spec.ID,
			"call", id)
		return
	}
	if h.tombs == nil {
		h.tombs = make(map[string]tomb)
	}
	h.tombs[id] = mark
}

// tomb is when a cancelled call still buffered would have come out at the latest: the deliveries of the worker's
// subscription and of its agent's.
type tomb struct{ own, agent int64 }

// deliveriesAhead returns the deliveries by which what the subscriptions hold now will have come out, and whether
// they hold anything. Pending counts the message in a callback too, so the buffered ones are among the next.
func (h *hosted) deliveriesAhead() (tomb, bool) {
	var t tomb
	buffered := false
	for _, s := range []struct {
		sub  *nats.Subscription
		mark *int64
	}{{h.callSub, &t.own}, {h.agentSub, &t.agent}} {
		if s.sub == nil {
			continue
		}
		pending, _, err := s.sub.Pending()
		delivered, derr := s.sub.Delivered()
		if err != nil || derr != nil {
			continue
		}
		*s.mark = delivered + int64(pending)
		buffered = buffered || pending > 0
	}
	return t, buffered
}

// delivered returns what the subscriptions have delivered, less back each.
func (h *hosted) delivered(back int64) tomb {
	var t tomb
	if n, err := h.callSub.Delivered(); err == nil {
		t.own = n - back
	}
	if h.agentSub != nil {
		if n, err := h.agentSub.Delivered(); err == nil {
			t.agent = n - back
		}
	}
	return t
}

// takeTombLocked reports whether the call id, just delivered, was cancelled while it waited in a buffer.
func (h *hosted) takeTombLocked(id string) bool {
	h.pruneTombsLocked(h.delivered(1)) // this call's own mark has not expired yet
	if _, ok := h.tombs[id]; ok {
		delete(h.tombs, id)
		return true
	}
	return false
}

func (h *hosted) pruneTombsLocked(now tomb) {
	for id, t := range h.tombs {
		if t.own <= now.own && t.agent <= now.agent {
			delete(h.tombs, id)
		}
	}
}

// cancelAll aborts every call the worker holds, and makes the calls still buffered fail unrun when they come out.
func (h *hosted) cancelAll() {
	h.mu.Lock()
	h.refusal.Store(&refusal{cancel: true})
	cs := make([]*call, 0, len(h.calls)+1)
	for _, c := range h.calls {
		cs = append(cs, c)
	}
	if h.running != nil {
		cs = append(cs, h.running)
	}
	h.mu.Unlock()
	// A queued call the worker reaches before its turn here is refused by the gate.
	for _, c := range cs {
		c.abort()
	}
}

// refusal says why calls that come out of the subscription's buffer from now on fail unrun: the worker is aborting.
type refusal struct {
	cancel bool  // a wire.ControlStop with Fleet-Abort: each call is cancelled
	err    error // otherwise every call fails with err: the stop's deadline passed
}

func (r *refusal) errFor(id string) error {
	if r.cancel {
		return cancelledError(id)
	}
	return r.err
}

func cancelledError(id string) error {
	return fmt.Errorf("fleet: call %s cancelled: %w", id, context.Canceled)
}
