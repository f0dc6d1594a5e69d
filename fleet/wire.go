package fleet

import (
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/natsfleet/natsfleet/codec"
)

// The messages of the fleet protocol besides calls and replies (those are in package codec). Bodies are msgpack
// unless a message says Content-Type: application/json, in which case the same field names are JSON keys.

// Control message header and its values, on {prefix}.w.{workerID}.ctl.
const (
	HeaderControl = "Fleet-Control"
	// ControlCall is an urgent call: it carries a call's headers (Fleet-Method, Fleet-Call-Id, Content-Type,
	// Fleet-Deadline, traceparent) and body, and is answered on its reply subject exactly as a call on the worker's
	// subject. It runs at once, beside the call the worker is running and ahead of its queue: client.Pool.Broadcast
	// and health checks send control calls (a shutdown flag, a configuration refresh) this way. The worker's call
	// subject also takes urgent calls (HeaderUrgent), but a worker runs short calls inline in the goroutine that
	// receives them, so there an urgent call may wait for the call before it.
	ControlCall = "call"
	// ControlCancel cancels the call named by the Fleet-Call-Id header: its method's context is cancelled, or it is
	// dropped if still queued. No reply.
	ControlCancel = "cancel"
	// ControlStop stops the worker after the calls it holds finish; with header Fleet-Abort: 1 they are cancelled
	// first. Replied (when the message has a reply subject) with an empty body once the worker has stopped.
	ControlStop = "stop"
	// ControlStats is replied with the worker's WorkerStats.
	ControlStats = "stats"
	// ControlPing is replied with an empty body: the worker is alive and serving.
	ControlPing = "ping"
	HeaderAbort = "Fleet-Abort"
)

// HeaderUrgent on a call (any non-empty value) on the worker's subject runs it beside the call the worker is running,
// instead of behind its queue, once the worker receives it: when the running call runs inline in the receiving
// goroutine, the urgent call waits for it. A ControlCall on the control subject does not wait; callers send urgent
// calls there.
const HeaderUrgent = "Fleet-Urgent"

// Heartbeat is published by every remote worker on {prefix}.hb.{kind}.{workerID} every heartbeat interval, and
// once as soon as it serves (so a pool knows it is ready). It is also the reply to a kind discovery request on
// {prefix}.kind.{kind}.discover, which standing workers answer.
type Heartbeat struct {
	WorkerID string        `msgpack:"id" json:"id"`
	Kind     string        `msgpack:"kind" json:"kind"`
	Agent    string        `msgpack:"agent,omitempty" json:"agent,omitempty"` // ID of the agent hosting it
	Pool     string        `msgpack:"pool,omitempty" json:"pool,omitempty"`   // ID of the pool it was started for; "" for standing workers
	Index    int           `msgpack:"index" json:"index"`
	InFlight int64         `msgpack:"in_flight" json:"in_flight"` // calls queued or running
	Calls    int64         `msgpack:"calls" json:"calls"`         // calls completed
	Interval time.Duration `msgpack:"interval" json:"interval"`   // its heartbeat interval
	Stopping bool          `msgpack:"stopping,omitempty" json:"stopping,omitempty"`
	// Batches says the worker takes call batches (HeaderBatch); clients send batches only to workers that do.
	Batches bool `msgpack:"batches,omitempty" json:"batches,omitempty"`
}

