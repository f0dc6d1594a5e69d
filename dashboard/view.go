package dashboard

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/wire"
	"github.com/natsfleet/natsfleet/limits"
)

// The view is what the dashboard has heard of the fleet: the collector (collect.go) feeds it what NATS carries, and
// build turns it into a Snapshot. Every method takes the time explicitly, so that health, forgetting and histories
// are pure functions of what was heard and when.

// maxWorkers bounds the workers a view tracks: heartbeats are anyone's to publish, and a flood of made-up worker
// IDs must not grow the dashboard without end.
const maxWorkers = 10_000

// partitionSep separates a set's name from a partition in the keys of the limits bucket (package limits).
const partitionSep = "._p."

type view struct {
	refresh, history, forget time.Duration

	agents  map[string]*agentSeen
	workers map[string]*workerSeen
	alive   map[string]time.Time // each pool's last keepalive
	sets    map[string]*setSeen
	// problems are what the last sample of the limits could not read.
	problems []string
}

type agentSeen struct {
	info fleet.AgentInfo
	seen time.Time
}

type workerSeen struct {
	hb   wire.Heartbeat // the last heartbeat
	beat time.Time      // when it came
	// The counters, from heartbeats and stats replies, whichever came last; errors come in stats replies only.
	calls, inFlight, errors int64
}

type setSeen struct {
	partitions int
	limits     map[string]*limitSeen
}

type limitSeen struct {
	now  limits.Stats
	hist [][2]float64
}

func newView(o Options) *view {
	return &view{refresh: o.Refresh, history: o.History, forget: o.Forget, agents: map[string]*agentSeen{},
		workers: map[string]*workerSeen{}, alive: map[string]time.Time{}, sets: map[string]*setSeen{}}
}

// beat records a heartbeat that came at now.
func (v *view) beat(hb wire.Heartbeat, now time.Time) {
	w := v.workers[hb.WorkerID]
	if w == nil {
		if len(v.workers) >= maxWorkers {
			return
		}
		w = &workerSeen{}
		v.workers[hb.WorkerID] = w
	}
	w.hb, w.beat = hb, now
	w.calls, w.inFlight = max(w.calls, hb.Calls), hb.InFlight
}

// stats records a worker's answer to a stats request: fresher counters than its last heartbeat, and its errors.
func (v *view) stats(s fleet.WorkerStats) {
	if w := v.workers[s.ID]; w != nil {
		w.calls, w.inFlight, w.errors = max(w.calls, s.Calls), s.InFlight, max(w.errors, s.Errors)
	}
}

// keepalive records a pool's keepalive at now.
func (v *view) keepalive(pool string, now time.Time) {
	if _, ok := v.alive[pool]; ok || len(v.alive) < maxWorkers {
		v.alive[pool] = now
	}
}

// discovered records the agents that answered a discovery request at now.
func (v *view) discovered(infos []fleet.AgentInfo, now time.Time) {
	for _, info := range infos {
		v.agents[info.ID] = &agentSeen{info: info, seen: now}
	}
}

// interval is a worker's heartbeat interval, as its heartbeat gives it.
func (w *workerSeen) interval() time.Duration {
	return cmp.Or(max(0, w.hb.Interval), fleet.DefaultHeartbeatInterval)
}

// health is what the age of w's last heartbeat at now says of it.
func (w *workerSeen) health(now time.Time) string {
	age, iv := now.Sub(w.beat), w.interval()
	switch {
	case w.hb.Stopping:
		return HealthStopping
	case age <= 2*iv:
		return HealthAlive
	case age <= 3*iv:
		return HealthLate
	}
	return HealthLost
}

