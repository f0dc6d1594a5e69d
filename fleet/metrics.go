package fleet

import (
	"cmp"
	"slices"

	"github.com/natsfleet/natsfleet/limits"
)

// What a metrics exporter reads besides the CallRecords of ServeOptions.OnCall: the workers an agent hosts, their
// load and their limits. None of it takes a lock a call's path takes, so scraping does not slow calls down.

// Workers returns the workers the agent hosts now, standing and spawned, ordered by kind and then index.
func (a *Agent) Workers() []*Hosted {
	a.mu.Lock()
	out := make([]*Hosted, 0, len(a.workers))
	for _, h := range a.workers {
		out = append(out, h)
	}
	a.mu.Unlock()
	slices.SortFunc(out, func(x, y *Hosted) int {
		return cmp.Or(cmp.Compare(x.spec.Kind, y.spec.Kind), cmp.Compare(x.spec.Index, y.spec.Index),
			cmp.Compare(x.spec.ID, y.spec.ID))
	})
	return out
}

// LimitStats reports the limits the worker's methods share with the rest of its pool, by key, as the worker sees them
// now (spec.LimitSet names the set); nil when the worker has no limits.
func (h *Hosted) LimitStats() map[string]limits.Stats {
	if h.set == nil {
		return nil
	}
	return h.set.Stats()
}
