package fleet_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/testutil"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// Gauge is a kind that sets its service version and has a method whose name micro does not accept.
type Gauge struct{ level int }

func NewGauge() *Gauge { return &Gauge{} }

// Set sets the level.
func (g *Gauge) Set(level int) { g.level = level }

// Größe has a name outside micro's alphabet.
func (g *Gauge) Größe() int { return g.level }

var gaugeKind = fleet.Register("Gauge", NewGauge).SetVersion("2.3.1-rc.1")

// Odd is a kind whose name is no valid service name.
type Odd struct{}

func (*Odd) Ping() string { return "pong" }

var _ = fleet.Register("odd:kind", func() *Odd { return &Odd{} })

// discover sends one discovery request to subject and decodes the replies into T once want have arrived. Two flushes
// later no further reply may have come: every responder answers at about the same time.
func discover[T any](t *testing.T, nc *nats.Conn, subject string, want int) []T {
	t.Helper()
	inbox, rs := collect(t, nc)
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, fmt.Sprintf("%d replies on %s", want, subject), func() bool { return rs.count() >= want })
	for range 2 {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	msgs := rs.snapshot()
	if len(msgs) != want {
		t.Fatalf("%d replies on %s, want %d", len(msgs), subject, want)
	}
	out := make([]T, len(msgs))
	for i, m := range msgs {
		if err := json.Unmarshal(m.Data, &out[i]); err != nil {
			t.Fatalf("decode %s reply %q: %v", subject, m.Data, err)
		}
	}
	return out
}

// one is discover of a single reply.
func one[T any](t *testing.T, nc *nats.Conn, subject string) T {
	t.Helper()
	return discover[T](t, nc, subject, 1)[0]
}

func ids(hs []*fleet.Hosted) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.ID()
	}
	slices.Sort(out)
	return out
}

func endpoint(t *testing.T, st micro.Stats, name string) *micro.EndpointStats {
	t.Helper()
	for _, e := range st.Endpoints {
		if e.Name == name {
			return e
		}
	}
	t.Fatalf("service %s %s has no endpoint %s", st.Name, st.ID, name)
	return nil
}

