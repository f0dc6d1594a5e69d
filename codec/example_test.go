package codec_test

import (
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// A worker picks the codec from the call's Content-Type header.
func ExampleForContentType() {
	for _, ct := range []string{"", "application/json; charset=utf-8", "text/plain"} {
		c, err := codec.ForContentType(ct)
		if err != nil {
			fmt.Println(err, errors.Is(err, codec.ErrUnsupportedContentType))
			continue
		}
		fmt.Printf("%q -> %s\n", ct, c.ContentType())
	}
	// Output:
	// "" -> application/msgpack
	// "application/json; charset=utf-8" -> application/json
	// codec: unsupported content type "text/plain" true
}

// The caller encodes the arguments as one array; the worker decodes each into its parameter's type.
func ExampleCodec_DecodeArgs() {
	body, err := codec.Msgpack.AppendArgs(nil, []any{42, "rows"})
	if err != nil {
		panic(err)
	}
	// The parameter types of func (d *DataProcessor) Process(ctx context.Context, value int, label string).
	params := []reflect.Type{reflect.TypeFor[int](), reflect.TypeFor[string]()}
	args, err := codec.Msgpack.DecodeArgs(body, params)
	if err != nil {
		panic(err)
	}
	fmt.Println(args[0].Interface(), args[1].Interface())

	_, err = codec.Msgpack.DecodeArgs(body, []reflect.Type{reflect.TypeFor[string](), reflect.TypeFor[string]()})
	var ae *codec.ArgsError
	fmt.Println(errors.As(err, &ae), ae.Index, ae.Type)
	// Output:
	// 42 rows
	// true 0 string
}

// Any NATS client can call a worker with a JSON body; a bare value is the only argument of a one-parameter method.
func ExampleCodec_DecodeArgs_json() {
	params := []reflect.Type{reflect.TypeFor[int]()}
	for _, body := range []string{`[42]`, `42`} {
		args, err := codec.JSON.DecodeArgs([]byte(body), params)
		if err != nil {
			panic(err)
		}
		fmt.Println(body, "->", args[0].Interface())
	}
	// Output:
	// [42] -> 42
	// 42 -> 42
}

func ExampleFormatDeadline() {
	deadline := time.Date(2025, 1, 2, 3, 4, 5, 600, time.FixedZone("CET", 3600))
	h := wire.FormatDeadline(deadline)
	back, err := wire.ParseDeadline(h)
	fmt.Println(h, back.Equal(deadline), err)
	// Output:
	// 2025-01-02T02:04:05.0000006Z true <nil>
}
