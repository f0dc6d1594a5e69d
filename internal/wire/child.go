package wire

import (
	"encoding/base64"
	"fmt"

	"github.com/natsfleet/natsfleet/codec"
)

// The environment a process-mode parent gives its child: EnvChild marks the process as a worker child and EnvSpec
// holds its WorkerSpec (msgpack, standard base64). The connection's settings travel alongside (broker.Options.Env).
const (
	EnvChild = "NATSFLEET_CHILD"
	EnvSpec  = "NATSFLEET_SPEC"
)

// ChildEnv returns the environment entries ("KEY=value") that make a process started with them serve spec as a
// process-mode child.
func ChildEnv(spec WorkerSpec) ([]string, error) {
	b, err := codec.Msgpack.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("child environment: %w", err)
	}
	return []string{EnvChild + "=1", EnvSpec + "=" + base64.StdEncoding.EncodeToString(b)}, nil
}

// ChildSpec decodes the value of EnvSpec.
func ChildSpec(encoded string) (WorkerSpec, error) {
	var spec WorkerSpec
	b, err := base64.StdEncoding.DecodeString(encoded)
	if err == nil {
		err = codec.Msgpack.Unmarshal(b, &spec)
	}
	if err != nil {
		return WorkerSpec{}, fmt.Errorf("%s: %w", EnvSpec, err)
	}
	return spec, nil
}
