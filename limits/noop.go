package limits

import "context"

// Noop is a Provider without limits: every acquisition succeeds at once,
// without allocating, and Update and Release do nothing. Workers configured
// without limits get it.
var Noop Provider = noop{}

type noop struct{}

// noopAcquisition is shared by every Noop acquisition; with no set it is inert.
var noopAcquisition = &Acquisition{}

func (noop) Acquire(context.Context, Request) (*Acquisition, error)    { return noopAcquisition, nil }
func (noop) TryAcquire(context.Context, Request) (*Acquisition, error) { return noopAcquisition, nil }
func (noop) AcquireIn(context.Context, string, Request) (*Acquisition, error) {
	return noopAcquisition, nil
}
func (noop) TryAcquireIn(context.Context, string, Request) (*Acquisition, error) {
	return noopAcquisition, nil
}
func (noop) Stats() map[string]Stats  { return map[string]Stats{} }
func (n noop) ForWorker(int) Provider { return n }
