package dashboard

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/wire"
)

var t0 = time.Unix(1_700_000_000, 0)

func testView() *view {
	o, err := Options{}.withDefaults()
	if err != nil {
		panic(err)
	}
	return newView(o)
}

func hb(id, kind, agent, pool string, index int, inFlight, calls int64) wire.Heartbeat {
	return wire.Heartbeat{WorkerID: id, Kind: kind, Agent: agent, Pool: pool, Index: index, InFlight: inFlight,
		Calls: calls, Interval: time.Second}
}

func TestWorkerHealth(t *testing.T) {
	v := testView()
	v.beat(hb("w", "K", "a", "p", 0, 0, 0), t0)
	for _, c := range []struct {
		after time.Duration
		want  string
	}{{0, HealthAlive}, {2 * time.Second, HealthAlive}, {2500 * time.Millisecond, HealthLate},
		{3 * time.Second, HealthLate}, {3001 * time.Millisecond, HealthLost}} {
		if got := v.workers["w"].health(t0.Add(c.after)); got != c.want {
			t.Errorf("%s after a heartbeat of interval 1s: %s, want %s", c.after, got, c.want)
		}
	}
	// A worker that said it stops is stopping, not lost, and still asked for stats while it drains; a lost one no
	// more.
	stopping := hb("w", "K", "a", "p", 0, 0, 0)
	stopping.Stopping = true
	v.beat(stopping, t0)
	if got := v.workers["w"].health(t0.Add(10 * time.Second)); got != HealthStopping {
		t.Errorf("stopping worker: %s, want %s", got, HealthStopping)
	}
	if ids := v.polled(t0); len(ids) != 1 {
		t.Errorf("polled %v, want the stopping worker", ids)
	}
	v.beat(hb("gone", "K", "a", "p", 1, 0, 0), t0.Add(-4*time.Second))
	if ids := v.polled(t0); len(ids) != 1 || ids[0] != "w" {
		t.Errorf("polled %v, want the stopping worker and not the lost one", ids)
	}
	// An interval the heartbeat does not give is the default.
	none := hb("x", "K", "a", "p", 1, 0, 0)
	none.Interval = 0
	v.beat(none, t0)
	if got := v.workers["x"].health(t0.Add(2 * fleet.DefaultHeartbeatInterval)); got != HealthAlive {
		t.Errorf("no interval, two default intervals on: %s, want alive", got)
	}
}

