package fleet

import "github.com/nats-io/nats.go"

// HandleCall runs a served worker's call handler on m as the call subscription would, so that benchmarks can measure
// the worker's side of a call without the network.
func HandleCall(h *Hosted, m *nats.Msg) { h.onCall(m) }
