// Package msgp reads and writes by hand the few msgpack structures on every call's path (the entries of call and
// reply batches, one-integer arguments and results), where the msgpack library's reflection costs more than
// everything else the encoding does. The Append functions write what msgpack/v5 writes for the same values; Reader
// reads any well-formed encoding of them, so either side of the wire may use either. Skip validates a value's
// structure without decoding it, which is how package codec bounds what a hostile body can make the decoder
// allocate.
package msgp

import (
	"encoding/binary"
	"fmt"
)

// MaxDepth bounds how deeply arrays and maps may nest in a value, as encoding/json's limit does, so a hostile body
// cannot exhaust a decoder's stack.
const MaxDepth = 10000

// Error locates the first byte at which data stops being a well-formed msgpack value.
type Error struct {
	Offset int
	Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("malformed msgpack at byte %d: %s", e.Offset, e.Reason)
}

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
// views into the buffer. Every method fails with an *Error on data that is not the expected kind of value or runs
// past the end.
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
	return &Error{Offset: r.off, Reason: reason}
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
	end, err := Skip(r.data, r.off)
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

// Skip walks the well-formed msgpack value that starts at data[i] and returns the offset just past it, without
// allocating. Every length a value claims must fit in the bytes left, and nesting deeper than MaxDepth fails.
func Skip(data []byte, i int) (int, error) {
	fail := func(off int, reason string) error {
		return &Error{Offset: off, Reason: reason}
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
			if len(stack) >= MaxDepth {
				return i, fail(start, fmt.Sprintf("nesting deeper than %d", MaxDepth))
			}
			stack = append(stack, pending)
			pending = children
		}
	}
	return i, nil
}
