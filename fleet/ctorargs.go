package fleet

import (
	"reflect"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/natsfleet/natsfleet/codec"
)

// decodeConstructorArgs decodes a spec's constructor arguments into the constructor's parameter types. A variadic
// constructor's arguments may come packed (the variadic ones as one array, the last element) or flat (one element
// each), which is what encoding the arguments a Go caller passes to a variadic function produces.
func decodeConstructorArgs(k *Kind, data []byte) ([]reflect.Value, error) {
	params := k.ConstructorParams()
	vals, err := codec.Msgpack.DecodeArgs(data, params)
	if err == nil || !k.ctorVar {
		if err != nil {
			return nil, &MethodError{Kind: k.name, Method: "constructor", Err: ErrBadArguments,
				Detail: err.Error()}
		}
		return vals, nil
	}
	var raw []msgpack.RawMessage
	if len(data) > 0 {
		if uerr := codec.Msgpack.Unmarshal(data, &raw); uerr != nil {
			return nil, &MethodError{Kind: k.name, Method: "constructor", Err: ErrBadArguments, Detail: err.Error()}
		}
	}
	fixed := len(params) - 1
	if len(raw) < fixed {
		return nil, &MethodError{Kind: k.name, Method: "constructor", Err: ErrBadArguments, Detail: err.Error()}
	}
	flat := make([]reflect.Type, len(raw))
	copy(flat, params[:fixed])
	for i := fixed; i < len(raw); i++ {
		flat[i] = params[fixed].Elem()
	}
	fvals, ferr := codec.Msgpack.DecodeArgs(data, flat)
	if ferr != nil {
		return nil, &MethodError{Kind: k.name, Method: "constructor", Err: ErrBadArguments, Detail: ferr.Error()}
	}
	rest := reflect.MakeSlice(params[fixed], len(raw)-fixed, len(raw)-fixed)
	for i := fixed; i < len(raw); i++ {
		rest.Index(i - fixed).Set(fvals[i])
	}
	return append(fvals[:fixed:fixed], rest), nil
}
