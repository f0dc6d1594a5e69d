package wire

import (
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/natsfleet/natsfleet/internal/msgp"
)

// Batches. When calls to one worker pile up faster than they can be published one message each, a client sends them
// in one message, and a worker answers the replies that pile up for one client inbox in one message: under load the
// fleet pays NATS's per-message cost once per batch instead of once per call. Batches are msgpack only.
//
// ReplyBatchToken replaces the last token of the calls' reply subjects to form the subject a reply batch goes to:
// replies to _INBOX.abc.17 and _INBOX.abc.18 travel together to _INBOX.abc._b. Call reply tokens never take this
// value (clients number them in base 36, which has no '_').
const ReplyBatchToken = "_b"

// BatchCall is one call in a call batch: what a single call carries in its headers and body.
type BatchCall struct {
	ID       string             `msgpack:"i"`           // Fleet-Call-Id
	Method   string             `msgpack:"m"`           // Fleet-Method
	Reply    string             `msgpack:"r"`           // the reply subject
	Deadline string             `msgpack:"d,omitempty"` // Fleet-Deadline
	Args     msgpack.RawMessage `msgpack:"a"`           // the arguments array, msgpack
	Worker   string             `msgpack:"w,omitempty"` // Fleet-Worker: on an agent's calls subject, whose call it is
}

// BatchReply is one reply in a reply batch.
type BatchReply struct {
	Token  string             `msgpack:"t"`           // last token of the call's reply subject
	Status string             `msgpack:"s"`           // Fleet-Status
	Load   string             `msgpack:"l,omitempty"` // Fleet-Load
	Body   msgpack.RawMessage `msgpack:"b"`           // the reply body, msgpack
}

// AppendMsgpack appends c's msgpack encoding to dst: the map msgpack writes for the struct, written without
// reflection since every batched call pays for it.
func (c *BatchCall) AppendMsgpack(dst []byte) []byte {
	n := 4
	if c.Deadline != "" {
		n++
	}
	if c.Worker != "" {
		n++
	}
	dst = msgp.AppendMapLen(dst, n)
	dst = msgp.AppendString(msgp.AppendString(dst, "i"), c.ID)
	dst = msgp.AppendString(msgp.AppendString(dst, "m"), c.Method)
	dst = msgp.AppendString(msgp.AppendString(dst, "r"), c.Reply)
	if c.Deadline != "" {
		dst = msgp.AppendString(msgp.AppendString(dst, "d"), c.Deadline)
	}
	dst = appendRaw(msgp.AppendString(dst, "a"), c.Args)
	if c.Worker != "" {
		dst = msgp.AppendString(msgp.AppendString(dst, "w"), c.Worker)
	}
	return dst
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
		case "w":
			c.Worker, err = r.String()
		default:
			_, err = r.Raw()
		}
		return err
	})
}

// AppendMsgpack appends r's msgpack encoding to dst, as BatchCall.AppendMsgpack does for calls.
func (r *BatchReply) AppendMsgpack(dst []byte) []byte {
	n := 3
	if r.Load != "" {
		n = 4
	}
	dst = msgp.AppendMapLen(dst, n)
	dst = msgp.AppendString(msgp.AppendString(dst, "t"), r.Token)
	dst = msgp.AppendString(msgp.AppendString(dst, "s"), r.Status)
	if r.Load != "" {
		dst = msgp.AppendString(msgp.AppendString(dst, "l"), r.Load)
	}
	return appendRaw(msgp.AppendString(dst, "b"), r.Body)
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
		case "l":
			e.Load, err = r.String()
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
	r := &batchReader{Reader: msgp.NewReader(data), data: data}
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
		return dst, fmt.Errorf("decode %s: %w", what, err)
	}
	return dst, nil
}

// batchReader reads a batch body. The strings it reads are substrings of one copy of the body, made on the first:
// a batch costs one allocation for all of them instead of one each, and an entry kept by a call keeps that copy.
type batchReader struct {
	*msgp.Reader
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
	case StatusOK:
		return StatusOK
	case StatusError:
		return StatusError
	}
	return string(s)
}
