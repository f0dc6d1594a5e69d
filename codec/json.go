package codec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
)

// JSON is the codec for Content-Type "application/json" (encoding/json), so that any NATS client can call a worker.
// DecodeArgs also accepts a body that is not an array as the only argument of a one-parameter method.
var JSON Codec = jsonCodec{}

type jsonCodec struct{}

func (jsonCodec) ContentType() string { return ContentTypeJSON }

func (c jsonCodec) Marshal(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("codec: json: marshal %T: %w", v, err)
	}
	return b, nil
}

func (c jsonCodec) AppendMarshal(dst []byte, v any) ([]byte, error) {
	b, err := c.Marshal(v)
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

func (jsonCodec) Unmarshal(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("codec: json: unmarshal into %T: %w", v, jsonCause(err))
	}
	return nil
}

// jsonCause turns encoding/json's syntax errors into *SyntaxError.
func jsonCause(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return &SyntaxError{Format: "json", Offset: int(se.Offset), Reason: se.Error()}
	}
	return err
}

func (jsonCodec) AppendArgs(dst []byte, args []any) ([]byte, error) {
	if args == nil {
		args = []any{} // an empty array, not null
	}
	b, err := json.Marshal(args)
	if err != nil {
		return dst, fmt.Errorf("codec: json: marshal arguments: %w", err)
	}
	return append(dst, b...), nil
}

func (jsonCodec) DecodeArgs(data []byte, types []reflect.Type) ([]reflect.Value, error) {
	body := bytes.TrimSpace(data)
	if len(body) == 0 {
		if len(types) == 0 {
			return nil, nil
		}
		return nil, countError(0, len(types))
	}
	if !json.Valid(data) {
		var raw json.RawMessage // to learn the offset, counted in data
		return nil, &ArgsError{Index: -1, Err: jsonCause(json.Unmarshal(data, &raw))}
	}
	if body[0] != '[' {
		// Lets a person type `nats req fleet.w.X '42'` for a one-parameter method.
		if len(types) != 1 {
			return nil, &ArgsError{Index: -1, Err: fmt.Errorf("body is not a JSON array of %d arguments", len(types))}
		}
		v, err := decodeJSONValue(body, types[0])
		if err != nil {
			return nil, &ArgsError{Index: 0, Type: types[0], Err: err}
		}
		return []reflect.Value{v}, nil
	}
	vals, err := decodeJSONArgs(body, types)
	if err != nil && len(types) == 1 {
		// A one-parameter method whose parameter is itself a list may get the list bare: [1,2,3] for []int.
		if v, err1 := decodeJSONValue(body, types[0]); err1 == nil {
			return []reflect.Value{v}, nil
		}
	}
	return vals, err
}

func decodeJSONArgs(body []byte, types []reflect.Type) ([]reflect.Value, error) {
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		return nil, &ArgsError{Index: -1, Err: err}
	}
	if len(raws) != len(types) {
		return nil, countError(len(raws), len(types))
	}
	if len(raws) == 0 {
		return nil, nil
	}
	vals := make([]reflect.Value, len(types))
	for i, t := range types {
		v, err := decodeJSONValue(raws[i], t)
		if err != nil {
			return nil, &ArgsError{Index: i, Type: t, Err: err}
		}
		vals[i] = v
	}
	return vals, nil
}

func decodeJSONValue(raw []byte, t reflect.Type) (reflect.Value, error) {
	p := reflect.New(t)
	if err := json.Unmarshal(raw, p.Interface()); err != nil {
		return reflect.Value{}, err
	}
	return p.Elem(), nil
}
