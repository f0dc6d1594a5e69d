package fleet

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/internal/actor"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// How a served worker takes calls in: read, checked, turned into a task, and run inline or handed to the worker.

// call is one call received over NATS: the task it becomes and where its reply goes, in one allocation.
type call struct {
	actor.Task
	h       *hosted
	m       *method
	inbox   string // reply subject; "" drops the outcome
	trace   string
	codec   codec.Codec
	start   time.Time   // arrival at the worker
	replies *replyBatch // where its reply may wait for company: it came in a call batch; nil: alone
	arg     [1]any      // Task.Values of a method called directly
	// took is the time from arrival to the end of its run, once it ran: its reply records it without reading the
	// clock again. Atomic, since a cancel may answer the call while it runs.
	took atomic.Int64
}

// Reply sends the call's outcome to its caller.
func (c *call) Reply(_ *actor.Task, res any, err error) {
	h := c.h
	h.mu.Lock()
	if h.running == c {
		h.running = nil
	} else if h.calls[c.CallID] == c {
		delete(h.calls, c.CallID)
	}
	h.mu.Unlock()
	if c.Cancel != nil {
		c.Cancel() // releases the deadline's timer
	}
	took := time.Duration(c.took.Load())
	if took == 0 {
		took = time.Since(c.start)
	}
	h.record(c.m, took, err)
	if c.inbox == "" {
		if err != nil {
			h.log.Debug("fleet: call without reply subject failed", "worker", h.spec.ID, "method", c.m.name,
				"err", err)
		}
		return
	}
	h.answer(c.start.UnixNano(), c.inbox, c.CallID, c.trace, c.codec, c.replies, res, err)
}

// Ran learns the method's pace from a run.
func (c *call) Ran(start, end time.Time) {
	c.h.pace[c.m].observe(end.Sub(start))
	c.took.Store(int64(end.Sub(c.start)))
}

// abort cancels the call: see fail.
func (c *call) abort() { c.fail(cancelledError(c.CallID)) }

// fail cancels the call's context, if it has one, and answers the caller with err at once: a queued call would
// otherwise wait for its turn to be dropped, and a running method may take a moment to notice (one without a context
// runs to its end; its result is dropped). The worker's own reply comes later and is ignored (a task is replied to
// once); a call not yet started is skipped.
func (c *call) fail(err error) {
	// Reply before cancelling: a method that returns ctx.Err() at once must not decide the call's error.
	c.Answer(nil, err)
	if c.Cancel != nil {
		c.Cancel()
	}
}

func (c *call) progress(p wire.Progress) {
	o := wire.GetReply(c.inbox)
	defer o.Put()
	o.Set(wire.FieldCallID, c.CallID)
	o.Set(wire.FieldStatus, wire.StatusProgress)
	o.Set(wire.FieldContentType, c.codec.ContentType())
	if c.trace != "" {
		o.Set(wire.FieldTraceparent, c.trace)
	}
	var err error
	if o.Msg.Data, err = c.codec.AppendMarshal(o.Buf[:0], p); err == nil {
		o.Buf = o.Msg.Data
		err = c.h.nc.PublishMsg(&o.Msg)
	}
	if err != nil {
		c.h.log.Debug("fleet: publish progress", "worker", c.h.spec.ID, "call", c.CallID, "err", err)
	}
}

// onCall serves the call subject: one call, or a batch of them (onBatch).
func (h *hosted) onCall(m *nats.Msg) {
	start := time.Now()
	in := wire.ReadCall(m)
	if in.Batch {
		h.onBatch(m, start)
		return
	}
	h.take(&in, start)
}

// take serves one call that came alone, on the worker's subject or its agent's.
func (h *hosted) take(in *wire.Call, start time.Time) {
	if h.duplicate(in) {
		return
	}
	if c := h.accept(in, start, nil); c != nil {
		h.dispatch(c, in.Urgent)
	}
}

// dispatch runs a call received on the call subject. It runs inline, in the subscription's goroutine, when the worker
// is idle and its method typically runs within inlineBudget: the calls behind it wait in nats.go's buffer meanwhile,
// in order. Otherwise it is handed to the worker's goroutine. Urgent calls run at once in their own goroutine, but
// only once this goroutine reaches them; the control subject takes them without that wait (wire.ControlCall).
func (h *hosted) dispatch(c *call, urgent bool) {
	if h.spec.Pool == "" && h.w.InFlight() == 0 {
		h.beatBusy(c.start)
	}
	switch {
	case urgent:
		h.admit(c, false, true)
		h.w.SubmitUrgent(&c.Task)
	case h.pace[c.m].short():
		h.admit(c, true, true)
		if h.w.RunIfIdle(&c.Task) {
			return
		}
		// The worker is busy: queue the call behind its work, where a cancel finds it by ID.
		h.mu.Lock()
		if h.running == c {
			h.running = nil
		}
		if !c.Replied() {
			h.calls[c.CallID] = c
		}
		h.mu.Unlock()
		h.w.Submit(&c.Task)
	default:
		h.admit(c, false, true)
		h.w.Submit(&c.Task)
	}
}

