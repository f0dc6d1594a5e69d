package limits

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
)

// PoolOptions configures a Pool. The zero value is round robin.
type PoolOptions struct {
	// Algorithm picks the set for each acquisition: "round_robin" (alias "rr";
	// the default when empty) or "random" (alias "rand"), case-insensitive.
	Algorithm string
	// Seed makes "random" repeatable: worker views are seeded Seed+index.
	// Default 0: seeded from the runtime's randomness.
	Seed uint64
}

// Pool spreads acquisitions over several sets, for example one per API key or
// region: each acquisition picks one set and is served by it alone (if that set
// is exhausted the caller waits on it; there is no failover to another set).
// Give each worker Pool.ForWorker(i) so that round robin starts at a different
// set for each. Safe for concurrent use.
type Pool struct {
	sets       []*Set
	random     bool
	seed       uint64
	offset     int
	next       atomic.Uint64
	dispatched atomic.Uint64
	rngMu      sync.Mutex
	rng        *rand.Rand // nil: rand.IntN
}

// NewPool builds a pool over sets. No sets, a nil set, or an unknown algorithm
// is an error wrapping ErrInvalidLimit.
func NewPool(opts PoolOptions, sets ...*Set) (*Pool, error) {
	if len(sets) == 0 {
		return nil, invalidf("a pool needs at least one set")
	}
	for _, s := range sets {
		if s == nil {
			return nil, invalidf("nil set in pool")
		}
	}
	p := &Pool{sets: sets, seed: opts.Seed}
	switch strings.ToLower(strings.TrimSpace(opts.Algorithm)) {
	case "", "round_robin", "roundrobin", "rr":
	case "random", "rand":
		p.random = true
	default:
		return nil, invalidf("unsupported pool algorithm %q (want round_robin or random)", opts.Algorithm)
	}
	p.seedRNG()
	return p, nil
}

func (p *Pool) seedRNG() {
	if p.random && p.seed != 0 {
		s := p.seed + uint64(p.offset)
		p.rng = rand.New(rand.NewPCG(s, s^0x9e3779b97f4a7c15))
	}
}

// Acquire implements Provider on the picked set.
func (p *Pool) Acquire(ctx context.Context, req Request) (*Acquisition, error) {
	return p.pick().Acquire(ctx, req)
}

// TryAcquire implements Provider on the picked set.
func (p *Pool) TryAcquire(ctx context.Context, req Request) (*Acquisition, error) {
	return p.pick().TryAcquire(ctx, req)
}

// AcquireIn implements Provider on the picked set.
func (p *Pool) AcquireIn(ctx context.Context, partition string, req Request) (*Acquisition, error) {
	return p.pick().AcquireIn(ctx, partition, req)
}

// TryAcquireIn implements Provider on the picked set.
func (p *Pool) TryAcquireIn(ctx context.Context, partition string, req Request) (*Acquisition, error) {
	return p.pick().TryAcquireIn(ctx, partition, req)
}

func (p *Pool) pick() *Set {
	p.dispatched.Add(1)
	n := len(p.sets)
	if !p.random {
		return p.sets[(uint64(p.offset)+p.next.Add(1)-1)%uint64(n)]
	}
	if p.rng == nil {
		return p.sets[rand.IntN(n)]
	}
	p.rngMu.Lock()
	i := p.rng.IntN(n)
	p.rngMu.Unlock()
	return p.sets[i]
}

// ForWorker implements Provider: a view over the same sets whose round robin
// starts at set index (mod the number of sets), with its own counters.
func (p *Pool) ForWorker(index int) Provider {
	n := len(p.sets)
	v := &Pool{sets: p.sets, random: p.random, seed: p.seed, offset: ((index % n) + n) % n}
	v.seedRNG()
	return v
}

// Sets returns the pool's sets in order.
func (p *Pool) Sets() []*Set { return append([]*Set(nil), p.sets...) }

// Stats implements Provider with one entry per key, summed over the sets that
// have it: Capacity and Available are sums, Utilization is 1 -
// Available/Capacity, Algorithm is the sets' algorithm when they agree (else
// empty), and Extra holds the sums of the sets' extras plus num_limit_sets,
// the number of sets with that key. PoolStats has the per-set detail.
func (p *Pool) Stats() map[string]Stats {
	out := make(map[string]Stats)
	for _, s := range p.sets {
		for k, st := range s.Stats() {
			agg, ok := out[k]
			if !ok {
				out[k] = Stats{Key: k, Algorithm: st.Algorithm, Capacity: st.Capacity, Available: st.Available,
					Extra: map[string]float64{"num_limit_sets": 1}}
				for ek, ev := range st.Extra {
					out[k].Extra[ek] = ev
				}
				continue
			}
			if agg.Algorithm != st.Algorithm {
				agg.Algorithm = ""
			}
			agg.Capacity += st.Capacity
			agg.Available += st.Available
			for ek, ev := range st.Extra {
				agg.Extra[ek] += ev
			}
			agg.Extra["num_limit_sets"]++
			out[k] = agg
		}
	}
	for k, st := range out {
		st.Utilization = (st.Capacity - st.Available) / st.Capacity
		out[k] = st
	}
	return out
}

// PoolStats is concurry's LimitPool.get_stats shape.
type PoolStats struct {
	NumLimitSets  int                `json:"num_limit_sets"`
	LoadBalancing string             `json:"load_balancing"` // "RoundRobin" or "Random"
	WorkerIndex   int                `json:"worker_index"`
	BalancerStats PoolBalancerStats  `json:"balancer_stats"`
	LimitSets     []map[string]Stats `json:"limit_sets"`
}

// PoolBalancerStats describes how a pool (view) picked sets.
type PoolBalancerStats struct {
	Algorithm       string `json:"algorithm"`
	Offset          int    `json:"offset"`
	TotalDispatched uint64 `json:"total_dispatched"`
}

// PoolStats reports this pool (or worker view) and each of its sets.
func (p *Pool) PoolStats() PoolStats {
	alg := "RoundRobin"
	if p.random {
		alg = "Random"
	}
	ps := PoolStats{NumLimitSets: len(p.sets), LoadBalancing: alg, WorkerIndex: p.offset,
		BalancerStats: PoolBalancerStats{Algorithm: alg, Offset: p.offset, TotalDispatched: p.dispatched.Load()}}
	for _, s := range p.sets {
		ps.LimitSets = append(ps.LimitSets, s.Stats())
	}
	return ps
}
