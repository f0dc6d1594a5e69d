package fleet

import (
	"fmt"

	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// maxKeptOutcome is the largest outcome body a worker keeps for reconciles: a larger one is sent and forgotten, and
// a caller that lost it learns the call's outcome is lost (wire.CallExpired).
const maxKeptOutcome = 64 << 10

// replyOverhead is what a reply's subject and headers add to its body, at most, against the connection's maximum
// payload.
const replyOverhead = 512

// answer sends the outcome of call id, which arrived at time at (Unix nanoseconds), encoded in the call's codec: in
// rb, the reply batch of the call batch it came in, while that is open, or in a message of its own. The worker keeps
// a copy for reconciles.
func (h *hosted) answer(at int64, subject, id, trace string, cd codec.Codec, rb *replyBatch, res any, err error) {
	enc := func(dst []byte) (string, []byte, bool) { return h.encodeOutcome(dst, id, cd, res, err) }
	keep := func(status string, body []byte) {
		h.outcomes.add(at, id, subject, trace, status, cd.ContentType(), body)
	}
	load := h.load()
	if rb != nil && rb.add(subject, load, enc, keep) {
		return
	}
	o := wire.GetReply(subject)
	defer o.Put()
	status, body, ok := enc(o.Buf[:0])
	if !ok {
		return
	}
	o.Buf, o.Msg.Data = body, body
	keep(status, body)
	o.Set(wire.FieldCallID, id)
	o.Set(wire.FieldStatus, status)
	o.Set(wire.FieldContentType, cd.ContentType())
	if trace != "" {
		o.Set(wire.FieldTraceparent, trace)
	}
	if load != "" {
		o.Set(wire.FieldLoad, load)
	}
	if perr := h.nc.PublishMsg(&o.Msg); perr != nil {
		h.log.Warn("fleet: reply", "worker", h.spec.ID, "call", id, "err", perr)
	}
}

// encodeOutcome appends a call's outcome to dst: its result, or its error, a result larger than any message turned
// into an error matching ErrPayloadTooLarge. ok is false when not even the error encodes (it is logged).
func (h *hosted) encodeOutcome(dst []byte, id string, cd codec.Codec, res any, err error) (status string, out []byte,
	ok bool) {
	start := len(dst)
	if err == nil {
		out, err = cd.AppendMarshal(dst, res)
		if limit := int(h.nc.MaxPayload()) - replyOverhead; err == nil && len(out)-start > limit {
			err = fmt.Errorf("%w: result of %d bytes exceeds the connection's maximum payload of %d",
				ErrPayloadTooLarge, len(out)-start, h.nc.MaxPayload())
		}
		if err == nil {
			return wire.StatusOK, out, true
		}
	}
	out, eerr := cd.AppendMarshal(dst[:start], encodeError(err))
	if eerr != nil {
		h.log.Warn("fleet: encode error reply", "worker", h.spec.ID, "call", id, "err", eerr)
		return "", dst[:start], false
	}
	return wire.StatusError, out, true
}

// load is what a standing worker's replies say of its load (wire.HeaderLoad), so that the callers sharing it pick
// workers by everyone's calls; a worker started for one pool has no other callers, and says nothing.
func (h *hosted) load() string {
	if h.spec.Pool != "" {
		return ""
	}
	st := h.w.Load()
	return wire.FormatLoad(st.InFlight, st.Calls)
}
