package fleet

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/natsfleet/natsfleet/internal/wire"
)

// outcomes keeps the outcomes a worker sent lately, so that a caller that lost replies (its connection or the
// worker's dropped, the server cut it off as a slow consumer) can have them again (wire.ControlReconcile). They are
// kept in chunks, oldest first, and dropped a chunk at a time once there are more than maxOutcomes of them, more
// than maxOutcomeBytes of bodies, or the newest of a chunk is older than outcomeAge. What it drops it remembers as a
// watermark per caller: the highest call number dropped, so that a call it has no record of can be told apart from
// one it ran and forgot (wire.CallExpired).
type outcomes struct {
	mu      sync.Mutex
	chunks  []*outcomeChunk
	n       int
	bytes   int
	dropped map[string]uint64 // per caller (call ID prefix): the highest call number dropped
}

const (
	maxOutcomes     = 1024
	maxOutcomeBytes = 1 << 20
	outcomeAge      = 30 * time.Second
	chunkOutcomes   = 64
)

type outcomeChunk struct {
	entries []outcome
	body    []byte // the entries' bodies, one after the other; never overwritten, so slices of it stay valid
	newest  int64  // Unix nanoseconds of its last entry
}

type outcome struct {
	id, reply, trace string
	status, ctype    string
	start, end       int // of the body in the chunk
}

// add records, at time at (Unix nanoseconds: the call's arrival, which callers have read already), the outcome of
// call id, whose reply goes to reply, and returns the copy of body it keeps: the reply can be published from it.
func (o *outcomes) add(at int64, id, reply, trace, status, ctype string, body []byte) []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	var ch *outcomeChunk
	if k := len(o.chunks); k > 0 && len(o.chunks[k-1].entries) < chunkOutcomes {
		ch = o.chunks[k-1]
	} else {
		o.dropLocked(at)
		ch = &outcomeChunk{entries: make([]outcome, 0, chunkOutcomes)}
		o.chunks = append(o.chunks, ch)
	}
	ch.newest = max(ch.newest, at)
	start := len(ch.body)
	ch.body = append(ch.body, body...)
	ch.entries = append(ch.entries, outcome{id: id, reply: reply, trace: trace, status: status, ctype: ctype,
		start: start, end: len(ch.body)})
	o.n++
	o.bytes += len(body)
	return ch.body[start:len(ch.body):len(ch.body)]
}

// dropLocked drops the oldest chunks while the cache is over its bounds at time now (also its age bound).
func (o *outcomes) dropLocked(now int64) {
	for len(o.chunks) > 0 {
		old := o.chunks[0]
		if o.n < maxOutcomes && o.bytes < maxOutcomeBytes && now-old.newest < int64(outcomeAge) {
			return
		}
		for _, e := range old.entries {
			if prefix, n, ok := callNumber(e.id); ok {
				if o.dropped == nil {
					o.dropped = make(map[string]uint64)
				}
				o.dropped[prefix] = max(o.dropped[prefix], n)
			}
		}
		o.n -= len(old.entries)
		o.bytes -= len(old.body)
		o.chunks[0] = nil
		o.chunks = o.chunks[1:]
	}
}

// prune drops what has aged out, so an idle worker does not keep old outcomes.
func (o *outcomes) prune(now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dropLocked(now.UnixNano())
}

// find returns the outcome of call id and its body, if kept. Reconciles are rare: it scans.
func (o *outcomes) find(id string) (outcome, []byte, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := len(o.chunks) - 1; i >= 0; i-- {
		ch := o.chunks[i]
		for j := len(ch.entries) - 1; j >= 0; j-- {
			if e := ch.entries[j]; e.id == id {
				return e, ch.body[e.start:e.end:e.end], true
			}
		}
	}
	return outcome{}, nil, false
}

// forget records that the outcome of call id is not kept: a reconcile must not take the call for one never received.
func (o *outcomes) forget(id string) {
	if prefix, n, ok := callNumber(id); ok {
		o.mu.Lock()
		if o.dropped == nil {
			o.dropped = make(map[string]uint64)
		}
		o.dropped[prefix] = max(o.dropped[prefix], n)
		o.mu.Unlock()
	}
}

// forgot reports whether the cache may have dropped the outcome of call id: a call number the caller gave at or
// below the highest it dropped of that caller's, or an ID of no natsfleet caller, which has no number.
func (o *outcomes) forgot(id string) bool {
	prefix, n, ok := callNumber(id)
	if !ok {
		return true
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return n <= o.dropped[prefix]
}

// callNumber splits a natsfleet caller's call ID, "{caller ID}-{number in base 36}", into the caller's prefix and the
// number, which increases with every call the caller sends.
func callNumber(id string) (prefix string, n uint64, ok bool) {
	i := strings.LastIndexByte(id, '-')
	if i < 0 {
		return "", 0, false
	}
	n, err := strconv.ParseUint(id[i+1:], 36, 64)
	return id[:i+1], n, err == nil
}

// resend publishes again the outcome of call id; it reports whether it had one.
func (h *hosted) resend(id string) bool {
	e, body, ok := h.outcomes.find(id)
	if !ok {
		return false
	}
	o := wire.GetOut(e.reply)
	defer o.Put()
	o.Set(wire.FieldCallID, id)
	o.Set(wire.FieldStatus, e.status)
	o.Set(wire.FieldContentType, e.ctype)
	if e.trace != "" {
		o.Set(wire.FieldTraceparent, e.trace)
	}
	o.Msg.Data = body
	if err := h.nc.PublishMsg(&o.Msg); err != nil {
		h.log.Warn("fleet: send an outcome again", "worker", h.spec.ID, "call", id, "err", err)
	}
	return true
}