// WorkerSpec says how to build one remote worker: the body of a spawn request to an agent
// ({prefix}.agent.{agentID}.spawn) and, in process mode, what the parent hands its child.
type WorkerSpec struct {
	Kind  string `msgpack:"kind" json:"kind"`
	ID    string `msgpack:"id" json:"id"`
	Index int    `msgpack:"index" json:"index"`
	Pool  string `msgpack:"pool" json:"pool"`
	// Args are the constructor arguments, encoded as one msgpack array (codec.Msgpack.AppendArgs).
	Args []byte `msgpack:"args" json:"args"`
	// Concurrent runs the worker's calls concurrently (asyncio semantics).
	Concurrent bool `msgpack:"concurrent,omitempty" json:"concurrent,omitempty"`
	// Limits are the pool's limits (limits.MarshalLimits), shared through JetStream KV under LimitSet.
	Limits   []byte `msgpack:"limits,omitempty" json:"limits,omitempty"`
	LimitSet string `msgpack:"limit_set,omitempty" json:"limit_set,omitempty"`
	// LimitBucket is the KV bucket of the limit set; "" means the limits package default.
	LimitBucket string `msgpack:"limit_bucket,omitempty" json:"limit_bucket,omitempty"`
	// Prefix is the subject prefix; "" means "fleet".
	Prefix            string        `msgpack:"prefix,omitempty" json:"prefix,omitempty"`
	HeartbeatInterval time.Duration `msgpack:"heartbeat,omitempty" json:"heartbeat,omitempty"`
}

// SpawnReply answers a spawn request: the worker's ID once it serves, or an error.
type SpawnReply struct {
	WorkerID string `msgpack:"id,omitempty" json:"id,omitempty"`
	Error    string `msgpack:"error,omitempty" json:"error,omitempty"`
}

// AgentInfo answers {prefix}.agent.discover: what an agent offers.
type AgentInfo struct {
	ID       string   `msgpack:"id" json:"id"`
	Host     string   `msgpack:"host" json:"host"`
	Capacity int      `msgpack:"capacity" json:"capacity"` // workers it may start for pools
	Free     int      `msgpack:"free" json:"free"`         // of which not in use
	Kinds    []string `msgpack:"kinds" json:"kinds"`       // kinds it can build
	Workers  int      `msgpack:"workers" json:"workers"`   // workers it hosts now, standing ones included
}

// Batches. When calls to one worker pile up faster than they can be published one message each, a client sends them
// in one message, and a worker answers the replies that pile up for one client inbox in one message: under load the
// fleet pays NATS's per-message cost once per batch instead of once per call. Batches are msgpack only.
const (
	// HeaderBatch on a message says its body is a msgpack array of that many BatchCall (on a worker's call subject)
	// or BatchReply (on a reply inbox's batch subject).
	HeaderBatch = "Fleet-Batch"
	// ReplyBatchToken replaces the last token of the calls' reply subjects to form the subject a reply batch goes to:
	// replies to _INBOX.abc.17 and _INBOX.abc.18 travel together to _INBOX.abc._b. Call reply tokens never take this
	// value (clients number them in base 36, which has no '_').
	ReplyBatchToken = "_b"
)

// BatchCall is one call in a call batch: what a single call carries in its headers and body.
type BatchCall struct {
	ID       string             `msgpack:"i"`           // Fleet-Call-Id
	Method   string             `msgpack:"m"`           // Fleet-Method
	Reply    string             `msgpack:"r"`           // the reply subject
	Deadline string             `msgpack:"d,omitempty"` // Fleet-Deadline
	Args     msgpack.RawMessage `msgpack:"a"`           // the arguments array, msgpack
}

// BatchReply is one reply in a reply batch.
type BatchReply struct {
	Token  string             `msgpack:"t"` // last token of the call's reply subject
	Status string             `msgpack:"s"` // Fleet-Status
	Body   msgpack.RawMessage `msgpack:"b"` // the reply body, msgpack
}

// AppendMsgpack appends c's msgpack encoding to dst: the map msgpack writes for the struct, written without
// reflection since every batched call pays for it.
func (c *BatchCall) AppendMsgpack(dst []byte) []byte {
	n := 4
	if c.Deadline != "" {
		n = 5
	}
	dst = codec.AppendMapLen(dst, n)
	dst = codec.AppendString(codec.AppendString(dst, "i"), c.ID)
	dst = codec.AppendString(codec.AppendString(dst, "m"), c.Method)
	dst = codec.AppendString(codec.AppendString(dst, "r"), c.Reply)
	if c.Deadline != "" {
		dst = codec.AppendString(codec.AppendString(dst, "d"), c.Deadline)
	}
	return appendRaw(codec.AppendString(dst, "a"), c.Args)
}

