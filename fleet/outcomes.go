package fleet

import (
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/natsfleet/natsfleet/codec"
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
	spare   *outcomeChunk // the last chunk dropped, reused for the next: a busy worker allocates none
	n       int
	bytes   int
	dropped map[string]uint64 // per caller (call ID prefix): the highest call number dropped
}

const (
	maxOutcomes     = 1024
	maxOutcomeBytes = 16 << 20
	outcomeAge      = 30 * time.Second
	chunkOutcomes   = 128
)

type outcomeChunk struct {
	entries []outcome
	// buf holds each entry's call ID, reply subject, trace and body, one after the other; never overwritten, so
	// slices of it stay valid. Entries hold offsets, not strings: nothing in a chunk is a pointer the collector scans,
	// and a chunk keeps no call's strings alive.
	buf    []byte
	newest int64 // Unix nanoseconds of its last entry
}

type outcome struct {
	id, reply, trace, body span
	status, ctype          uint8 // indexes into statuses and ctypes
}

// span is a part of a chunk's buf.
type span struct{ start, end int32 }

func (ch *outcomeChunk) bytes(s span) []byte { return ch.buf[s.start:s.end:s.end] }

func (ch *outcomeChunk) appendString(str string) span {
	start := len(ch.buf)
	ch.buf = append(ch.buf, str...)
	return span{int32(start), int32(len(ch.buf))}
}

var (
	statuses = [...]string{wire.StatusOK, wire.StatusError}
	ctypes   = [...]string{codec.ContentTypeMsgpack, codec.ContentTypeJSON}
)

func statusIndex(s string) uint8 {
	if s == wire.StatusError {
		return 1
	}
	return 0
}

func ctypeIndex(ct string) uint8 {
	if ct == codec.ContentTypeJSON {
		return 1
	}
	return 0
}

// chunkBuf is what a new chunk's buf starts with room for: a chunk of small outcomes fills it without growing. A
// worker's first chunk starts with room for firstChunk outcomes.
const (
	chunkBuf   = chunkOutcomes * 96
	firstChunk = 8
)

// add keeps a copy of the outcome of call id, whose reply went to reply, recorded at time at (Unix nanoseconds: the
// call's arrival, which callers have read already). Nothing outside the cache refers to what it keeps, so dropped
// chunks can be reused. A body over maxKeptOutcome is not kept.
func (o *outcomes) add(at int64, id, reply, trace, status, ctype string, body []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(body) > maxKeptOutcome {
		o.forgetLocked(id)
		return
	}
	var ch *outcomeChunk
	if k := len(o.chunks); k > 0 && len(o.chunks[k-1].entries) < chunkOutcomes {
		ch = o.chunks[k-1]
	} else {
		o.dropLocked(at)
		if ch = o.spare; ch != nil {
			o.spare = nil
			ch.entries, ch.buf, ch.newest = ch.entries[:0], ch.buf[:0], 0
		} else {
			// A worker's first chunk starts small and grows: thousands of workers that each take a few calls must not
			// each hold a full chunk.
			n := chunkOutcomes
			if len(o.chunks) == 0 {
				n = firstChunk
			}
			ch = &outcomeChunk{entries: make([]outcome, 0, n), buf: make([]byte, 0, n*chunkBuf/chunkOutcomes)}
		}
		o.chunks = append(o.chunks, ch)
	}
	e := outcome{id: ch.appendString(id), reply: ch.appendString(reply), trace: ch.appendString(trace),
		status: statusIndex(status), ctype: ctypeIndex(ctype)}
	start := len(ch.buf)
	ch.buf = append(ch.buf, body...)
	e.body = span{int32(start), int32(len(ch.buf))}
	ch.newest = max(ch.newest, at)
	ch.entries = append(ch.entries, e)
	o.n++
	o.bytes += len(body)
}

// dropLocked drops the oldest chunks while the cache is over its bounds at time now (also its age bound).
func (o *outcomes) dropLocked(now int64) {
	for len(o.chunks) > 0 {
		old := o.chunks[0]
		if o.n < maxOutcomes && o.bytes < maxOutcomeBytes && now-old.newest < int64(outcomeAge) {
			return
		}
		// A chunk's calls come mostly from one caller: its highest number is written once.
		var last string
		var top uint64
		for _, e := range old.entries {
			prefix, n, ok := callNumber(unsafeString(old.bytes(e.id)))
			if !ok {
				continue
			}
			if prefix != last {
				o.raiseLocked(last, top)
				last, top = prefix, 0
			}
			top = max(top, n)
		}
		o.raiseLocked(last, top)
		o.n -= len(old.entries)
		for _, e := range old.entries {
			o.bytes -= int(e.body.end - e.body.start)
		}
		if cap(old.buf) <= 4*chunkBuf {
			o.spare = old
		}
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

// found is a kept outcome, copied out of its chunk: chunks are reused.
type found struct {
	reply, trace, status, ctype string
	body                        []byte
}

// find returns the outcome of call id, if kept. Reconciles are rare: it scans.
func (o *outcomes) find(id string) (found, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := len(o.chunks) - 1; i >= 0; i-- {
		ch := o.chunks[i]
		for j := len(ch.entries) - 1; j >= 0; j-- {
			if e := ch.entries[j]; unsafeString(ch.bytes(e.id)) == id {
				return found{reply: string(ch.bytes(e.reply)), trace: string(ch.bytes(e.trace)),
						status: statuses[e.status], ctype: ctypes[e.ctype], body: append([]byte(nil), ch.bytes(e.body)...)},
					true
			}
		}
	}
	return found{}, false
}

// unsafeString views b as a string, for a comparison or a parse that keeps nothing of it.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// forget records that the outcome of call id is not kept: a reconcile must not take the call for one never received.
func (o *outcomes) forget(id string) {
	o.mu.Lock()
	o.forgetLocked(id)
	o.mu.Unlock()
}

func (o *outcomes) forgetLocked(id string) {
	if prefix, n, ok := callNumber(id); ok {
		o.raiseLocked(prefix, n)
	}
}

// raiseLocked records that caller prefix's calls numbered up to n may have been dropped.
func (o *outcomes) raiseLocked(prefix string, n uint64) {
	if prefix == "" {
		return
	}
	if o.dropped == nil {
		o.dropped = make(map[string]uint64)
	}
	if n > o.dropped[prefix] {
		o.dropped[prefix] = n
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
	e, ok := h.outcomes.find(id)
	if !ok {
		return false
	}
	o := wire.GetReply(e.reply)
	defer o.Put()
	o.Set(wire.FieldCallID, id)
	o.Set(wire.FieldStatus, e.status)
	o.Set(wire.FieldContentType, e.ctype)
	if e.trace != "" {
		o.Set(wire.FieldTraceparent, e.trace)
	}
	o.Msg.Data = e.body
	if err := h.nc.PublishMsg(&o.Msg); err != nil {
		h.log.Warn("fleet: send an outcome again", "worker", h.spec.ID, "call", id, "err", err)
	}
	return true
}
