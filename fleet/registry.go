package fleet

import (
	"reflect"

	"github.com/nats-io/nuid"

	"github.com/natsfleet/natsfleet/internal/actor"
	"github.com/natsfleet/natsfleet/internal/wire"
)

func init() { actor.Registry = kindRegistry{} }

// kindRegistry is how package client starts in-process workers of the registered kinds (actor.Registry).
type kindRegistry struct{}

func (kindRegistry) Start(kind string, opts actor.Options, args []any) (*actor.Worker, error) {
	k, err := Lookup(kind)
	if err != nil {
		return nil, err
	}
	return k.start(opts, args)
}

func (kindRegistry) Method(kind, name string) (actor.Method, error) {
	k, err := Lookup(kind)
	if err != nil {
		return nil, err
	}
	return k.method(name)
}

// start builds an instance of the kind with the constructor arguments args and starts a worker serving it.
func (k *Kind) start(opts actor.Options, args []any) (*actor.Worker, error) {
	inst, err := k.construct(args)
	if err != nil {
		return nil, err
	}
	return k.startInstance(inst, opts), nil
}

func (k *Kind) startInstance(inst reflect.Value, opts actor.Options) *actor.Worker {
	if opts.ID == "" {
		opts.ID = nuid.Next()
	}
	opts.Kind, opts.Stopped = k.name, ErrWorkerStopped
	return actor.Start(inst, opts)
}

func (kindRegistry) RemoteError(e wire.Error) error { return decodeError(e) }
