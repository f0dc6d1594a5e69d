package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/testutil"
	"github.com/natsfleet/natsfleet/internal/wire"
)

func startAgent(t testing.TB, nc *nats.Conn, opts fleet.AgentOptions) *fleet.Agent {
	t.Helper()
	a, err := fleet.StartAgent(nc, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Stop(ctx); err != nil {
			t.Errorf("stop agent %s: %v", a.ID(), err)
		}
	})
	return a
}

func spawn(t testing.TB, nc *nats.Conn, sub broker.Subjects, agent string, spec wire.WorkerSpec) wire.SpawnReply {
	t.Helper()
	m := nats.NewMsg(sub.Spawn(agent))
	m.Data = mustMarshal(t, codec.Msgpack, spec)
	r := request(t, nc, m)
	var rep wire.SpawnReply
	if err := codec.Msgpack.Unmarshal(r.Data, &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

// discoverAgents gathers the AgentInfo replies to one discovery request until want have arrived.
func discoverAgents(t testing.TB, nc *nats.Conn, sub broker.Subjects, want int) map[string]fleet.AgentInfo {
	t.Helper()
	inbox, rs := collect(t, nc)
	if err := nc.PublishRequest(sub.AgentDiscover(), inbox, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "agent infos", func() bool { return rs.count() >= want })
	got := map[string]fleet.AgentInfo{}
	for _, r := range rs.snapshot() {
		var info fleet.AgentInfo
		if err := codec.Msgpack.Unmarshal(r.Data, &info); err != nil {
			t.Fatal(err)
		}
		got[info.ID] = info
	}
	return got
}

func TestAgentSpawn(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	cc := testutil.Connect(t, s.ClientURL()) // the client side
	a := startAgent(t, nc, fleet.AgentOptions{ID: "agent1", Capacity: 2, HeartbeatInterval: 100 * time.Millisecond})
	startAgent(t, testutil.Connect(t, s.ClientURL()), fleet.AgentOptions{ID: "agent2", Capacity: -1})
	sub := broker.Subjects{}

	infos := discoverAgents(t, cc, sub, 2)
	if len(infos) != 2 {
		t.Fatalf("discovered %v", infos)
	}
	a1 := infos["agent1"]
	if a1.Capacity != 2 || a1.Free != 2 || a1.Workers != 0 || !slices.Contains(a1.Kinds, "DataProcessor") ||
		!slices.Contains(a1.Kinds, "Kit") {
		t.Errorf("agent1 info %+v", a1)
	}
	if a2 := infos["agent2"]; a2.Capacity != 0 || a2.Free != 0 {
		t.Errorf("agent2 info %+v, want no capacity", a2)
	}

	hbs := make(chan wire.Heartbeat, 16)
	hbSub, err := cc.Subscribe(sub.Heartbeats("DataProcessor"), func(m *nats.Msg) {
		var hb wire.Heartbeat
		if err := codec.Msgpack.Unmarshal(m.Data, &hb); err == nil && !hb.Stopping {
			select {
			case hbs <- hb:
			default:
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer hbSub.Unsubscribe()

	var ids []string
	for i := range 2 {
		rep := spawn(t, cc, sub, "agent1", wire.WorkerSpec{Kind: "DataProcessor", Index: i, Pool: "p1",
			Args: args(t, 10)})
		if rep.Error != "" || rep.WorkerID == "" {
			t.Fatalf("spawn %d: %+v", i, rep)
		}
		if got := process(t, cc, sub.Worker(rep.WorkerID), 42); got != 420 {
			t.Errorf("spawned worker: Process(42) = %d", got)
		}
		ids = append(ids, rep.WorkerID)
	}
	select {
	case hb := <-hbs:
		if hb.Agent != "agent1" || hb.Pool != "p1" || hb.Interval != 100*time.Millisecond {
			t.Errorf("heartbeat %+v, want agent1's, pool p1, the agent's interval", hb)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no heartbeat from a spawned worker")
	}

	for _, tt := range []struct {
		name, agent string
		spec        wire.WorkerSpec
		want        string
	}{
		{"over capacity", "agent1", wire.WorkerSpec{Kind: "DataProcessor", Args: args(t, 10)}, fleet.ErrNoCapacity.Error()},
		{"no capacity offered", "agent2", wire.WorkerSpec{Kind: "DataProcessor", Args: args(t, 10)}, fleet.ErrNoCapacity.Error()},
		{"unknown kind", "agent1", wire.WorkerSpec{Kind: "Nope"}, fleet.ErrUnknownKind.Error()},
	} {
		rep := spawn(t, cc, sub, tt.agent, tt.spec)
		if rep.WorkerID != "" || !strings.Contains(rep.Error, tt.want) {
			t.Errorf("%s: %+v, want an error containing %q", tt.name, rep, tt.want)
		}
	}
	if info := a.Info(); info.Free != 0 || info.Workers != 2 {
		t.Errorf("info %+v, want 0 free, 2 workers", info)
	}

	// A worker that stops gives its capacity back.
	if err := result(t, control(t, cc, ids[0], wire.ControlStop, nil), nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "capacity freed", func() bool { return a.Info().Free == 1 })
	rep := spawn(t, cc, sub, "agent1", wire.WorkerSpec{Kind: "DataProcessor", Args: args(t, 3)})
	if rep.Error != "" {
		t.Fatalf("spawn after a worker stopped: %v", rep.Error)
	}
	if got := process(t, cc, sub.Worker(rep.WorkerID), 2); got != 6 {
		t.Errorf("Process(2) = %d, want 6", got)
	}
	// A spawn that fails to build its worker gives its capacity back too.
	if rep := spawn(t, cc, sub, "agent1", wire.WorkerSpec{Kind: "DataProcessor", Args: args(t, 0)}); rep.Error == "" {
		t.Errorf("spawn with multiplier 0 succeeded")
	}
	if info := a.Info(); info.Free != 0 || info.Workers != 2 {
		t.Errorf("info %+v, want 0 free, 2 workers", info)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if info := a.Info(); info.Workers != 0 || info.Free != 2 {
		t.Errorf("info after stop %+v", info)
	}
	for _, id := range []string{ids[1], rep.WorkerID} {
		_, err := cc.RequestMsg(callMsg(sub.Worker(id), "Process", "", args(t, 1)), 5*time.Second)
		if !errors.Is(err, nats.ErrNoResponders) {
			t.Errorf("call to %s after agent stop: %v, want no responders", id, err)
		}
	}
	if _, err := cc.Request(sub.Spawn("agent1"), nil, 5*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("spawn after agent stop: %v, want no responders", err)
	}
}

func TestAgentStandingWorkers(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	a := startAgent(t, nc, fleet.AgentOptions{Prefix: "team", Capacity: 1})
	sub := broker.Subjects{Prefix: "team"}
	if err := a.Serve("DataProcessor", 3, 7); err != nil {
		t.Fatal(err)
	}
	if err := a.Serve("Nope", 1); !errors.Is(err, fleet.ErrUnknownKind) {
		t.Errorf("Serve of an unknown kind: %v", err)
	}
	if err := a.Serve("DataProcessor", 1, "seven"); !errors.Is(err, fleet.ErrBadArguments) {
		t.Errorf("Serve with bad arguments: %v", err)
	}
	if err := a.Serve("DataProcessor", 0, 7); err == nil {
		t.Error("Serve of 0 workers succeeded")
	}
	if info := a.Info(); info.Workers != 3 || info.Free != 1 {
		t.Errorf("info %+v, want 3 workers and the capacity untouched", info)
	}

	inbox, rs := collect(t, nc)
	if err := nc.PublishRequest(sub.KindDiscover("DataProcessor"), inbox, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "3 standing workers", func() bool { return rs.count() == 3 })
	indexes := map[int]bool{}
	for _, r := range rs.snapshot() {
		var hb wire.Heartbeat
		if err := result(t, r, &hb); err != nil {
			t.Fatal(err)
		}
		if hb.Pool != "" || hb.Agent != a.ID() {
			t.Errorf("heartbeat %+v", hb)
		}
		indexes[hb.Index] = true
		if got := process(t, nc, sub.Worker(hb.WorkerID), 6); got != 42 {
			t.Errorf("worker %s: Process(6) = %d, want 42", hb.WorkerID, got)
		}
	}
	if len(indexes) != 3 || !indexes[0] || !indexes[1] || !indexes[2] {
		t.Errorf("indexes %v, want 0, 1, 2", indexes)
	}
}

func TestAgentSpawnJSON(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	a := startAgent(t, nc, fleet.AgentOptions{Capacity: 1})
	m := nats.NewMsg(broker.Subjects{}.Spawn(a.ID()))
	m.Header.Set(wire.HeaderContentType, codec.ContentTypeJSON)
	m.Data = mustMarshal(t, codec.JSON, wire.WorkerSpec{Kind: "DataProcessor", Args: args(t, 5)})
	r := request(t, nc, m)
	var rep wire.SpawnReply
	if err := codec.JSON.Unmarshal(r.Data, &rep); err != nil || rep.Error != "" {
		t.Fatalf("reply %q: %v", r.Data, err)
	}
	if got := process(t, nc, broker.Subjects{}.Worker(rep.WorkerID), 5); got != 25 {
		t.Errorf("Process(5) = %d", got)
	}
	m = nats.NewMsg(broker.Subjects{}.Spawn(a.ID()))
	m.Data = []byte{0xc1}
	r = request(t, nc, m)
	if err := codec.Msgpack.Unmarshal(r.Data, &rep); err != nil || !strings.Contains(rep.Error, "bad spawn request") {
		t.Errorf("malformed spawn: %+v, %v", rep, err)
	}
}

// An agent offers capacity to pools and serves standing workers; a client finds agents by discovery and asks one
// to start a worker.
func ExampleStartAgent() {
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

	agent, err := fleet.StartAgent(nc, fleet.AgentOptions{ID: "agent1", Capacity: 4})
	if err != nil {
		panic(err)
	}
	defer agent.Stop(context.Background())
	if err := agent.Serve("DataProcessor", 2, 10); err != nil { // two standing workers, NewDataProcessor(10)
		panic(err)
	}

	sub := broker.Subjects{}
	r, err := nc.Request(sub.AgentDiscover(), nil, 5*time.Second)
	if err != nil {
		panic(err)
	}
	var info fleet.AgentInfo
	if err := codec.Msgpack.Unmarshal(r.Data, &info); err != nil {
		panic(err)
	}
	fmt.Printf("agent %s: %d of %d free, %d workers\n", info.ID, info.Free, info.Capacity, info.Workers)

	ctorArgs, _ := codec.Msgpack.AppendArgs(nil, []any{3})
	body, _ := codec.Msgpack.Marshal(wire.WorkerSpec{Kind: "DataProcessor", Pool: "my-pool", Args: ctorArgs})
	if r, err = nc.Request(sub.Spawn(info.ID), body, 5*time.Second); err != nil {
		panic(err)
	}
	var spawned wire.SpawnReply
	if err := codec.Msgpack.Unmarshal(r.Data, &spawned); err != nil || spawned.Error != "" {
		panic(fmt.Sprint(err, spawned.Error))
	}
	fmt.Println("free after spawning:", agent.Info().Free)
	// Output:
	// agent agent1: 4 of 4 free, 2 workers
	// free after spawning: 3
}