// appendRaw appends an encoded value, or nil for none (as msgpack encodes a nil RawMessage).
func appendRaw(dst, raw []byte) []byte {
	if len(raw) == 0 {
		return append(dst, 0xc0)
	}
	return append(dst, raw...)
}

// DecodeBatchCalls decodes the body of a call batch, appending its calls to dst. Their Args are views into data, and
// their strings share one copy of it. Keys it does not know are skipped, so a newer client may add some.
func DecodeBatchCalls(dst []BatchCall, data []byte) ([]BatchCall, error) {
	return decodeBatch(dst, data, "call batch", func(r *batchReader, c *BatchCall, key string) (err error) {
		switch key {
		case "i":
			c.ID, err = r.String()
		case "m":
			c.Method, err = r.String()
		case "r":
			c.Reply, err = r.String()
		case "d":
			c.Deadline, err = r.String()
		case "a":
			c.Args, err = r.Raw()
		default:
			_, err = r.Raw()
		}
		return err
	})
}

// AppendMsgpack appends r's msgpack encoding to dst, as BatchCall.AppendMsgpack does for calls.
func (r *BatchReply) AppendMsgpack(dst []byte) []byte {
	dst = codec.AppendMapLen(dst, 3)
	dst = codec.AppendString(codec.AppendString(dst, "t"), r.Token)
	dst = codec.AppendString(codec.AppendString(dst, "s"), r.Status)
	return appendRaw(codec.AppendString(dst, "b"), r.Body)
}

// DecodeBatchReplies decodes the body of a reply batch, appending its replies to dst. Their bodies are views into
// data, and their tokens share one copy of it; unknown keys are skipped.
func DecodeBatchReplies(dst []BatchReply, data []byte) ([]BatchReply, error) {
	return decodeBatch(dst, data, "reply batch", func(r *batchReader, e *BatchReply, key string) (err error) {
		switch key {
		case "t":
			e.Token, err = r.String()
		case "s":
			var s []byte
			if s, err = r.Str(); err == nil {
				e.Status = status(s)
			}
		case "b":
			e.Body, err = r.Raw()
		default:
			_, err = r.Raw()
		}
		return err
	})
}

// decodeBatch decodes an array of maps with string keys, appending an entry per map to dst; field reads the value of
// a key into the entry.
func decodeBatch[T any](dst []T, data []byte, what string,
	field func(r *batchReader, e *T, key string) error) ([]T, error) {
	r := &batchReader{Reader: codec.NewReader(data), data: data}
	n, err := r.ArrayLen()
	for i := 0; err == nil && i < n; i++ {
		// Decoded in place: a local entry would escape to field and cost an allocation each.
		var zero T
		dst = append(dst, zero)
		e := &dst[len(dst)-1]
		var pairs int
		pairs, err = r.MapLen()
		for j := 0; err == nil && j < pairs; j++ {
			var k []byte
			if k, err = r.Str(); err == nil {
				err = field(r, e, string(k))
			}
		}
	}
	if err == nil && r.Len() > 0 {
		err = fmt.Errorf("%d trailing bytes", r.Len())
	}
	if err != nil {
		return dst, fmt.Errorf("fleet: decode %s: %w", what, err)
	}
	return dst, nil
}

// batchReader reads a batch body. The strings it reads are substrings of one copy of the body, made on the first:
// a batch costs one allocation for all of them instead of one each, and an entry kept by a call keeps that copy.
type batchReader struct {
	*codec.Reader
	data []byte
	copy string
}

// String reads a msgpack string.
func (r *batchReader) String() (string, error) {
	b, err := r.Str()
	if err != nil || len(b) == 0 {
		return "", err
	}
	if r.copy == "" {
		r.copy = string(r.data)
	}
	end := r.Offset()
	return r.copy[end-len(b) : end], nil
}

// status returns the Fleet-Status s without a copy for the statuses every reply carries.
func status(s []byte) string {
	switch string(s) {
	case codec.StatusOK:
		return codec.StatusOK
	case codec.StatusError:
		return codec.StatusError
	}
	return string(s)
}