func TestServiceDiscovery(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	before := time.Now().UTC()
	a := startAgent(t, nc, fleet.AgentOptions{ID: "agentA"})
	if err := a.Serve("DataProcessor", 3, 10); err != nil {
		t.Fatal(err)
	}
	risky := serve(t, nc, wire.WorkerSpec{Kind: "RiskyWorker", Pool: "p1", Index: 4}, fleet.ServeOptions{})
	workers := a.Hosted()
	if len(workers) != 3 {
		t.Fatalf("agent hosts %d workers, want 3", len(workers))
	}
	dpIDs := ids(workers)
	dpKind, err := fleet.Lookup("DataProcessor")
	if err != nil {
		t.Fatal(err)
	}

	// PING at every level: all services, one kind, one worker.
	all := discover[micro.Ping](t, nc, "$SRV.PING", 4)
	kinds := map[string]int{}
	for _, p := range all {
		kinds[p.Name]++
		if p.Type != micro.PingResponseType || p.Version != fleet.DefaultServiceVersion {
			t.Errorf("ping %+v", p)
		}
	}
	if kinds["DataProcessor"] != 3 || kinds["RiskyWorker"] != 1 {
		t.Errorf("services by name %v, want 3 DataProcessor and 1 RiskyWorker", kinds)
	}
	var pinged []string
	for _, p := range discover[micro.Ping](t, nc, "$SRV.PING.DataProcessor", 3) {
		pinged = append(pinged, p.ID)
	}
	slices.Sort(pinged)
	if !slices.Equal(pinged, dpIDs) {
		t.Errorf("DataProcessor services %v, want the agent's workers %v", pinged, dpIDs)
	}
	p := one[micro.Ping](t, nc, "$SRV.PING.RiskyWorker."+risky.ID())
	want := map[string]string{fleet.MetaPool: "p1", fleet.MetaAgent: "", fleet.MetaIndex: "4"}
	if p.ID != risky.ID() || !equalMaps(p.Metadata, want) {
		t.Errorf("ping of the pool worker %+v, want ID %s and metadata %v", p, risky.ID(), want)
	}

	// INFO: one endpoint per method, all on the worker's one call subject, without a queue group.
	infos := discover[micro.Info](t, nc, "$SRV.INFO.DataProcessor", 3)
	indexes := map[string]bool{}
	for _, info := range infos {
		if info.Type != micro.InfoResponseType || info.Name != "DataProcessor" ||
			info.Description != "natsfleet DataProcessor worker (*demo.DataProcessor)" {
			t.Errorf("info %+v", info)
		}
		if info.Metadata[fleet.MetaAgent] != "agentA" || info.Metadata[fleet.MetaPool] != "" {
			t.Errorf("info metadata %v, want agent agentA and no pool", info.Metadata)
		}
		indexes[info.Metadata[fleet.MetaIndex]] = true
		var names []string
		for _, e := range info.Endpoints {
			names = append(names, e.Name)
			if e.Subject != subjects.Worker(info.ID) || e.QueueGroup != "" || e.Metadata[wire.HeaderMethod] != e.Name {
				t.Errorf("endpoint %+v of %s", e, info.ID)
			}
			if e.Name == "Process" && (e.Metadata[fleet.MetaParams] != "[int]" || e.Metadata[fleet.MetaResult] != "int") {
				t.Errorf("Process endpoint metadata %v", e.Metadata)
			}
		}
		if !slices.Equal(names, dpKind.Methods()) {
			t.Errorf("endpoints %v, want the kind's methods %v", names, dpKind.Methods())
		}
	}
	if len(indexes) != 3 || !indexes["0"] || !indexes["1"] || !indexes["2"] {
		t.Errorf("indexes %v, want 0, 1 and 2", indexes)
	}

	// Calls are counted per method on the worker that ran them: msgpack and JSON calls, calls with bad arguments,
	// and calls naming no method (counted nowhere).
	w0 := workers[0]
	subj := subjects.Worker(w0.ID())
	const good, viaJSON, bad = 5, 2, 3
	for i := range good {
		if got := process(t, nc, subj, i); got != 10*i {
			t.Fatalf("Process(%d) = %d", i, got)
		}
	}
	for range viaJSON {
		var got int
		r := request(t, nc, callMsg(subj, "Process", codec.ContentTypeJSON, []byte("[4]")))
		if err := result(t, r, &got); err != nil || got != 40 {
			t.Fatalf("JSON Process(4) = %d, %v", got, err)
		}
	}
	for range bad {
		err := result(t, request(t, nc, callMsg(subj, "Process", codec.ContentTypeJSON, []byte(`["x"]`))), nil)
		if !errors.Is(err, fleet.ErrBadArguments) {
			t.Fatalf("Process(\"x\"): %v, want ErrBadArguments", err)
		}
	}
	if err := result(t, request(t, nc, callMsg(subj, "Nope", "", nil)), nil); !errors.Is(err, fleet.ErrUnknownMethod) {
		t.Fatalf("Nope: %v", err)
	}
	var processed int
	if err := result(t, request(t, nc, callMsg(subj, "Processed", "", nil)), &processed); err != nil ||
		processed != good+viaJSON {
		t.Fatalf("Processed = %d, %v", processed, err)
	}

	st := one[micro.Stats](t, nc, "$SRV.STATS.DataProcessor."+w0.ID())
	if st.Type != micro.StatsResponseType || st.ID != w0.ID() || st.Started.Before(before.Truncate(time.Second)) ||
		st.Started.After(time.Now().UTC()) {
		t.Errorf("stats %+v, want started between %v and now", st, before)
	}
	pe := endpoint(t, st, "Process")
	if pe.NumRequests != good+viaJSON+bad || pe.NumErrors != bad || pe.Subject != subj {
		t.Errorf("Process stats %+v, want %d requests and %d errors", pe, good+viaJSON+bad, bad)
	}
	if !strings.Contains(pe.LastError, "bad arguments DataProcessor.Process") {
		t.Errorf("Process last error %q", pe.LastError)
	}
	if pe.ProcessingTime <= 0 || pe.AverageProcessingTime != pe.ProcessingTime/time.Duration(pe.NumRequests) {
		t.Errorf("Process processing time %v, average %v", pe.ProcessingTime, pe.AverageProcessingTime)
	}
	if e := endpoint(t, st, "Processed"); e.NumRequests != 1 || e.NumErrors != 0 || e.LastError != "" {
		t.Errorf("Processed stats %+v, want 1 request", e)
	}
	total := 0
	for _, e := range st.Endpoints {
		total += e.NumRequests
	}
	if total != good+viaJSON+bad+1 {
		t.Errorf("%d requests over all endpoints, want %d (the unknown method counted nowhere)", total,
			good+viaJSON+bad+1)
	}
	// The other workers ran nothing.
	for _, st := range discover[micro.Stats](t, nc, "$SRV.STATS.DataProcessor", 3) {
		if st.ID == w0.ID() {
			continue
		}
		for _, e := range st.Endpoints {
			if e.NumRequests != 0 || e.NumErrors != 0 || e.ProcessingTime != 0 {
				t.Errorf("idle worker %s endpoint %+v", st.ID, e)
			}
		}
	}
	ms := w0.MethodStats()
	if len(ms) != len(dpKind.Methods()) || ms[slices.Index(dpKind.Methods(), "Process")].Calls != good+viaJSON+bad {
		t.Errorf("MethodStats %+v", ms)
	}

	// A method's own error and a panic count as errors too.
	rsubj := subjects.Worker(risky.ID())
	for _, v := range []int{1, -1, -13} {
		_ = result(t, request(t, nc, callMsg(rsubj, "RiskyOperation", "", args(t, v))), nil)
	}
	re := endpoint(t, one[micro.Stats](t, nc, "$SRV.STATS.RiskyWorker"), "RiskyOperation")
	if re.NumRequests != 3 || re.NumErrors != 2 || !strings.Contains(re.LastError, "unlucky value") {
		t.Errorf("RiskyOperation stats %+v, want 3 requests, 2 errors, the panic last", re)
	}

	// Discovery never opens a second way in: the call subject has one subscription, the worker's.
	sz, err := s.Server().Subsz(&server.SubszOptions{Subscriptions: true, Test: subj})
	if err != nil {
		t.Fatal(err)
	}
	if sz.Total != 1 {
		t.Errorf("%d subscriptions match %s, want 1: %+v", sz.Total, subj, sz.Subs)
	}

	// A stopped worker leaves discovery.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w0.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Request("$SRV.PING.DataProcessor."+w0.ID(), nil, 5*time.Second); !errors.Is(err,
		nats.ErrNoResponders) {
		t.Errorf("ping of a stopped worker: %v, want no responders", err)
	}
	discover[micro.Ping](t, nc, "$SRV.PING.DataProcessor", 2)
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestServiceVersionAndNames(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	g := serve(t, nc, wire.WorkerSpec{Kind: "Gauge"}, fleet.ServeOptions{})
	odd := serve(t, nc, wire.WorkerSpec{Kind: "odd:kind"}, fleet.ServeOptions{})

	info := one[micro.Info](t, nc, "$SRV.INFO.Gauge")
	if info.Version != "2.3.1-rc.1" || gaugeKind.Version() != "2.3.1-rc.1" {
		t.Errorf("version %q, kind's %q, want 2.3.1-rc.1", info.Version, gaugeKind.Version())
	}
	if len(info.Endpoints) != 1 || info.Endpoints[0].Name != "Set" {
		t.Errorf("endpoints %+v, want only Set (Größe is no endpoint name)", info.Endpoints)
	}
	if e := info.Endpoints[0]; e.Metadata[fleet.MetaParams] != "[int]" || e.Metadata[fleet.MetaResult] != "" {
		t.Errorf("Set metadata %v, want params [int] and no result", e.Metadata)
	}
	// Calls to a method left out of discovery still work.
	if err := result(t, request(t, nc, callMsg(subjects.Worker(g.ID()), "Set", "", args(t, 3))), nil); err != nil {
		t.Fatal(err)
	}
	var level int
	if err := result(t, request(t, nc, callMsg(subjects.Worker(g.ID()), "Größe", "", nil)), &level); err != nil ||
		level != 3 {
		t.Errorf("Größe = %d, %v", level, err)
	}
	if st := one[micro.Stats](t, nc, "$SRV.STATS.Gauge."+g.ID()); len(st.Endpoints) != 1 ||
		st.Endpoints[0].NumRequests != 1 {
		t.Errorf("stats %+v, want Set with 1 request", st.Endpoints)
	}

	// A kind whose name micro rejects is not listed, and is served all the same.
	if p := one[micro.Ping](t, nc, "$SRV.PING"); p.ID != g.ID() {
		t.Errorf("the only service is %+v, want the Gauge worker", p)
	}
	var pong string
	if err := result(t, request(t, nc, callMsg(subjects.Worker(odd.ID()), "Ping", "", nil)), &pong); err != nil ||
		pong != "pong" {
		t.Errorf("odd:kind Ping = %q, %v", pong, err)
	}
}