// polled lists the workers to ask for their stats at now: those that may answer, stopping ones included (they
// answer until their calls have drained).
func (v *view) polled(now time.Time) []string {
	var ids []string
	for id, w := range v.workers {
		if h := w.health(now); h != HealthLost {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// sample reads the values of the limits bucket's keys at now: the state of every set, the busiest partition of
// partitioned ones, and a point of each limit's history.
func (v *view) sample(values map[string][]byte, now time.Time) {
	v.problems = v.problems[:0]
	cur := map[string]*setSeen{}
	for key, raw := range values {
		name, _, partition := strings.Cut(key, partitionSep)
		st, err := limits.ReadState(raw, now)
		if err != nil {
			v.problems = append(v.problems, fmt.Sprintf("limits bucket key %q: %v", key, err))
			continue
		}
		set := cur[name]
		if set == nil {
			set = &setSeen{limits: map[string]*limitSeen{}}
			cur[name] = set
		}
		if partition {
			set.partitions++
		}
		for k, s := range st {
			l := set.limits[k]
			if l == nil || s.Utilization > l.now.Utilization {
				set.limits[k] = &limitSeen{now: s}
			}
		}
	}
	slices.Sort(v.problems)
	cutoff := unix(now.Add(-v.history))
	for name, set := range cur {
		for k, l := range set.limits {
			if old := v.sets[name]; old != nil && old.limits[k] != nil {
				h := old.limits[k].hist
				i, _ := slices.BinarySearchFunc(h, cutoff, func(p [2]float64, t float64) int { return cmp.Compare(p[0], t) })
				l.hist = h[i:]
			}
			l.hist = append(l.hist, [2]float64{unix(now), l.now.Utilization})
		}
	}
	v.sets = cur
}

// prune forgets, at now, the workers lost or stopped for longer than the view keeps them, the agents that stopped
// answering as long, and the keepalives of pools gone as long.
func (v *view) prune(now time.Time) {
	for id, w := range v.workers {
		keep := v.forget
		if w.hb.Stopping {
			keep = 3 * w.interval() // a worker that said it stops is gone, not lost
		}
		if now.Sub(w.beat) > keep {
			delete(v.workers, id)
		}
	}
	for id, a := range v.agents {
		if now.Sub(a.seen) > v.forget {
			delete(v.agents, id)
		}
	}
	for id, at := range v.alive {
		if now.Sub(at) > v.forget {
			delete(v.alive, id)
		}
	}
}

// build is the Snapshot of the view at now.
func (v *view) build(now time.Time) Snapshot {
	s := Snapshot{At: unix(now), History: v.history.Seconds(), Agents: []Agent{}, Pools: []Pool{},
		Limits: []LimitSet{}, Problems: append([]string{}, v.problems...)}
	busy := map[string]int64{} // in-flight calls by agent
	pools := map[[2]string]*Pool{}
	for id, w := range v.workers {
		busy[w.hb.Agent] += w.inFlight
		key := [2]string{w.hb.Pool, ""}
		if w.hb.Pool == "" {
			key[1] = w.hb.Kind // standing workers: one group per kind
		}
		p := pools[key]
		if p == nil {
			p = &Pool{ID: w.hb.Pool, Kind: w.hb.Kind, Standing: w.hb.Pool == "", Status: StatusStanding}
			pools[key] = p
		}
		p.Workers = append(p.Workers, Worker{ID: id, Agent: w.hb.Agent, Index: w.hb.Index, InFlight: w.inFlight,
			Calls: w.calls, Errors: w.errors, Health: w.health(now), Age: now.Sub(w.beat).Seconds(),
			Interval: w.interval().Seconds(), Conn: w.hb.Conn})
		p.InFlight, p.Calls, p.Errors = p.InFlight+w.inFlight, p.Calls+w.calls, p.Errors+w.errors
	}
	for _, p := range pools {
		slices.SortFunc(p.Workers, func(a, b Worker) int { return cmp.Or(cmp.Compare(a.Index, b.Index), strings.Compare(a.ID, b.ID)) })
		if !p.Standing {
			// A pool keeps its workers alive every heartbeat interval: silent for three, it is gone.
			p.Status = StatusSilent
			if at, ok := v.alive[p.ID]; ok && now.Sub(at) <= 3*time.Duration(p.Workers[0].Interval*float64(time.Second)) {
				p.Status = StatusUp
			}
			if _, ok := v.sets[poolSet(p.ID)]; ok {
				p.LimitSet = poolSet(p.ID)
			}
		}
		s.Pools = append(s.Pools, *p)
	}
	slices.SortFunc(s.Pools, func(a, b Pool) int {
		return cmp.Or(-cmp.Compare(btoi(a.Standing), btoi(b.Standing)), strings.Compare(a.Kind, b.Kind),
			strings.Compare(a.ID, b.ID))
	})
	for _, a := range v.agents {
		status := StatusUp
		if now.Sub(a.seen) > 3*v.refresh {
			status = StatusGone
		}
		s.Agents = append(s.Agents, Agent{ID: a.info.ID, Host: a.info.Host, Capacity: a.info.Capacity,
			Free: a.info.Free, Workers: a.info.Workers, Kinds: a.info.Kinds, InFlight: busy[a.info.ID],
			Status: status, Age: now.Sub(a.seen).Seconds()})
	}
	slices.SortFunc(s.Agents, func(a, b Agent) int { return strings.Compare(a.ID, b.ID) })
	for name, set := range v.sets {
		ls := LimitSet{Name: name, Partitions: set.partitions}
		if id, ok := strings.CutPrefix(name, poolSetPrefix); ok && pools[[2]string{id, ""}] != nil {
			ls.Pool = id
		}
		for key, l := range set.limits {
			ls.Limits = append(ls.Limits, Limit{Key: key, Algorithm: string(l.now.Algorithm), Capacity: l.now.Capacity,
				Available: l.now.Available, Utilization: l.now.Utilization, History: slices.Clone(l.hist)})
		}
		slices.SortFunc(ls.Limits, func(a, b Limit) int { return strings.Compare(a.Key, b.Key) })
		s.Limits = append(s.Limits, ls)
	}
	slices.SortFunc(s.Limits, func(a, b LimitSet) int { return strings.Compare(a.Name, b.Name) })
	return s
}

// poolSetPrefix begins the name of the set a process or fleet pool's Options.Limits live in: "pool-" and the
// pool's ID (package client).
const poolSetPrefix = "pool-"

func poolSet(poolID string) string { return poolSetPrefix + poolID }

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
