package fleet

import (
	"fmt"
	"sync"

	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// maxKeptOutcome is the largest outcome body a worker keeps for reconciles: a larger one is sent and forgotten, and
// a caller that lost it learns the call's outcome is lost (wire.CallExpired).
const maxKeptOutcome = 64 << 10

// replyOverhead is what a reply's subject and headers add to its body, at most, against the connection's maximum
// payload.
const replyOverhead = 512

var scratch = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// answer sends the outcome of call id, which arrived at time at (Unix nanoseconds): encoded once in the call's
// codec, kept for reconciles, and sent in the reply batch being gathered when the call came in a batch and one is
// open, or in a message of its own.
func (h *hosted) answer(at int64, subject, id, trace string, cd codec.Codec, batched bool, res any, err error) {
	status, body, ok := h.encode(at, subject, id, trace, cd, res, err)
	if !ok {
		return
	}
	if batched && h.replies.add(subject, status, body) {
		return
	}
	o := wire.GetOut(subject)
	defer o.Put()
	o.Set(wire.FieldCallID, id)
	o.Set(wire.FieldStatus, status)
	o.Set(wire.FieldContentType, cd.ContentType())
	if trace != "" {
		o.Set(wire.FieldTraceparent, trace)
	}
	o.Msg.Data = body
	if perr := h.nc.PublishMsg(&o.Msg); perr != nil {
		h.log.Warn("fleet: reply", "worker", h.spec.ID, "call", id, "err", perr)
	}
}

// encode encodes a call's outcome, a result larger than any message turned into an error matching
// ErrPayloadTooLarge, and keeps it; ok is false when not even the error encodes (it is logged).
func (h *hosted) encode(at int64, subject, id, trace string, cd codec.Codec, res any, err error) (status string,
	body []byte, ok bool) {
	bp := scratch.Get().(*[]byte)
	buf := (*bp)[:0]
	status = wire.StatusOK
	if err == nil {
		var eerr error
		if buf, eerr = cd.AppendMarshal(buf, res); eerr != nil {
			err = eerr
		} else if limit := int(h.nc.MaxPayload()) - replyOverhead; len(buf) > limit {
			err = fmt.Errorf("%w: result of %d bytes exceeds the connection's maximum payload of %d",
				ErrPayloadTooLarge, len(buf), h.nc.MaxPayload())
		}
	}
	if err != nil {
		status = wire.StatusError
		var eerr error
		if buf, eerr = cd.AppendMarshal(buf[:0], encodeError(err)); eerr != nil {
			h.log.Warn("fleet: encode error reply", "worker", h.spec.ID, "call", id, "err", eerr)
			*bp = buf[:0]
			scratch.Put(bp)
			return "", nil, false
		}
	}
	if len(buf) > maxKeptOutcome {
		h.outcomes.forget(id)
		return status, buf, true // the scratch buffer goes with the reply; the pool makes another
	}
	body = h.outcomes.add(at, id, subject, trace, status, cd.ContentType(), buf)
	*bp = buf[:0]
	scratch.Put(bp)
	return status, body, true
}
