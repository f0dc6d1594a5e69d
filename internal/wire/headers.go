package wire

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Headers of calls, replies and control messages.
const (
	HeaderCallID      = "Fleet-Call-Id"
	HeaderMethod      = "Fleet-Method"
	HeaderDeadline    = "Fleet-Deadline" // absolute, RFC 3339 with nanoseconds in UTC (FormatDeadline)
	HeaderContentType = "Content-Type"
	HeaderTraceparent = "traceparent"  // W3C trace context, passed through when present
	HeaderStatus      = "Fleet-Status" // on replies: StatusOK, StatusError or StatusProgress
	HeaderControl     = "Fleet-Control"
	HeaderAbort       = "Fleet-Abort"  // "1" on a ControlStop: cancel the worker's calls first
	HeaderUrgent      = "Fleet-Urgent" // any value on a call: run it beside the running call
	HeaderBatch       = "Fleet-Batch"  // on a call or reply batch: the number of entries
	// HeaderResend marks a call sent again because a reconcile found the worker had no record of it: the worker runs
	// it only if it still has none (the first copy may have been delayed, not lost).
	HeaderResend = "Fleet-Resend"
	// HeaderLoad is on the replies of a standing worker, which callers share: the calls it holds and has served, all
	// callers together, as FormatLoad writes them. Callers weigh the other callers' calls when they pick a worker.
	HeaderLoad = "Fleet-Load"
	// HeaderWorker names the worker a call is for, on its agent's calls subject.
	HeaderWorker = "Fleet-Worker"
)

// FormatLoad writes HeaderLoad's value: the calls a worker holds (queued or running) and has completed.
func FormatLoad(inFlight, calls int64) string {
	return strconv.FormatInt(inFlight, 10) + " " + strconv.FormatInt(calls, 10)
}

// ParseLoad reads a HeaderLoad value; ok is false for one FormatLoad did not write.
func ParseLoad(s string) (inFlight, calls int64, ok bool) {
	a, b, found := strings.Cut(s, " ")
	if !found {
		return 0, 0, false
	}
	inFlight, err1 := strconv.ParseInt(a, 10, 64)
	calls, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || inFlight < 0 || calls < 0 {
		return 0, 0, false
	}
	return inFlight, calls, true
}

// Values of HeaderStatus.
const (
	StatusOK       = "ok"       // the body is the method's result
	StatusError    = "error"    // the body is an Error
	StatusProgress = "progress" // the body is a Progress; more replies follow
	// StatusNoResponders is not a Fleet-Status the fleet sends: it stands for the reply nats-server itself sends to a
	// request nobody subscribes to (header Status: 503), which ReadReply reports with it.
	StatusNoResponders = "503"
)

// Values of HeaderControl, on {prefix}.w.{workerID}.ctl.
const (
	// ControlCall is an urgent call: the headers and body of a call, answered on the reply subject as a call is. It
	// runs at once, beside the call the worker is running and ahead of its queue, even while a short call runs in the
	// goroutine that receives calls (which HeaderUrgent on the call subject would wait for).
	ControlCall = "call"
	// ControlCancel cancels the call named by HeaderCallID: its method's context is cancelled, or it is dropped if
	// still queued. No reply.
	ControlCancel = "cancel"
	// ControlStop stops the worker after the calls it holds finish (HeaderDeadline bounds the wait; HeaderAbort
	// cancels them first). Replied, with an empty body, once the worker has stopped.
	ControlStop = "stop"
	// ControlStats is replied with the worker's fleet.WorkerStats.
	ControlStats = "stats"
	// ControlPing is replied with an empty body: the worker is alive and serving.
	ControlPing = "ping"
	// ControlReconcile asks what became of calls the caller has no reply for: the body is a msgpack array of call
	// IDs, the reply an array of CallState, one per ID. The worker sends the outcomes it kept again, on the calls'
	// reply subjects.
	ControlReconcile = "reconcile"
)

// CallState is what a worker knows of a call, in the reply to ControlReconcile.
type CallState uint8

const (
	// CallUnknown: the worker never received the call; sending it again (with HeaderResend) is safe.
	CallUnknown CallState = iota
	// CallPending: the call is queued or running; its reply will come.
	CallPending
	// CallDone: the call ran and its outcome was sent again.
	CallDone
	// CallExpired: the worker may have run the call but no longer keeps its outcome.
	CallExpired
)

// FenceToken replaces the last token of a caller's reply subjects to form the subject a worker asks on whether the
// caller still counts on it (body: the worker's ID; reply: msgpack true or false). A worker asks after it was frozen
// or cut off for longer than its heartbeats allow, before it starts any call it holds from that caller: a caller
// that declared the worker lost has failed those calls, and they must not run.
const FenceToken = "_f"

// Call is what a call says: a call message's headers and body, or an entry of a call batch.
type Call struct {
	ID, Method, ContentType, Deadline, Trace string
	Reply                                    string // the reply subject; "" drops the outcome
	Body                                     []byte // the arguments array
	Urgent                                   bool
	Resend                                   bool   // sent again after a reconcile (HeaderResend)
	Batch                                    bool   // the message is a call batch: Body holds BatchCall entries
	Worker                                   string // HeaderWorker: on an agent's calls subject, whose call it is
}

// ReadCall reads a call message, its headers in one pass over the header map.
func ReadCall(m *nats.Msg) Call {
	c := Call{Reply: m.Reply, Body: m.Data}
	for k, v := range m.Header {
		if len(v) == 0 {
			continue
		}
		switch k {
		case HeaderCallID:
			c.ID = v[0]
		case HeaderMethod:
			c.Method = v[0]
		case HeaderContentType:
			c.ContentType = v[0]
		case HeaderDeadline:
			c.Deadline = v[0]
		case HeaderTraceparent:
			c.Trace = v[0]
		case HeaderUrgent:
			c.Urgent = v[0] != ""
		case HeaderBatch:
			c.Batch = true
		case HeaderResend:
			c.Resend = v[0] != ""
		case HeaderWorker:
			c.Worker = v[0]
		}
	}
	return c
}

// ReadReply returns a reply message's status and content type; a no-responders answer from the server has status
// StatusNoResponders.
func ReadReply(m *nats.Msg) (status, contentType string) {
	status = m.Header.Get(HeaderStatus)
	if status == "" && m.Header.Get("Status") == StatusNoResponders {
		return StatusNoResponders, ""
	}
	return status, m.Header.Get(HeaderContentType)
}

// FormatDeadline formats t for HeaderDeadline: RFC 3339 with nanoseconds, in UTC. The zero time (no deadline) is "".
func FormatDeadline(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// ParseDeadline parses a HeaderDeadline value: "" is no deadline (the zero time); any RFC 3339 time is accepted,
// with or without fractional seconds and in any offset. The result is in UTC.
func ParseDeadline(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad %s %q: %w", HeaderDeadline, s, err)
	}
	return t.UTC(), nil
}
