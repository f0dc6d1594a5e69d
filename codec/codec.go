package codec

import (
	"errors"
	"fmt"
	"mime"
	"reflect"
	"strings"
)

// Content types understood by ForContentType.
const (
	ContentTypeMsgpack = "application/msgpack"
	ContentTypeJSON    = "application/json"
)

// ErrUnsupportedContentType: ForContentType got a content type no codec handles.
var ErrUnsupportedContentType = errors.New("codec: unsupported content type")

// Codec encodes and decodes message bodies. Msgpack and JSON are safe for concurrent use.
type Codec interface {
	// ContentType is the value of the Content-Type header for bodies this codec writes.
	ContentType() string
	Marshal(v any) ([]byte, error)
	// AppendMarshal appends v's encoding to dst (lets hot paths reuse buffers).
	AppendMarshal(dst []byte, v any) ([]byte, error)
	// Unmarshal decodes data, which must hold exactly one value, into the value v points to.
	Unmarshal(data []byte, v any) error
	// AppendArgs appends the encoding of call arguments, as one array, to dst.
	AppendArgs(dst []byte, args []any) ([]byte, error)
	// DecodeArgs decodes an array body into values of exactly the given parameter types (an int parameter gets an
	// int, a struct its struct, a pointer a new pointer). Wrong count or undecodable element -> *ArgsError naming
	// the index, the expected type and the cause. An empty body means no arguments.
	DecodeArgs(data []byte, types []reflect.Type) ([]reflect.Value, error)
}

// ForContentType returns the codec for a Content-Type header value: "" or a msgpack type ("application/msgpack",
// "application/x-msgpack", "application/vnd.msgpack") -> Msgpack; "application/json" -> JSON. Parameters such as
// "; charset=utf-8" are allowed. Anything else is an error wrapping ErrUnsupportedContentType.
func ForContentType(ct string) (Codec, error) {
	// The exact header values our own callers send are matched without parsing: this runs for every call.
	switch ct {
	case "", ContentTypeMsgpack:
		return Msgpack, nil
	case ContentTypeJSON:
		return JSON, nil
	}
	if strings.TrimSpace(ct) == "" {
		return Msgpack, nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrUnsupportedContentType, ct, err)
	}
	switch mt {
	case ContentTypeMsgpack, "application/x-msgpack", "application/vnd.msgpack":
		return Msgpack, nil
	case ContentTypeJSON:
		return JSON, nil
	}
	return nil, fmt.Errorf("%w %q", ErrUnsupportedContentType, ct)
}

// ArgsError reports call arguments that do not fit a method's parameters.
type ArgsError struct {
	// Index is the position of the argument that failed to decode, or -1 when the error concerns the argument list
	// as a whole (wrong count, body not an array, malformed body).
	Index int
	// Type is the parameter type argument Index should have decoded into; nil when Index is -1.
	Type reflect.Type
	// Err is the cause.
	Err error
}

func (e *ArgsError) Error() string {
	if e.Index < 0 {
		return fmt.Sprintf("codec: bad arguments: %v", e.Err)
	}
	return fmt.Sprintf("codec: bad argument %d (%v): %v", e.Index, e.Type, e.Err)
}

func (e *ArgsError) Unwrap() error { return e.Err }

func countError(got, want int) *ArgsError {
	return &ArgsError{Index: -1, Err: fmt.Errorf("got %d arguments, want %d", got, want)}
}

// SyntaxError reports bytes that are not a well-formed encoding at all: truncated, an invalid code, a length larger
// than the data, trailing bytes. Unmarshal and DecodeArgs wrap it (DecodeArgs in an *ArgsError), so errors.As finds
// it.
type SyntaxError struct {
	Format string // "msgpack" or "json"
	Offset int    // of the first byte that does not fit
	Reason string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("malformed %s at byte %d: %s", e.Format, e.Offset, e.Reason)
}
