package codec

import (
	"errors"
	"fmt"
	"mime"
	"reflect"
	"strings"
	"time"
)

// Header names (NATS message headers) that carry a call's metadata.
const (
	HeaderCallID      = "Fleet-Call-Id"
	HeaderMethod      = "Fleet-Method"
	HeaderDeadline    = "Fleet-Deadline" // absolute deadline, RFC 3339 with nanoseconds (UTC); see FormatDeadline
	HeaderContentType = "Content-Type"
	HeaderTraceparent = "traceparent"
	HeaderStatus      = "Fleet-Status" // on replies: StatusOK, StatusError or StatusProgress
)

// Values of HeaderStatus on replies.
const (
	StatusOK       = "ok"       // the body is the method's result
	StatusError    = "error"    // the body is an Error
	StatusProgress = "progress" // the body is a Progress; more replies follow
)

// Content types understood by ForContentType.
const (
	ContentTypeMsgpack = "application/msgpack"
	ContentTypeJSON    = "application/json"
)

// Sentinel errors. Errors returned by this package match them with errors.Is.
var (
	// ErrBadArgs: a call's arguments do not fit the method's parameters (count or type). Returned as *ArgsError.
	ErrBadArgs = errors.New("codec: bad arguments")
	// ErrUnsupportedContentType: ForContentType got a content type no codec handles.
	ErrUnsupportedContentType = errors.New("codec: unsupported content type")
	// ErrMalformed: the bytes are not a well-formed encoding at all (truncated, invalid code, trailing bytes).
	ErrMalformed = errors.New("codec: malformed data")
)

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
	// int, a struct its struct, a pointer a new pointer). Wrong count or undecodable element -> *ArgsError
	// (errors.Is ErrBadArgs) naming the index, the expected type and the cause. An empty body means no arguments.
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

// Is makes every *ArgsError match ErrBadArgs.
func (e *ArgsError) Is(target error) bool { return target == ErrBadArgs }

func (e *ArgsError) Unwrap() error { return e.Err }

func countError(got, want int) *ArgsError {
	return &ArgsError{Index: -1, Err: fmt.Errorf("got %d arguments, want %d", got, want)}
}

// malformedError locates the first byte at which data stops being a valid encoding.
type malformedError struct {
	format string
	offset int
	reason string
}

func (e *malformedError) Error() string {
	return fmt.Sprintf("malformed %s at byte %d: %s", e.format, e.offset, e.reason)
}

func (e *malformedError) Is(target error) bool { return target == ErrMalformed }

// Error is the body of a reply whose Fleet-Status is "error".
type Error struct {
	Type    string `msgpack:"type" json:"type"` // Go type of the error, e.g. "*fs.PathError"
	Message string `msgpack:"message" json:"message"`
	Stack   string `msgpack:"stack,omitempty" json:"stack,omitempty"`
	// Code names a registered sentinel error (fleet.RegisterError), e.g. "fleet.ErrUnknownMethod", so the caller
	// can rebuild an error that matches it with errors.Is.
	Code string `msgpack:"code,omitempty" json:"code,omitempty"`
}

// Progress is the body of a reply whose Fleet-Status is "progress".
type Progress struct {
	Seq   uint64 `msgpack:"seq" json:"seq"` // per call, increasing, lets the caller drop stale/out-of-order events
	Bar   string `msgpack:"bar" json:"bar"` // identifies one bar inside a call (a method may report several)
	Desc  string `msgpack:"desc" json:"desc"`
	N     int64  `msgpack:"n" json:"n"`
	Total int64  `msgpack:"total" json:"total"` // 0 = unknown
	Done  bool   `msgpack:"done,omitempty" json:"done,omitempty"`
}

// FormatDeadline formats t for the Fleet-Deadline header: RFC 3339 with nanoseconds, in UTC. The zero time (no
// deadline) formats as "".
func FormatDeadline(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// ParseDeadline parses a Fleet-Deadline header value. "" means no deadline and returns the zero time. Any RFC 3339
// time is accepted, with or without fractional seconds and in any offset; the result is in UTC.
func ParseDeadline(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("codec: bad deadline %q: %w", s, err)
	}
	return t.UTC(), nil
}
