package fleet

import (
	"reflect"

	"github.com/nats-io/nuid"

	"github.com/natsfleet/natsfleet/internal/actor"
	"github.com/natsfleet/natsfleet/internal/wire"
)

func init() { actor.Registry = kindRegistry{} }

// kindRegistry is how package client reaches the registered kinds and errors (actor.Registry).
type kindRegistry struct{}

func (kindRegistry) Kind(name string) (actor.Kind, error) {
	k, err := Lookup(name)
	if err != nil {
		return nil, err
	}
	return actorKind{k}, nil
}

func (kindRegistry) RemoteError(e wire.Error) error { return decodeError(e) }

// actorKind is a Kind as package client starts its workers and calls its methods (actor.Kind).
type actorKind struct{ k *Kind }

func (a actorKind) Start(opts actor.Options, args []any) (*actor.Worker, error) {
	return a.k.start(opts, args)
}

func (a actorKind) Method(name string) (actor.Method, error) { return a.k.method(name) }

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
