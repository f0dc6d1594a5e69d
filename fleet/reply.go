package fleet

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// answer sends a call's outcome: into the reply batch being gathered, when the call came in a batch and one is open,
// or in a message of its own.
func (h *hosted) answer(subject, id, trace string, cd codec.Codec, batched bool, res any, err error) {
	if batched && h.replies.add(subject, res, err) {
		return
	}
	h.reply(subject, id, trace, cd, res, err)
}

// replyMsg is a pooled reply to call id with the given status.
func (h *hosted) replyMsg(subject, id, trace string, cd codec.Codec, status string) *wire.Out {
	o := wire.GetOut(subject)
	o.Set(wire.FieldCallID, id)
	o.Set(wire.FieldStatus, status)
	o.Set(wire.FieldContentType, cd.ContentType())
	if trace != "" {
		o.Set(wire.FieldTraceparent, trace)
	}
	return o
}

// reply publishes a call's result or error in a message of its own.
func (h *hosted) reply(subject, id, trace string, cd codec.Codec, res any, err error) {
	o := h.replyMsg(subject, id, trace, cd, wire.StatusOK)
	defer o.Put()
	if err == nil {
		var eerr error
		if o.Msg.Data, eerr = cd.AppendMarshal(o.Buf[:0], res); eerr == nil {
			o.Buf = o.Msg.Data
			if err = h.nc.PublishMsg(&o.Msg); err == nil {
				return
			}
			if !errors.Is(err, nats.ErrMaxPayload) {
				h.log.Warn("fleet: reply", "worker", h.spec.ID, "call", id, "err", err)
				return
			}
			err = fmt.Errorf("%w: result of %d bytes exceeds the connection's maximum payload of %d",
				ErrPayloadTooLarge, len(o.Msg.Data), h.nc.MaxPayload())
		} else {
			err = eerr
		}
	}
	o.Set(wire.FieldStatus, wire.StatusError)
	var eerr error
	if o.Msg.Data, eerr = cd.AppendMarshal(o.Buf[:0], encodeError(err)); eerr != nil {
		h.log.Warn("fleet: encode error reply", "worker", h.spec.ID, "call", id, "err", eerr)
		return
	}
	o.Buf = o.Msg.Data
	if perr := h.nc.PublishMsg(&o.Msg); perr != nil {
		h.log.Warn("fleet: reply", "worker", h.spec.ID, "call", id, "err", perr)
	}
}