func TestSetVersionRejectsNonSemVer(t *testing.T) {
	t.Parallel()
	k, err := fleet.Lookup("Kit")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"", "1", "1.0", "v1.0.0", "01.0.0", "1.0.0 beta"} {
		t.Run(strconv.Quote(v), func(t *testing.T) {
			defer func() {
				r := recover()
				if r == nil || !strings.Contains(fmt.Sprint(r), "is not a SemVer version") {
					t.Errorf("SetVersion(%q) recovered %v, want a panic naming SemVer", v, r)
				}
			}()
			k.SetVersion(v)
		})
	}
	if got := k.Version(); got != fleet.DefaultServiceVersion {
		t.Errorf("version after rejected ones %q, want %s", got, fleet.DefaultServiceVersion)
	}
}

func TestServeOnCall(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	var mu sync.Mutex
	var recs []fleet.CallRecord
	onCall := func(r fleet.CallRecord) {
		mu.Lock()
		recs = append(recs, r)
		mu.Unlock()
	}
	h := serve(t, nc, wire.WorkerSpec{Kind: "RiskyWorker", ID: "r1"}, fleet.ServeOptions{OnCall: onCall})
	subj := subjects.Worker(h.ID())
	calls := []struct {
		method string
		body   []byte
		want   error // nil: success
	}{
		{"RiskyOperation", args(t, 2), nil},
		{"RiskyOperation", args(t, "two"), fleet.ErrBadArguments},
		{"RiskyOperation", args(t, -2), demo.ErrNegative},
		{"Nope", nil, fleet.ErrUnknownMethod},
	}
	for i, c := range calls {
		_ = result(t, request(t, nc, callMsg(subj, c.method, "", c.body)), nil)
		// The record comes before the reply.
		mu.Lock()
		if len(recs) != i+1 {
			mu.Unlock()
			t.Fatalf("after %d calls %d records", i+1, len(recs))
		}
		r := recs[i]
		mu.Unlock()
		wantMethod := c.method
		if c.want == fleet.ErrUnknownMethod {
			wantMethod = ""
		}
		if r.Kind != "RiskyWorker" || r.WorkerID != "r1" || r.Method != wantMethod || r.Duration <= 0 ||
			r.Duration > 10*time.Second {
			t.Errorf("call %d: record %+v, want method %q", i, r, wantMethod)
		}
		if (c.want == nil) != (r.Err == nil) || (c.want != nil && !errors.Is(r.Err, c.want)) {
			t.Errorf("call %d: record error %v, want %v", i, r.Err, c.want)
		}
	}
}