// Workers are grouped by the pool their heartbeats name, standing ones by kind; counters add up per pool and, for
// calls in flight, per agent; a pool is up while its keepalive comes.
func TestBuildGroupsPools(t *testing.T) {
	v := testView()
	v.discovered([]fleet.AgentInfo{{ID: "a2", Host: "h2", Capacity: 4, Free: 1, Workers: 3, Kinds: []string{"K"}},
		{ID: "a1", Host: "h1", Capacity: 2, Free: 2, Workers: 2, Kinds: []string{"K", "S"}}}, t0)
	v.beat(hb("p1-1", "K", "a2", "p1", 1, 2, 10), t0)
	v.beat(hb("p1-0", "K", "a2", "p1", 0, 1, 5), t0)
	v.beat(hb("p2-0", "K", "a2", "p2", 0, 0, 7), t0.Add(-2500*time.Millisecond))
	v.beat(hb("s1", "S", "a1", "", 0, 3, 1), t0)
	v.beat(hb("s2", "K", "a1", "", 0, 0, 4), t0)
	v.stats(fleet.WorkerStats{ID: "p1-1", Calls: 12, Errors: 2, InFlight: 0})
	v.stats(fleet.WorkerStats{ID: "p1-0", Calls: 4, Errors: 1, InFlight: 1}) // older than its heartbeat: calls stay 5
	v.keepalive("p1", t0.Add(-time.Second))
	v.keepalive("p2", t0.Add(-4*time.Second))

	s := v.build(t0)
	if len(s.Agents) != 2 || s.Agents[0].ID != "a1" || s.Agents[1].ID != "a2" {
		t.Fatalf("agents %+v, want a1 then a2", s.Agents)
	}
	if a := s.Agents[1]; a.Capacity != 4 || a.Free != 1 || a.Workers != 3 || a.InFlight != 1 || a.Status != StatusUp {
		t.Errorf("agent a2 %+v, want capacity 4, free 1, 3 workers, 1 call in flight (stats said p1-1 has none), up", a)
	}
	if a := s.Agents[0]; a.InFlight != 3 {
		t.Errorf("agent a1 in flight %d, want 3", a.InFlight)
	}
	var got []string
	for _, p := range s.Pools {
		got = append(got, p.ID+"/"+p.Kind+"/"+p.Status)
	}
	want := []string{"/K/standing", "/S/standing", "p1/K/up", "p2/K/silent"}
	if len(got) != len(want) {
		t.Fatalf("pools %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("pools %v, want %v", got, want)
		}
	}
	p1 := s.Pools[2]
	if p1.Calls != 17 || p1.Errors != 3 || p1.InFlight != 1 || len(p1.Workers) != 2 {
		t.Errorf("pool p1 %+v, want 17 calls, 3 errors, 1 in flight, 2 workers", p1)
	}
	if w := p1.Workers; w[0].ID != "p1-0" || w[1].ID != "p1-1" || w[1].Calls != 12 || w[1].Errors != 2 {
		t.Errorf("pool p1 workers %+v, want p1-0 then p1-1 with 12 calls and 2 errors", w)
	}
	if w := s.Pools[3].Workers[0]; w.Health != HealthLate || w.Age != 2.5 || w.Interval != 1 {
		t.Errorf("p2's worker %+v, want late, 2.5 s old, interval 1 s", w)
	}
	if ids := v.polled(t0); len(ids) != 5 {
		t.Errorf("polled %v, want all five workers", ids)
	}
}

func TestPrune(t *testing.T) {
	v := testView() // Refresh 1s, Forget 1 min
	v.discovered([]fleet.AgentInfo{{ID: "a"}}, t0)
	v.beat(hb("lost", "K", "a", "p", 0, 0, 0), t0)
	stopping := hb("stopped", "K", "a", "p", 1, 0, 0)
	stopping.Stopping = true
	v.beat(stopping, t0)
	v.keepalive("p", t0)

	v.prune(t0.Add(3 * time.Second))
	if v.workers["stopped"] == nil {
		t.Error("a stopping worker forgotten within three intervals")
	}
	s := v.build(t0.Add(4 * time.Second))
	if s.Agents[0].Status != StatusGone || s.Pools[0].Status != StatusSilent {
		t.Errorf("4 s on: agent %s, pool %s; want gone and silent", s.Agents[0].Status, s.Pools[0].Status)
	}
	v.prune(t0.Add(4 * time.Second))
	if v.workers["stopped"] != nil || v.workers["lost"] == nil {
		t.Error("4 s on: want the stopped worker forgotten, the lost one kept")
	}
	v.prune(t0.Add(time.Minute + time.Second))
	if len(v.workers) != 0 || len(v.agents) != 0 || len(v.alive) != 0 {
		t.Errorf("a minute on: %d workers, %d agents, %d pools kept; want none", len(v.workers), len(v.agents), len(v.alive))
	}
	// An empty view is empty lists, which the page draws, not nulls.
	b, err := json.Marshal(v.build(t0.Add(time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"agents":[]`, `"pools":[]`, `"limits":[]`, `"problems":[]`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("empty view %s lacks %s", b, want)
		}
	}
}

// Heartbeats are anyone's to publish: the view tracks a bounded number of workers.
func TestViewBounded(t *testing.T) {
	v := testView()
	for i := range maxWorkers + 10 {
		v.beat(hb("w"+string(rune('a'+i%26))+time.Duration(i).String(), "K", "", "p", i, 0, 0), t0)
	}
	if len(v.workers) != maxWorkers {
		t.Errorf("%d workers tracked, want at most %d", len(v.workers), maxWorkers)
	}
}
