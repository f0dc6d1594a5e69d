package fleet

import (
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// maxReconcile bounds the call IDs one reconcile may ask about: a caller asks about what it has in flight on the
// worker, which its cap on calls in flight bounds.
const maxReconcile = 1 << 16

// reconcile answers a caller that lost track of calls (wire.ControlReconcile): for each call, whether the worker
// holds it, sent its outcome (sent again now, on the call's reply subject), never received it, or may have run it
// and no longer keeps its outcome.
func (h *hosted) reconcile(m *nats.Msg, c codec.Codec) {
	var ids []string
	if err := c.Unmarshal(m.Data, &ids); err != nil || len(ids) > maxReconcile {
		if err == nil {
			err = fmt.Errorf("%d call IDs, at most %d", len(ids), maxReconcile)
		}
		h.respond(m, c, encodeError(fmt.Errorf("%w: %s: %w", ErrMalformed, wire.ControlReconcile, err)),
			wire.StatusError)
		return
	}
	states := make([]wire.CallState, len(ids))
	for i, id := range ids {
		states[i] = h.callState(id)
	}
	h.respond(m, c, states, wire.StatusOK)
}

// callState is what the worker knows of call id; a call it has the outcome of has its outcome sent again.
func (h *hosted) callState(id string) wire.CallState {
	switch {
	case h.resend(id):
		return wire.CallDone
	case h.holds(id):
		return wire.CallPending
	case h.resend(id): // it finished between the two looks
		return wire.CallDone
	case h.outcomes.forgot(id):
		return wire.CallExpired
	}
	return wire.CallUnknown
}

// holds reports whether call id is queued or running.
func (h *hosted) holds(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[id] != nil || h.running != nil && h.running.CallID == id
}

// duplicate reports whether a call sent again after a reconcile (wire.HeaderResend) is one the worker already has:
// its first copy was delayed, not lost. Its outcome, if there is one yet, is sent again.
func (h *hosted) duplicate(in *wire.Call) bool {
	return in.Resend && in.ID != "" && (h.holds(in.ID) || h.resend(in.ID))
}
