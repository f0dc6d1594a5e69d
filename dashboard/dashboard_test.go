package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/testutil"
	"github.com/natsfleet/natsfleet/limits"
)

// testFleet is a real fleet on an embedded server: two agents in this process, each on its own connection as
// separate machines would be.
type testFleet struct {
	url string
	nc  *nats.Conn // the callers'
}

func startFleet(t *testing.T, capacities ...int) testFleet {
	t.Helper()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	for i, c := range capacities {
		a, err := fleet.StartAgent(testutil.Connect(t, srv.ClientURL()), fleet.AgentOptions{ID: fmt.Sprintf("agent%d", i+1),
			Capacity: c, HeartbeatInterval: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := a.Stop(ctx); err != nil {
				t.Errorf("agent stop: %v", err)
			}
		})
	}
	return testFleet{url: srv.ClientURL(), nc: testutil.Connect(t, srv.ClientURL())}
}

func newDashboard(t *testing.T, url string, o Options) *Dashboard {
	t.Helper()
	d, err := New(testutil.Connect(t, url), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func newPool(t *testing.T, kind *fleet.Kind, o client.Options, args ...any) *client.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := client.New(ctx, kind, o, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Stop(ctx)
	})
	return p
}

func poolID(t *testing.T, p *client.Pool) string {
	t.Helper()
	ws, err := p.WorkerStats(0)
	if err != nil {
		t.Fatal(err)
	}
	return ws.Pool
}

func findPool(s Snapshot, id string) *Pool {
	for i := range s.Pools {
		if s.Pools[i].ID == id && !s.Pools[i].Standing {
			return &s.Pools[i]
		}
	}
	return nil
}

func findSet(s Snapshot, name string) *LimitSet {
	for i := range s.Limits {
		if s.Limits[i].Name == name {
			return &s.Limits[i]
		}
	}
	return nil
}

// The snapshot shows what the fleet carries: the agents and their free capacity, a pool's workers with their calls
// and errors, its limits linked to it, and a partitioned set's busiest partition.
func TestDashboardSeesTheFleet(t *testing.T) {
	f := startFleet(t, 2, 3)
	d := newDashboard(t, f.url, Options{Refresh: 200 * time.Millisecond})
	if s := d.Snapshot(); len(s.Agents) != 2 || len(s.Problems) != 1 || !strings.Contains(s.Problems[0], "does not exist yet") {
		t.Fatalf("first snapshot: agents %+v, problems %q; want both agents and no bucket yet", s.Agents, s.Problems)
	}

	risky := newPool(t, demo.RiskyWorkerKind, client.Options{Mode: client.Fleet, Conn: f.nc, MaxWorkers: 2,
		HeartbeatInterval: 200 * time.Millisecond})
	id := poolID(t, risky)
	ctx := context.Background()
	for _, v := range []int{1, 2, -1, 3} {
		_, err := client.Call[int](risky, "RiskyOperation", v).Result(ctx)
		if (v < 0) != errors.Is(err, demo.ErrNegative) {
			t.Fatalf("RiskyOperation(%d): %v", v, err)
		}
	}
	api := newPool(t, demo.APIWorkerKind, client.Options{Mode: client.Fleet, Conn: f.nc, MaxWorkers: 1,
		Limits: []limits.Limit{limits.CallLimit{Window: time.Minute, Capacity: 10},
			limits.RateLimit{Key: "tokens", Window: time.Minute, Capacity: 1000}}}, "key")
	apiID := poolID(t, api)
	for i := range 4 {
		if _, err := client.Call[string](api, "CallAPI", fmt.Sprint(i)).Result(ctx); err != nil {
			t.Fatal(err)
		}
	}
	customers, err := limits.NewSet(limits.SetOptions{Name: "customers", Conn: f.nc},
		limits.CallLimit{Window: time.Minute, Capacity: 4, PerPartition: true})
	if err != nil {
		t.Fatal(err)
	}
	defer customers.Close()
	for _, c := range []string{"acme", "acme", "acme", "globex"} {
		if _, err := customers.AcquireIn(ctx, c, nil); err != nil {
			t.Fatal(err)
		}
	}

	testutil.Eventually(t, 10*time.Second, func() error {
		s := d.Snapshot()
		free := 0
		for _, a := range s.Agents {
			free += a.Free
		}
		if free != 2 {
			return fmt.Errorf("agents %+v: %d free, want 5 less the pools' 3", s.Agents, free)
		}
		p := findPool(s, id)
		if p == nil || len(p.Workers) != 2 || p.Calls != 4 || p.Errors != 1 || p.Status != StatusUp ||
			p.Kind != "RiskyWorker" || p.LimitSet != "" {
			return fmt.Errorf("pool %s: %+v, want 2 workers, 4 calls, 1 error, up, no limits", id, p)
		}
		if p := findPool(s, apiID); p == nil || p.LimitSet != "pool-"+apiID || p.Calls != 4 {
			return fmt.Errorf("pool %s: %+v, want 4 calls, limits in pool-%s", apiID, p, apiID)
		}
		for _, w := range p.Workers {
			if w.Health != HealthAlive || w.Agent == "" || w.Interval != 0.2 {
				return fmt.Errorf("worker %+v, want alive on an agent, interval 0.2 s", w)
			}
		}
		set := findSet(s, "pool-"+apiID)
		if set == nil || set.Pool != apiID || len(set.Limits) != 2 || set.Limits[0].Key != "call_count" ||
			set.Limits[0].Utilization != 0.4 || set.Limits[1].Key != "tokens" || set.Limits[1].Available != 600 {
			return fmt.Errorf("the pool's set: %+v, want call_count at 4 of 10, tokens at 400 of 1000 (a sliding window refunds nothing)", set)
		}
		cs := findSet(s, "customers")
		if cs == nil || cs.Partitions != 2 || cs.Limits[0].Utilization != 0.75 || cs.Limits[0].Capacity != 4 {
			return fmt.Errorf("customers: %+v, want 2 partitions, the busiest at 3 of 4", cs)
		}
		if len(s.Problems) != 0 {
			return fmt.Errorf("problems %q", s.Problems)
		}
		return nil
	})

	// Each refresh adds a point to each limit's history, which reaches back History at most.
	d.mu.Lock()
	values := d.values
	v := newView(Options{Refresh: time.Second, History: 10 * time.Second, Forget: time.Minute})
	now := time.Now()
	for i := range 30 {
		v.sample(values, now.Add(time.Duration(i)*time.Second))
	}
	d.mu.Unlock()
	h := v.sets["customers"].limits["call_count"].hist
	if len(h) != 11 || h[0][0] != unix(now.Add(19*time.Second)) || h[10][1] != 0.75 {
		t.Errorf("history after 30 samples a second apart: %v, want the 11 of the last 10 s", h)
	}
}