// Every served worker answers NATS service discovery; here asked with plain requests, as the NATS CLI asks.
func ExampleHosted_ServiceStats() {
	srv, err := broker.StartEmbedded(broker.EmbeddedOptions{Port: -1})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect()
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	ctorArgs, _ := codec.Msgpack.AppendArgs(nil, []any{10}) // NewDataProcessor(10)
	h, err := fleet.Serve(nc, wire.WorkerSpec{Kind: "DataProcessor", ID: "dp1", Args: ctorArgs},
		fleet.ServeOptions{Agent: "agent1"})
	if err != nil {
		panic(err)
	}
	defer h.Stop(context.Background())

	reply, err := nc.Request("$SRV.INFO.DataProcessor.dp1", nil, 5*time.Second)
	if err != nil {
		panic(err)
	}
	var info micro.Info
	if err := json.Unmarshal(reply.Data, &info); err != nil {
		panic(err)
	}
	fmt.Println(info.Name, info.ID, info.Version, info.Metadata)
	for _, e := range info.Endpoints {
		if e.Name == "Process" {
			fmt.Println(e.Name, e.Subject, e.Metadata)
		}
	}

	call := nats.NewMsg("fleet.w.dp1")
	call.Header.Set("Fleet-Method", "Process")
	call.Header.Set("Content-Type", "application/json")
	for _, body := range []string{"[1]", "[2]", `["three"]`} {
		call.Data = []byte(body)
		if _, err := nc.RequestMsg(call, 5*time.Second); err != nil {
			panic(err)
		}
	}
	for _, e := range h.ServiceStats().Endpoints {
		if e.NumRequests > 0 {
			fmt.Println(e.Name, e.NumRequests, "requests", e.NumErrors, "error")
		}
	}
	// Output:
	// DataProcessor dp1 1.0.0 map[agent:agent1 index:0 pool:]
	// Process fleet.w.dp1 map[Fleet-Method:Process params:[int] result:int]
	// Process 3 requests 1 error
}
