package fleet

import (
	"cmp"
	"os"
	"slices"

	"github.com/natsfleet/natsfleet/limits"
)

// WorkerStats describe one worker: its identity, its counters and, for an agent's workers, the limits it shares
// with its pool.
type WorkerStats struct {
	ID       string `json:"id" msgpack:"id"`
	Index    int    `json:"index" msgpack:"index"`
	Kind     string `json:"kind" msgpack:"kind"`
	Pool     string `json:"pool,omitempty" msgpack:"pool,omitempty"` // "" for a standing or in-process worker
	Calls    int64  `json:"calls" msgpack:"calls"`                   // calls completed
	Errors   int64  `json:"errors" msgpack:"errors"`                 // calls completed with an error
	InFlight int64  `json:"in_flight" msgpack:"in_flight"`           // queued or running
	Stopped  bool   `json:"stopped" msgpack:"stopped"`
	PID      int    `json:"pid" msgpack:"pid"`   // process hosting the worker
	Host     string `json:"host" msgpack:"host"` // machine hosting the worker
	// LimitSet names the limit set the worker's methods share with their pool, and Limits are its limits by key as
	// the worker sees them now; both empty when it has none. Agent.Workers reports them; a stats request does not.
	LimitSet string                  `json:"limit_set,omitempty" msgpack:"-"`
	Limits   map[string]limits.Stats `json:"limits,omitempty" msgpack:"-"`
}

var (
	pid     = os.Getpid()
	host, _ = os.Hostname()
)

// stats are the worker's counters.
func (h *hosted) stats() WorkerStats {
	st := h.w.Stats()
	return WorkerStats{ID: h.spec.ID, Index: h.spec.Index, Kind: h.spec.Kind, Pool: h.spec.Pool, Calls: st.Calls,
		Errors: st.Errors, InFlight: st.InFlight, Stopped: st.Stopped, PID: pid, Host: host}
}

// Workers describes the workers the agent hosts now, standing and spawned, ordered by kind and then index, with
// their limits: what a metrics exporter reads. None of it takes a lock a call's path takes, so reading it does not
// slow calls down.
func (a *Agent) Workers() []WorkerStats {
	a.mu.Lock()
	hs := make([]*hosted, 0, len(a.workers))
	for _, h := range a.workers {
		hs = append(hs, h)
	}
	a.mu.Unlock()
	out := make([]WorkerStats, len(hs))
	for i, h := range hs {
		out[i] = h.stats()
		if h.set != nil {
			out[i].LimitSet, out[i].Limits = h.spec.LimitSet, h.set.Stats()
		}
	}
	slices.SortFunc(out, func(x, y WorkerStats) int {
		return cmp.Or(cmp.Compare(x.Kind, y.Kind), cmp.Compare(x.Index, y.Index), cmp.Compare(x.ID, y.ID))
	})
	return out
}
