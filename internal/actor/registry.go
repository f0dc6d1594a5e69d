package actor

import "github.com/natsfleet/natsfleet/internal/wire"

// Registry is what package client needs of the kinds and errors registered with package fleet: it starts in-process
// workers of a kind, finds a kind's methods, and rebuilds the errors remote workers report. Package fleet sets it
// when it is initialised, so it is set wherever package client, which imports fleet, runs.
var Registry interface {
	// Start builds an instance of kind with the constructor arguments args and starts a worker serving it;
	// opts.Kind and opts.Stopped are filled in.
	Start(kind string, opts Options, args []any) (*Worker, error)
	// Method returns the named method of kind, or an error matching fleet.ErrUnknownMethod.
	Method(kind, method string) (Method, error)
	// RemoteError rebuilds the error a remote worker reported: a *fleet.RemoteError matching the registered
	// sentinel e names.
	RemoteError(e wire.Error) error
}
