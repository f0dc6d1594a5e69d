package codec

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/natsfleet/natsfleet/internal/msgp"
)

// Msgpack is the default codec: MessagePack (github.com/vmihailenco/msgpack/v5). Struct fields are keyed by their
// msgpack tag, else their json tag, else their Go field name.
var Msgpack Codec = msgpackCodec{}

type msgpackCodec struct{}

func (msgpackCodec) ContentType() string { return ContentTypeMsgpack }

// sliceWriter lets a pooled encoder append straight to the caller's buffer. It implements WriteByte so msgpack
// uses it directly instead of wrapping it.
type sliceWriter struct{ b []byte }

func (w *sliceWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

func (w *sliceWriter) WriteByte(c byte) error {
	w.b = append(w.b, c)
	return nil
}

// The pools hold an encoder (decoder) together with the writer (reader) it is bound to: msgpack's own
// GetEncoder/GetDecoder pool only the encoder, and the bytes.Buffer/bytes.Reader each call would bind it to is an
// allocation of its own. Configured once at creation, so a pooled value is ready to use.
type encoder struct {
	w   sliceWriter
	enc *msgpack.Encoder
}

type decoder struct {
	r      bytes.Reader
	dec    *msgpack.Decoder
	broken bool // a panic left dec in an unknown state: do not reuse it
}

var encoders = sync.Pool{New: func() any {
	e := &encoder{}
	e.enc = msgpack.NewEncoder(&e.w)
	e.enc.SetCustomStructTag("json")
	return e
}}

var decoders = sync.Pool{New: func() any {
	d := &decoder{}
	d.dec = msgpack.NewDecoder(&d.r)
	d.dec.SetCustomStructTag("json")
	return d
}}

func getEncoder(dst []byte) *encoder {
	e := encoders.Get().(*encoder)
	e.w.b = dst
	return e
}

// done returns the encoded bytes and puts e back; it must not keep the caller's buffer alive.
func (e *encoder) done() []byte {
	b := e.w.b
	e.w.b = nil
	encoders.Put(e)
	return b
}

func getDecoder(data []byte) *decoder {
	d := decoders.Get().(*decoder)
	d.r.Reset(data)
	return d
}

// decodeValue and decode turn a panic inside msgpack into an error, so no body can crash a worker: v5.4.1 panics on
// some well-formed input, e.g. nil decoded into a time.Time (it calls reflect.Value.IsNil on a struct).
func (d *decoder) decodeValue(v reflect.Value) (err error) {
	defer d.recover(&err)
	return d.dec.DecodeValue(v)
}

func (d *decoder) decode(v any) (err error) {
	defer d.recover(&err)
	return d.dec.Decode(v)
}

func (d *decoder) recover(err *error) {
	if r := recover(); r != nil {
		d.broken = true
		*err = fmt.Errorf("msgpack: decoder panicked: %v", r)
	}
}

func (d *decoder) put() {
	if d.broken {
		return
	}
	d.r.Reset(nil)
	decoders.Put(d)
}

func (c msgpackCodec) Marshal(v any) ([]byte, error) {
	return c.AppendMarshal(nil, v)
}

func (msgpackCodec) AppendMarshal(dst []byte, v any) ([]byte, error) {
	e := getEncoder(dst)
	err := e.enc.Encode(v)
	b := e.done()
	if err != nil {
		return dst, fmt.Errorf("codec: msgpack: marshal %T: %w", v, err)
	}
	return b, nil
}

func (msgpackCodec) Unmarshal(data []byte, v any) error {
	if err := checkMsgpack(data); err != nil {
		return fmt.Errorf("codec: msgpack: unmarshal into %T: %w", v, err)
	}
	d := getDecoder(data)
	err := d.decode(v)
	d.put()
	if err != nil {
		return fmt.Errorf("codec: msgpack: unmarshal into %T: %w", v, err)
	}
	return nil
}

func (msgpackCodec) AppendArgs(dst []byte, args []any) ([]byte, error) {
	e := getEncoder(dst)
	err := e.enc.EncodeArrayLen(len(args))
	for i := 0; err == nil && i < len(args); i++ {
		if err = e.enc.Encode(args[i]); err != nil {
			err = fmt.Errorf("codec: msgpack: argument %d (%T): %w", i, args[i], err)
		}
	}
	b := e.done()
	if err != nil {
		return dst, err
	}
	return b, nil
}

func (msgpackCodec) DecodeArgs(data []byte, types []reflect.Type) ([]reflect.Value, error) {
	if len(data) == 0 {
		if len(types) == 0 {
			return nil, nil
		}
		return nil, countError(0, len(types))
	}
	// Validating first bounds every length the decoder will trust by the size of data (see checkMsgpack).
	if err := checkMsgpack(data); err != nil {
		return nil, &ArgsError{Index: -1, Err: err}
	}
	d := getDecoder(data)
	defer d.put()
	n, err := d.dec.DecodeArrayLen()
	if err != nil || n < 0 {
		return nil, &ArgsError{Index: -1, Err: fmt.Errorf("body is not a msgpack array (code 0x%02x)", data[0])}
	}
	if n != len(types) {
		return nil, countError(n, len(types))
	}
	if n == 0 {
		return nil, nil
	}
	vals := make([]reflect.Value, n)
	for i, t := range types {
		v := reflect.New(t).Elem()
		if err := d.decodeValue(v); err != nil {
			return nil, &ArgsError{Index: i, Type: t, Err: err}
		}
		vals[i] = v
	}
	return vals, nil
}

// checkMsgpack reports whether data holds exactly one well-formed msgpack value, without allocating. The decoder
// sizes slices from the length a body claims (msgpack v5.4.1 applies no allocation limit to typed slices), so a
// five-byte array header could ask for gigabytes; after this check every claimed length fits in the data, because
// each element takes at least one byte. It also caps nesting at msgp.MaxDepth.
func checkMsgpack(data []byte) error {
	i, err := msgp.Skip(data, 0)
	if err != nil {
		var me *msgp.Error
		if errors.As(err, &me) {
			return &SyntaxError{Format: "msgpack", Offset: me.Offset, Reason: me.Reason}
		}
		return err
	}
	if i != len(data) {
		return &SyntaxError{Format: "msgpack", Offset: i, Reason: fmt.Sprintf("%d trailing bytes after the value", len(data)-i)}
	}
	return nil
}
