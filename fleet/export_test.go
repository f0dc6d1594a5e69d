package fleet

import (
	"reflect"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/internal/actor"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// What the tests of this package reach of its unexported machinery.

type (
	Hosted       = hosted
	ServeOptions = serveOptions
	MethodStats  = methodStats
)

// Serve serves one worker as an agent does.
func Serve(nc *nats.Conn, spec wire.WorkerSpec, opts ServeOptions) (*Hosted, error) {
	return serve(nc, spec, opts)
}

// Metadata keys of a worker's service identity and endpoints.
const (
	MetaPool   = metaPool
	MetaAgent  = metaAgent
	MetaIndex  = metaIndex
	MetaParams = metaParams
	MetaResult = metaResult
)

// MethodStats returns a served worker's counters per method.
func (h *hosted) MethodStats() []MethodStats { return h.methodCounts() }

// Stats returns a served worker's counters.
func (h *hosted) Stats() WorkerStats { return h.stats() }

// Worker is the worker a served worker runs its calls on.
func (h *hosted) Worker() *actor.Worker { return h.w }

// HandleCall runs a served worker's call handler on m as the call subscription would, so that benchmarks can measure
// the worker's side of a call without the network.
func HandleCall(h *Hosted, m *nats.Msg) { h.onCall(m) }

// Short reports whether the worker would run the next call of method inline when idle: tests of inline calls wait
// for it, since a run slowed down by a loaded machine makes a short method look long for a while.
func Short(h *Hosted, method string) bool {
	m, err := h.kind.method(method)
	return err == nil && h.pace[m].short()
}

// ReplyBatchOpen reports whether the worker is gathering the replies of a call batch it serves.
func ReplyBatchOpen(h *Hosted) bool {
	h.replies.mu.Lock()
	defer h.replies.mu.Unlock()
	return h.replies.isOpen
}

// ReplyChunk is how many calls of a batch a worker serves before it sends the replies gathered so far.
const ReplyChunk = replyChunk

// Method returns the named method of k as tasks name it.
func Method(k *Kind, name string) (actor.Method, error) { return k.method(name) }

// Direct reports whether the method is called without reflection when its arguments fit exactly.
func Direct(m actor.Method) bool { return m.(*method).direct != nil }

// DirectArg decodes the one argument of a call to m as a served worker does before it calls m directly.
func DirectArg(m actor.Method, cd codec.Codec, body []byte) (any, bool) {
	return directArg(m.(*method), cd, body)
}

// StartWorker starts an in-process worker of k, as package client does.
func StartWorker(k *Kind, opts actor.Options, args ...any) (*actor.Worker, error) {
	return k.start(opts, args)
}

// ConvertArgs converts args to m's parameter types as an in-process pool does.
func ConvertArgs(m actor.Method, args ...any) ([]reflect.Value, error) { return m.Args(args) }

// EncodeError and DecodeError are an error's round trip across processes.
var (
	EncodeError = encodeError
	DecodeError = decodeError
)

// Hosted lists the workers the agent serves, ordered as Workers orders them.
func (a *Agent) Hosted() []*Hosted {
	var out []*Hosted
	for _, st := range a.Workers() {
		a.mu.Lock()
		if h := a.workers[st.ID]; h != nil {
			out = append(out, h)
		}
		a.mu.Unlock()
	}
	return out
}