// busyBeatEvery bounds the early heartbeats of a standing worker (beatBusy).
const busyBeatEvery = 100 * time.Millisecond

// beatBusy sends a standing worker's heartbeat at once when a call finds it idle, at most every busyBeatEvery: its
// other callers learn that it is busy now, not at its next heartbeat, and send their calls elsewhere.
func (h *hosted) beatBusy(now time.Time) {
	last := h.busyBeat.Load()
	if now.UnixNano()-last < int64(busyBeatEvery) || !h.busyBeat.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	hb := h.Heartbeat()
	hb.InFlight = max(hb.InFlight, 1) // the call that found it idle, about to run
	h.publishBeat(hb)
}

// onUrgentCall serves a wire.ControlCall: a call that runs at once, beside the worker's running call, even while a
// call runs inline and blocks the call subject.
func (h *hosted) onUrgentCall(m *nats.Msg) {
	start := time.Now()
	in := wire.ReadCall(m)
	if h.duplicate(&in) {
		return
	}
	c := h.accept(&in, start, nil)
	if c == nil {
		return
	}
	h.admit(c, false, false)
	h.w.SubmitUrgent(&c.Task)
}

// admit registers c where a cancel finds it (as the inline call, or by ID), then fails it unrun if it was cancelled
// while it waited in the call subscription's buffer (fromCallSub) or if the worker is aborting; the worker still
// takes it, so its counters see it, and skips it.
func (h *hosted) admit(c *call, inline, fromCallSub bool) {
	h.mu.Lock()
	cancelled := fromCallSub && len(h.tombs) > 0 && h.takeTombLocked(c.CallID)
	if inline {
		h.running = c
	} else {
		h.calls[c.CallID] = c
	}
	h.mu.Unlock()
	switch r := h.refusal.Load(); {
	case cancelled:
		c.abort()
	case r != nil:
		c.fail(r.errFor(c.CallID))
	}
}

// accept reads a call into a call record, or answers it with an error and returns nil. A call that came in a batch
// has its reply gathered in rb; nil sends it alone.
func (h *hosted) accept(in *wire.Call, start time.Time, rb *replyBatch) *call {
	if in.ID == "" {
		in.ID = nuid.Next()
	}
	cd, err := codec.ForContentType(in.ContentType)
	if err != nil {
		// The caller's codec is unknown; JSON is the one a person reading the reply can decode.
		h.reject(in, start, nil, codec.JSON, rb, fmt.Errorf("%w: %w", ErrMalformed, err))
		return nil
	}
	if len(in.Body) > h.maxCall {
		h.reject(in, start, nil, cd, rb, fmt.Errorf("%w: call body of %d bytes exceeds the worker's limit of %d",
			ErrPayloadTooLarge, len(in.Body), h.maxCall))
		return nil
	}
	if in.Method == "" {
		h.reject(in, start, nil, cd, rb, fmt.Errorf("%w: missing %s header", ErrMalformed, wire.HeaderMethod))
		return nil
	}
	deadline, err := wire.ParseDeadline(in.Deadline)
	if err != nil {
		h.reject(in, start, nil, cd, rb, fmt.Errorf("%w: %w", ErrMalformed, err))
		return nil
	}
	m, err := h.kind.method(in.Method)
	if err != nil {
		h.reject(in, start, nil, cd, rb, err)
		return nil
	}
	c := &call{h: h, m: m, inbox: in.Reply, trace: in.Trace, codec: cd, start: start, replies: rb}
	c.Method, c.CallID, c.Task.Reply = m, in.ID, c
	if a, ok := directArg(m, cd, in.Body); ok {
		c.arg[0] = a
		c.Values = c.arg[:]
	} else if c.Args, err = cd.DecodeArgs(in.Body, m.params); err != nil {
		if se := (*codec.SyntaxError)(nil); errors.As(err, &se) {
			err = &MethodError{Kind: h.kind.name, Method: in.Method, Err: ErrMalformed, Detail: err.Error()}
		} else {
			err = m.BadArguments(err)
		}
		h.reject(in, start, m, cd, rb, err)
		return nil
	}
	// A method without a context cannot see a cancel or a deadline while it runs; the worker skips such a call if it
	// was answered (cancelled) before it started, and checks a deadline before starting it, which needs a context.
	switch {
	case !deadline.IsZero():
		c.Ctx, c.Task.Cancel = context.WithDeadline(context.Background(), deadline)
	case m.hasCtx:
		c.Ctx, c.Task.Cancel = context.WithCancel(context.Background())
	}
	// Only a method that takes a context can start a progress bar.
	if in.Reply != "" && m.hasCtx {
		c.Progress = c.progress
	}
	return c
}

// reject answers a call that could not be submitted; m is nil when the call named none of the kind's methods.
func (h *hosted) reject(in *wire.Call, start time.Time, m *method, cd codec.Codec, rb *replyBatch, err error) {
	h.record(m, time.Since(start), err)
	if in.Reply == "" {
		h.log.Debug("fleet: bad call without reply subject", "worker", h.spec.ID, "err", err)
		return
	}
	h.answer(start.UnixNano(), in.Reply, in.ID, in.Trace, cd, rb, nil, err)
}