// The page carries the latest snapshot; /snapshot.json and /events serve snapshots, and Close ends the streams.
func TestDashboardHTTP(t *testing.T) {
	f := startFleet(t, 1)
	d := newDashboard(t, f.url, Options{Refresh: 100 * time.Millisecond})
	srv := httptest.NewServer(d)
	defer srv.Close()

	get := func(path string) (string, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		return resp.Header.Get("Content-Type"), string(b)
	}
	ct, page := get("/")
	if !strings.HasPrefix(ct, "text/html") || !strings.Contains(page, `<script id="initial" type="application/json">{"at":`) ||
		!strings.Contains(page, `"id":"agent1"`) {
		t.Errorf("page (%s) lacks the snapshot with agent1:\n%s", ct, page)
	}
	ct, body := get("/snapshot.json")
	var s Snapshot
	if err := json.Unmarshal([]byte(body), &s); err != nil || ct != "application/json" || len(s.Agents) != 1 {
		t.Errorf("snapshot.json (%s): %v, %s", ct, err, body)
	}
	for path, want := range map[string]string{"/app.js": "javascript", "/style.css": "text/css"} {
		if ct, _ := get(path); !strings.Contains(ct, want) {
			t.Errorf("%s: content type %q, want %s", path, ct, want)
		}
	}

	resp, err := http.Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("events content type %q", ct)
	}
	lines := bufio.NewScanner(resp.Body)
	var ats []float64
	for len(ats) < 3 && lines.Scan() {
		data, ok := strings.CutPrefix(lines.Text(), "data: ")
		if !ok {
			continue
		}
		var s Snapshot
		if err := json.Unmarshal([]byte(data), &s); err != nil {
			t.Fatal(err)
		}
		ats = append(ats, s.At)
	}
	if len(ats) != 3 || !(ats[0] < ats[1] && ats[1] < ats[2]) {
		t.Fatalf("events: snapshots taken at %v, want three successive ones", ats)
	}
	// Close ends the stream (a server's Shutdown would wait for it otherwise).
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		for lines.Scan() {
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the event stream goes on after Close")
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := New(nil, Options{}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("no connection: %v", err)
	}
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, srv.ClientURL())
	for _, o := range []Options{{Refresh: -time.Second}, {Prefix: "fleet.*"}, {Prefix: "a..b"}} {
		if _, err := New(nc, o); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("New(%+v): %v, want ErrInvalidOptions", o, err)
		}
	}
}
