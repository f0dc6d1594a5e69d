package codec

import (
	"encoding/binary"
	"fmt"
)

// Hand-written msgpack for the few structures on every call's path (the entries of call and reply batches), where
// msgpack's reflection costs more than everything else the encoding does. The Append functions write what
// msgpack/v5 writes for the same values; Reader reads any well-formed encoding of them, so either side of the wire may
// use either.

// AppendArrayLen appends the header of an array of n values.
func AppendArrayLen(dst []byte, n int) []byte { return appendLen(dst, n, 0x90, 15, 0xdc) }

// AppendMapLen appends the header of a map of n key-value pairs.
func AppendMapLen(dst []byte, n int) []byte { return appendLen(dst, n, 0x80, 15, 0xde) }

// appendLen appends a container header: fix+n up to fixMax, else the 16- or 32-bit form (code16, code16+1).
func appendLen(dst []byte, n int, fix byte, fixMax int, code16 byte) []byte {
	switch {
	case n <= fixMax:
		return append(dst, fix|byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(dst, code16), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(dst, code16+1), uint32(n))
	}
}

// AppendString appends s as a msgpack str.
func AppendString(dst []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		dst = append(dst, 0xa0|byte(n))
	case n <= 0xff:
		dst = append(dst, 0xd9, byte(n))
	case n <= 0xffff:
		dst = binary.BigEndian.AppendUint16(append(dst, 0xda), uint16(n))
	default:
		dst = binary.BigEndian.AppendUint32(append(dst, 0xdb), uint32(n))
	}
	return append(dst, s...)
}

// Reader reads msgpack values one after the other from a buffer, without reflection: the values it returns are
// views into the buffer. Every method fails, with an error matching ErrMalformed, on data that is not the expected
// kind of value or runs past the end.
type Reader struct {
	data []byte
	off  int
}

// NewReader reads data from its start.
func NewReader(data []byte) *Reader { return &Reader{data: data} }

// Len is the number of bytes not read yet.
func (r *Reader) Len() int { return len(r.data) - r.off }

// Offset is the number of bytes read so far: a value just read ends there.
func (r *Reader) Offset() int { return r.off }

func (r *Reader) fail(reason string) error {
	return &malformedError{format: "msgpack", offset: r.off, reason: reason}
}

// ArrayLen reads an array header and returns its number of values.
func (r *Reader) ArrayLen() (int, error) { return r.containerLen(0x90, 0xdc, "array", 1) }

// MapLen reads a map header and returns its number of key-value pairs.
func (r *Reader) MapLen() (int, error) { return r.containerLen(0x80, 0xde, "map", 2) }

// containerLen reads a container header of the fix form fix, or the 16- and 32-bit forms code16 and code16+1. Each
// of the n values it announces takes at least one byte, so an n that the bytes left cannot hold is malformed.
func (r *Reader) containerLen(fix, code16 byte, kind string, per int) (int, error) {
	if r.off >= len(r.data) {
		return 0, r.fail("unexpected end of data")
	}
	c := r.data[r.off]
	var n, hdr int
	switch {
	case c&0xf0 == fix:
		n, hdr = int(c&0x0f), 1
	case c == code16 && r.Len() >= 3:
		n, hdr = int(binary.BigEndian.Uint16(r.data[r.off+1:])), 3
	case c == code16+1 && r.Len() >= 5:
		n, hdr = int(binary.BigEndian.Uint32(r.data[r.off+1:])), 5
	default:
		return 0, r.fail(fmt.Sprintf("code 0x%02x is not %s header", c, article(kind)))
	}
	if n > (r.Len()-hdr)/per {
		return 0, r.fail(fmt.Sprintf("%s of %d values exceeds the %d bytes left", kind, n, r.Len()-hdr))
	}
	r.off += hdr
	return n, nil
}

func article(kind string) string {
	if kind == "array" {
		return "an array"
	}
	return "a " + kind
}

// Str reads a str or bin value and returns its bytes; nil reads as an empty value.
func (r *Reader) Str() ([]byte, error) {
	if r.off >= len(r.data) {
		return nil, r.fail("unexpected end of data")
	}
	c := r.data[r.off]
	var n, hdr int
	switch {
	case c >= 0xa0 && c <= 0xbf:
		n, hdr = int(c&0x1f), 1
	case c == 0xc0:
		r.off++
		return nil, nil
	case (c == 0xd9 || c == 0xc4) && r.Len() >= 2:
		n, hdr = int(r.data[r.off+1]), 2
	case (c == 0xda || c == 0xc5) && r.Len() >= 3:
		n, hdr = int(binary.BigEndian.Uint16(r.data[r.off+1:])), 3
	case (c == 0xdb || c == 0xc6) && r.Len() >= 5:
		n, hdr = int(binary.BigEndian.Uint32(r.data[r.off+1:])), 5
	default:
		return nil, r.fail(fmt.Sprintf("code 0x%02x is not a string", c))
	}
	if n > r.Len()-hdr {
		return nil, r.fail(fmt.Sprintf("string of %d bytes exceeds the %d left", n, r.Len()-hdr))
	}
	s := r.data[r.off+hdr : r.off+hdr+n : r.off+hdr+n]
	r.off += hdr + n
	return s, nil
}

// Raw reads the next value, whatever it is, and returns its whole encoding.
func (r *Reader) Raw() ([]byte, error) {
	end, err := skipMsgpack(r.data, r.off)
	if err != nil {
		return nil, err
	}
	v := r.data[r.off:end:end]
	r.off = end
	return v, nil
}

// DecodeInteger decodes raw, one msgpack value, into a T that is an int or an int64, when raw is an integer in a form
// that fits: the commonest arguments and results, decoded without the msgpack decoder's reflection and without an
// allocation for the value decoded into. It reports false for any other T or value (a uint64, a nil, a float), which
// the msgpack decoder then decodes or refuses.
func DecodeInteger[T any](raw []byte) (a T, ok bool) {
	var v int64
	if len(raw) == 0 {
		return a, false
	}
	switch c, n := raw[0], len(raw); {
	case c <= 0x7f && n == 1: // positive fixint
		v = int64(c)
	case c >= 0xe0 && n == 1: // negative fixint
		v = int64(int8(c))
	case c == 0xcc && n == 2:
		v = int64(raw[1])
	case c == 0xcd && n == 3:
		v = int64(binary.BigEndian.Uint16(raw[1:]))
	case c == 0xce && n == 5:
		v = int64(binary.BigEndian.Uint32(raw[1:]))
	case c == 0xd0 && n == 2:
		v = int64(int8(raw[1]))
	case c == 0xd1 && n == 3:
		v = int64(int16(binary.BigEndian.Uint16(raw[1:])))
	case c == 0xd2 && n == 5:
		v = int64(int32(binary.BigEndian.Uint32(raw[1:])))
	case c == 0xd3 && n == 9:
		v = int64(binary.BigEndian.Uint64(raw[1:]))
	default:
		return a, false
	}
	switch p := any(&a).(type) {
	case *int:
		*p = int(v)
	case *int64:
		*p = v
	default:
		return a, false
	}
	return a, true
}
