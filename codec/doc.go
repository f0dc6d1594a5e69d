// Package codec encodes and decodes the values natsfleet's calls carry: a method's arguments, as one array, and its
// result. Msgpack is the default and what natsfleet's own pools and workers send; JSON exists so that any NATS
// client can call a worker by hand (the protocol's headers and subjects are described in the README):
//
//	nats req fleet.w.W1 '[42]' -H Fleet-Method:Process -H Content-Type:application/json
//
// ForContentType maps a Content-Type header to its codec; an empty header means Msgpack.
//
// # Structs
//
// Both codecs see a struct the same way: a field is keyed by its msgpack tag, else its json tag, else its Go name,
// so plain untagged structs and structs written for encoding/json both round-trip through Msgpack. (Msgpack
// matches keys case-sensitively; encoding/json also accepts other cases.) Msgpack decodes a time.Time in the local
// time zone; compare times with time.Time.Equal.
//
// # Decoding arguments
//
// DecodeArgs returns values of exactly the parameter types it is given, so it never matters how msgpack would
// decode a number into an interface{}. An empty body means no arguments. A body that is not an array, has the
// wrong number of elements, or holds an element that does not decode into its parameter's type yields an
// *ArgsError naming the argument's index and expected type; bytes that are not a valid encoding at all are a
// *SyntaxError (inside the *ArgsError), found with errors.As. A body must hold exactly one value: trailing bytes are
// malformed.
//
// JSON is lenient for people typing requests: for a method with one parameter, a body that is not an array is that
// argument ('42' works like '[42]'), and when the array form does not decode but the whole body does (a bare
// [1,2,3] for a []int parameter), the whole body is the argument. Msgpack is strict.
//
// Decoding is safe on hostile input: Msgpack checks a body's structure before decoding it, so no length the body
// claims can exceed the bytes it has, and nesting deeper than 10000 levels is refused (encoding/json has the same
// limit). Neither codec panics on any input.
//
// # Allocation
//
// Msgpack encoders and decoders are pooled together with the buffer they write to or the reader they read from,
// and AppendArgs/AppendMarshal append to a caller's buffer, so encoding a small call does not allocate once the
// buffer has grown; decoding allocates the values it returns. Run
//
//	go test -bench . -benchmem ./codec
//
// to see the figures.
package codec
