package fleet

import (
	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/codec"
)

// HandleCall runs a served worker's call handler on m as the call subscription would, so that benchmarks can measure
// the worker's side of a call without the network.
func HandleCall(h *Hosted, m *nats.Msg) { h.onCall(m) }

// Short reports whether the worker would run the next call of method inline when idle: tests of inline calls wait
// for it, since a run slowed down by a loaded machine makes a short method look long for a while.
func Short(h *Hosted, method string) bool {
	m, err := h.w.kind.Method(method)
	return err == nil && h.pace[m].short()
}

// ReplyBatchOpen reports whether the worker is gathering the replies of a call batch it serves.
func ReplyBatchOpen(h *Hosted) bool {
	h.replies.mu.Lock()
	defer h.replies.mu.Unlock()
	return h.replies.isOpen
}

// Direct reports whether m is called without reflection when its arguments fit exactly.
func Direct(m *Method) bool { return m.direct != nil }

// ReplyChunk is how many calls of a batch a worker serves before it sends the replies gathered so far.
const ReplyChunk = replyChunk

// DirectArg decodes the one argument of a call to m as a served worker does before it calls m directly.
func DirectArg(m *Method, cd codec.Codec, body []byte) (any, bool) { return directArg(m, cd, body) }
