package codec

import (
	"bytes"
	"fmt"
	"reflect"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// Msgpack is the default codec: MessagePack (github.com/vmihailenco/msgpack/v5). Struct fields are keyed by their
// msgpack tag, else their json tag, else their Go field name.
var Msgpack Codec = msgpackCodec{}

// maxDepth bounds how deeply arrays and maps may nest in a body, like encoding/json's limit, so a hostile body
// cannot exhaust a worker's stack.
const maxDepth = 10000

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
// each element takes at least one byte. It also caps nesting at maxDepth.
func checkMsgpack(data []byte) error {
	i, err := skipMsgpack(data, 0)
	if err != nil {
		return err
	}
	if i != len(data) {
		return &malformedError{format: "msgpack", offset: i, reason: fmt.Sprintf("%d trailing bytes after the value", len(data)-i)}
	}
	return nil
}

// skipMsgpack walks the well-formed msgpack value that starts at data[i] and returns the offset just past it.
func skipMsgpack(data []byte, i int) (int, error) {
	fail := func(off int, reason string) error {
		return &malformedError{format: "msgpack", offset: off, reason: reason}
	}
	// pending counts the values still to read in the innermost open container; stack holds the counts of the
	// containers around it.
	var stackBuf [32]uint64
	stack := stackBuf[:0]
	pending := uint64(1)
	for {
		for pending == 0 && len(stack) > 0 {
			pending, stack = stack[len(stack)-1], stack[:len(stack)-1]
		}
		if pending == 0 {
			break
		}
		if i >= len(data) {
			return i, fail(i, "unexpected end of data")
		}
		start := i
		c := data[i]
		i++
		pending--
		var size, children uint64 // payload bytes to skip; values nested inside
		var lenBytes int          // width of a length field that follows the code
		switch {
		case c <= 0x7f || c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3: // fixint, nil, false, true
		case c <= 0x8f: // fixmap
			children = 2 * uint64(c&0x0f)
		case c <= 0x9f: // fixarray
			children = uint64(c & 0x0f)
		case c <= 0xbf: // fixstr
			size = uint64(c & 0x1f)
		case c == 0xc1:
			return i, fail(start, "invalid code 0xc1")
		case c == 0xc4 || c == 0xd9: // bin8, str8
			lenBytes = 1
		case c == 0xc5 || c == 0xda: // bin16, str16
			lenBytes = 2
		case c == 0xc6 || c == 0xdb: // bin32, str32
			lenBytes = 4
		case c == 0xc7: // ext8: length, type, data
			lenBytes, size = 1, 1
		case c == 0xc8:
			lenBytes, size = 2, 1
		case c == 0xc9:
			lenBytes, size = 4, 1
		case c == 0xcc || c == 0xd0:
			size = 1
		case c == 0xcd || c == 0xd1:
			size = 2
		case c == 0xca || c == 0xce || c == 0xd2:
			size = 4
		case c == 0xcb || c == 0xcf || c == 0xd3:
			size = 8
		case c >= 0xd4 && c <= 0xd8: // fixext 1, 2, 4, 8, 16: type byte and data
			size = 1 + 1<<(c-0xd4)
		case c == 0xdc || c == 0xde: // array16, map16
			lenBytes = 2
		case c == 0xdd || c == 0xdf: // array32, map32
			lenBytes = 4
		}
		if lenBytes > 0 {
			if len(data)-i < lenBytes {
				return i, fail(start, "truncated length")
			}
			var n uint64
			for _, b := range data[i : i+lenBytes] {
				n = n<<8 | uint64(b)
			}
			i += lenBytes
			switch c {
			case 0xdc, 0xdd:
				children = n
			case 0xde, 0xdf:
				children = 2 * n
			default:
				size += n
			}
		}
		if size > uint64(len(data)-i) {
			return i, fail(start, fmt.Sprintf("value of %d bytes exceeds the %d left", size, len(data)-i))
		}
		i += int(size)
		if children > 0 {
			if children > uint64(len(data)-i) {
				return i, fail(start, fmt.Sprintf("container of %d values exceeds the %d bytes left", children, len(data)-i))
			}
			if len(stack) >= maxDepth {
				return i, fail(start, fmt.Sprintf("nesting deeper than %d", maxDepth))
			}
			stack = append(stack, pending)
			pending = children
		}
	}
	return i, nil
}
