package fleet

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/internal/msgp"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// The worker's side of call batches (wire.HeaderBatch, wire.go). A client that has many calls waiting for one worker sends
// them in one message; the worker serves them in order, exactly as if they had come one by one, and answers those that
// finish while it serves the batch in one message per client inbox and per replyChunk calls or replyWait, so that a
// client hears of the first calls of a long batch, and sends more, while the worker serves the rest. Under load the
// fleet thus pays NATS's cost per message (the server's routing, each process's reads, writes and wakeups) once per
// batch instead of once per call.

// onBatch serves a call batch.
func (h *hosted) onBatch(m *nats.Msg, start time.Time) {
	batch, err := wire.DecodeBatchCalls(h.batch[:0], m.Data)
	if err == nil {
		h.replies.open()
		opened, served := start, 0
		for i := range batch {
			e := &batch[i]
			in := wire.Call{ID: e.ID, Method: e.Method, Deadline: e.Deadline, Reply: e.Reply, Body: e.Args}
			if c := h.accept(&in, start, &h.replies); c != nil {
				h.dispatch(c, false)
			}
			if served++; i == len(batch)-1 {
				break
			}
			// The clock is read every few calls only: what runs in this goroutine are short calls.
			if served == replyChunk || served%8 == 0 && time.Since(opened) >= replyWait {
				h.replies.flush()
				h.replies.open()
				opened, served = time.Now(), 0
			}
		}
		h.replies.flush()
	} else {
		// No reply subject can be read: the callers learn of the loss only from their own deadlines.
		h.log.Warn("fleet: unreadable call batch dropped", "worker", h.spec.ID, "bytes", len(m.Data), "err", err)
	}
	clear(batch) // the entries point into this message's data
	h.batch = batch[:0]
}

// replyBatch gathers the replies of batched calls while the subscription's goroutine serves a call batch, and flush
// publishes them when the batch is done. Replies come from any goroutine (calls handed to the worker's goroutine,
// cancels), hence the lock; only the subscription's goroutine opens and flushes.
type replyBatch struct {
	// where it publishes, and for whom it logs: a worker's, or an agent's for all its workers (agentcalls.go)
	nc    *nats.Conn
	log   *slog.Logger
	owner string

	mu      sync.Mutex
	isOpen  bool
	entries []pendingReply
	bodies  []byte // the entries' msgpack bodies, one after the other

	// flush's, the subscription goroutine's alone
	out  []wire.BatchReply
	msg  nats.Msg
	n    [1]string // the Fleet-Batch header's value
	body []byte
}

// pendingReply is a gathered reply; its subject is prefix+token.
type pendingReply struct {
	prefix, token, status, load string
	start, end                  int // of its body in replyBatch.bodies
}

const (
	// replyChunk is how many calls of a batch the worker serves before it sends the replies gathered so far, and
	// replyWait how long, whichever comes first: the replies of short calls travel together, while the caller of
	// slower ones hears of them within a millisecond or so.
	replyChunk = 128
	replyWait  = time.Millisecond
	// Overheads in a reply batch's size that flush counts besides tokens, statuses and bodies: the message's headers
	// and subject, and an entry's msgpack framing (a map of three one-letter keys and the string and binary headers).
	replyBatchOverhead = 256
	replyEntryOverhead = 24
	// maxKeptBody keeps one batch of huge results from pinning its buffer for good.
	maxKeptBody = 1 << 20
)

func (b *replyBatch) open() {
	b.mu.Lock()
	b.isOpen = true
	b.mu.Unlock()
}

// add gathers a reply to subject, when a batch is open and the subject has the form {prefix}{token} that reply batches
// need (the prefix ending with a '.'), with the worker's load (wire.HeaderLoad; "" for none): enc appends its body,
// and keep sees it before anything else can overwrite it.
// It reports whether it gathered the reply; the caller publishes the reply alone otherwise.
func (b *replyBatch) add(subject, load string, enc func(dst []byte) (string, []byte, bool),
	keep func(status string, body []byte)) bool {
	i := strings.LastIndexByte(subject, '.')
	if i < 0 || i == len(subject)-1 {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.isOpen {
		return false
	}
	start := len(b.bodies)
	status, bodies, ok := enc(b.bodies)
	if !ok {
		b.bodies = bodies[:start]
		return true // nothing to send: the failure is logged
	}
	b.bodies = bodies
	b.entries = append(b.entries, pendingReply{prefix: subject[:i+1], token: subject[i+1:], status: status,
		load: load, start: start, end: len(bodies)})
	keep(status, bodies[start:])
	return true
}

// flush closes the batch and publishes what it gathered: one message per client inbox, or more when the replies
// exceed the connection's maximum payload. A reply too large for any message is answered with an error matching
// ErrPayloadTooLarge, as a reply alone would be.
func (b *replyBatch) flush() {
	b.mu.Lock()
	b.isOpen = false
	entries, bodies := b.entries, b.bodies
	b.mu.Unlock()
	// Until this goroutine opens the next batch, no one else touches entries or bodies.
	limit := int(b.nc.MaxPayload()) - replyBatchOverhead
	for first := range entries {
		prefix := entries[first].prefix
		if prefix == "" {
			continue // sent with an earlier inbox's replies
		}
		out, size := b.out[:0], 0
		for i := first; i < len(entries); i++ {
			e := &entries[i]
			if e.prefix != prefix {
				continue
			}
			status, body := e.status, bodies[e.start:e.end]
			esize := len(e.token) + len(status) + len(body) + replyEntryOverhead
			if esize > limit {
				var err error
				status = wire.StatusError
				if body, err = codec.Msgpack.Marshal(encodeError(fmt.Errorf(
					"%w: result of %d bytes exceeds the connection's maximum payload of %d", ErrPayloadTooLarge,
					len(body), b.nc.MaxPayload()))); err != nil {
					b.log.Warn("fleet: encode error reply", "from", b.owner, "err", err)
					continue
				}
				esize = len(e.token) + len(status) + len(body) + replyEntryOverhead
			}
			if size+esize > limit && len(out) > 0 {
				b.publish(prefix, out)
				out, size = out[:0], 0
			}
			out = append(out, wire.BatchReply{Token: e.token, Status: status, Load: e.load, Body: body})
			size += esize
			e.prefix = ""
		}
		b.publish(prefix, out)
		clear(out)
		b.out = out[:0]
	}
	clear(entries)
	if cap(bodies) > maxKeptBody {
		bodies = nil
	}
	b.mu.Lock()
	b.entries, b.bodies = entries[:0], bodies[:0]
	b.mu.Unlock()
}

// publish sends replies to the batch subject of the inbox prefix.
func (b *replyBatch) publish(prefix string, replies []wire.BatchReply) {
	if len(replies) == 0 {
		return
	}
	b.body = msgp.AppendArrayLen(b.body[:0], len(replies))
	for i := range replies {
		b.body = replies[i].AppendMsgpack(b.body)
	}
	if b.msg.Header == nil {
		b.msg.Header = nats.Header{wire.HeaderBatch: b.n[:]}
	}
	b.msg.Subject, b.msg.Data, b.n[0] = prefix+wire.ReplyBatchToken, b.body, strconv.Itoa(len(replies))
	if err := b.nc.PublishMsg(&b.msg); err != nil {
		b.log.Warn("fleet: reply batch", "from", b.owner, "subject", b.msg.Subject, "err", err)
	}
	b.msg.Data = nil
	if cap(b.body) > maxKeptBody {
		b.body = nil
	}
}
