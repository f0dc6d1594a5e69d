package wire

import (
	"sync"

	"github.com/nats-io/nats.go"
)

// Field is a header an Out can carry.
type Field uint8

// The fields, one per header an outgoing message may carry.
const (
	FieldCallID Field = iota
	FieldMethod
	FieldDeadline
	FieldContentType
	FieldTraceparent
	FieldStatus
	FieldControl
	FieldAbort
	FieldBatch
	FieldResend
	FieldLoad
	FieldWorker
	numFields
)

var fieldHeaders = [numFields]string{HeaderCallID, HeaderMethod, HeaderDeadline, HeaderContentType,
	HeaderTraceparent, HeaderStatus, HeaderControl, HeaderAbort, HeaderBatch, HeaderResend, HeaderLoad, HeaderWorker}

// Out is a reusable outgoing message. nats.Conn.PublishMsg encodes a message before it returns, so one Out serves
// message after message: its struct, header map, header values and body buffer are reused, and setting a header
// costs no allocation, since each value is a one-element array the header map points into. Get one from GetOut,
// GetCall or GetReply and give it back with Put, or keep one for a goroutine's own messages and Reset it between
// them.
type Out struct {
	Msg nats.Msg
	// Buf is a buffer to write the body into: append to Buf[:0], then set Msg.Data (and Buf, if it grew).
	Buf  []byte
	vals [numFields][1]string
	set  uint16 // the fields set since the last Reset
	// base are the fields every message of its pool carries: their header entries stay in the map between
	// messages, so that a call or a reply does not add and delete the same keys each time.
	base uint16
	pool *sync.Pool
}

// maxKeptBuf keeps one huge body from pinning its buffer in the pool.
const maxKeptBuf = 64 << 10

func outPool(base ...Field) *sync.Pool {
	var mask uint16
	for _, f := range base {
		mask |= 1 << f
	}
	p := &sync.Pool{}
	p.New = func() any {
		o := &Out{Buf: make([]byte, 0, 256), base: mask, pool: p}
		o.Msg.Header = make(nats.Header, 4)
		for f := range numFields {
			if mask&(1<<f) != 0 {
				o.Msg.Header[fieldHeaders[f]] = o.vals[f][:]
			}
		}
		return o
	}
	return p
}

var (
	outs    = outPool()
	calls   = outPool(FieldCallID, FieldMethod)
	replies = outPool(FieldCallID, FieldStatus, FieldContentType)
)

// GetOut returns a pooled message to subject with no headers and no body.
func GetOut(subject string) *Out { return get(outs, subject) }

// GetCall returns a pooled call message to subject; its FieldCallID and FieldMethod must be set.
func GetCall(subject string) *Out { return get(calls, subject) }

// GetReply returns a pooled reply message to subject; its FieldCallID, FieldStatus and FieldContentType must be
// set.
func GetReply(subject string) *Out { return get(replies, subject) }

func get(p *sync.Pool, subject string) *Out {
	o := p.Get().(*Out)
	o.Msg.Subject = subject
	return o
}

// Set sets header f to v.
func (o *Out) Set(f Field, v string) {
	if o.Msg.Header == nil {
		o.Msg.Header = make(nats.Header, 4)
	}
	o.vals[f][0] = v
	if (o.set|o.base)&(1<<f) == 0 {
		o.Msg.Header[fieldHeaders[f]] = o.vals[f][:]
	}
	o.set |= 1 << f
}

// Reset clears the subject, reply subject, headers and body, keeping what can be reused.
func (o *Out) Reset() {
	for f := range numFields {
		if o.set&(1<<f) != 0 {
			if o.base&(1<<f) == 0 {
				delete(o.Msg.Header, fieldHeaders[f])
			}
			o.vals[f][0] = ""
		}
	}
	o.set = 0
	o.Msg.Subject, o.Msg.Reply, o.Msg.Data = "", "", nil
	if cap(o.Buf) > maxKeptBuf {
		o.Buf = make([]byte, 0, 256)
	}
}

// Put resets o and returns it to its pool; o must not be used afterwards.
func (o *Out) Put() {
	o.Reset()
	if o.pool != nil {
		o.pool.Put(o)
	}
}
