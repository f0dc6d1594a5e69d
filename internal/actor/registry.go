package actor

import "github.com/natsfleet/natsfleet/internal/wire"

// Registry is what package client needs of the kinds and errors registered with package fleet: the kinds, to start
// in-process workers and find their methods, and the errors remote workers report. Package fleet sets it when it is
// initialised, so it is set wherever package client, which imports fleet, runs.
var Registry interface {
	// Kind returns the kind registered under name.
	Kind(name string) (Kind, error)
	// RemoteError rebuilds the error a remote worker reported: a *fleet.RemoteError matching the registered
	// sentinel e names.
	RemoteError(e wire.Error) error
}

// Kind is a registered kind, as a pool uses it: a pool looks it up once, then calls it for every worker and call.
type Kind interface {
	// Start builds an instance with the constructor arguments args and starts a worker serving it; opts.Kind and
	// opts.Stopped are filled in.
	Start(opts Options, args []any) (*Worker, error)
	// Method returns the named method, or an error matching fleet.ErrUnknownMethod.
	Method(name string) (Method, error)
}
