package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/fleet"
)

// agentsSummary lists the fleet's agents and totals their capacity.
func agentsSummary(ctx context.Context, d *runner) (agents []fleet.AgentInfo, free, capacity, workers int) {
	agents, err := client.DiscoverAgents(ctx, d.nc, "")
	if d.failed("discover agents", err) {
		return nil, 0, 0, 0
	}
	slices.SortFunc(agents, func(a, b fleet.AgentInfo) int { return strings.Compare(a.ID, b.ID) })
	for _, a := range agents {
		free += a.Free
		capacity += a.Capacity
		workers += a.Workers
	}
	return agents, free, capacity, workers
}

func (d *runner) printAgents(agents []fleet.AgentInfo) {
	for _, a := range agents {
		d.printf("  agent %s on %s: capacity %d, free %d, workers hosted %d", a.ID, a.Host, a.Capacity, a.Free, a.Workers)
	}
}

// 4. Fleet mode: the pool asks the agents to start its workers; Attach joins workers an agent already serves.
func fleetPools(ctx context.Context, d *runner) {
	agents, free, capacity, standing := agentsSummary(ctx, d)
	d.printf("%d agents offer %d free workers:", len(agents), free)
	d.printAgents(agents)
	if !d.expect(len(agents) >= 2 && free >= 8, "want at least 2 agents with 8 free workers, found %d with %d", len(agents), free) {
		return
	}

	pool := d.newPool(ctx, demo.DataProcessorKind, client.Options{Mode: client.Fleet, Conn: d.nc}, 10)
	if pool == nil {
		return
	}
	s := pool.Stats()
	d.printf("fleet pool with MaxWorkers 0 took all %d free workers", s.TotalWorkers)
	d.expect(s.TotalWorkers == free, "fleet pool has %d workers, want the %d offered", s.TotalWorkers, free)
	during, nowFree, _, _ := agentsSummary(ctx, d)
	d.printAgents(during)
	d.expect(nowFree == 0, "agents still offer %d free workers while the pool holds them all", nowFree)

	futs := make([]*client.Future[int], 32)
	for i := range futs {
		futs[i] = client.Call[int](pool, "Process", i)
	}
	res, err := client.Gather(ctx, futs)
	if !d.failed("gather fleet calls", err) {
		ok := true
		for i, r := range res {
			ok = ok && r == i*10
		}
		d.printf("32 calls over the fleet: results[31] = %d", res[31])
		d.expect(ok, "fleet results %v", res)
	}
	d.stats("DataProcessor fleet pool", pool)
	d.stop(pool, "DataProcessor fleet pool")

	att, err := client.Attach(ctx, d.nc, "DataProcessor", client.Options{Logger: d.childLog})
	if d.failed("attach to standing DataProcessor workers", err) {
		return
	}
	defer d.stop(att, "attached DataProcessor pool")
	s = att.Stats()
	d.printf("attached to %d standing DataProcessor workers", s.TotalWorkers)
	d.expect(s.TotalWorkers >= 2, "attached to %d standing workers, want at least 2", s.TotalWorkers)
	v, err := client.Call[int](att, "Process", 42).Result(ctx)
	d.printf("standing workers (multiplier 10): Process(42) = %d", v)
	d.expect(err == nil && v == 420, "attached Process(42) = %d, %v; want 420", v, err)
	ids := map[string]bool{}
	for range 2 * s.TotalWorkers {
		id, err := client.Call[demo.Identity](att, "WhoAmI").Result(ctx)
		if d.failed("attached WhoAmI", err) {
			return
		}
		ids[id.ID] = true
	}
	d.printf("round robin over the standing workers reached %d of them", len(ids))
	d.expect(len(ids) == s.TotalWorkers, "calls reached %d of %d standing workers", len(ids), s.TotalWorkers)
	d.stats("attached DataProcessor pool", att)
	d.stop(att, "attached DataProcessor pool")

	// Stopping the spawned pool gives the capacity back; stopping the attached one leaves the standing workers.
	err = eventually(ctx, func() error {
		_, f, c, w := agentsSummary(ctx, d)
		if f != c || w != standing {
			return fmt.Errorf("agents offer %d of %d free with %d workers hosted, want all free and %d standing", f, c, w, standing)
		}
		return nil
	})
	if !d.failed("capacity back after stop", err) {
		d.printf("after both pools stopped: %d of %d workers free, %d standing workers still served", capacity, capacity, standing)
	}
}

// startLocalFleet starts what `make run` starts as processes, inside this one: an embedded NATS server with
// JetStream and two agents offering 4 workers each, one of them serving 2 standing DataProcessors.
func startLocalFleet(logger *slog.Logger) (*nats.Conn, func(), error) {
	srv, err := broker.StartEmbedded(broker.EmbeddedOptions{})
	if err != nil {
		return nil, nil, err
	}
	var conns []*nats.Conn
	var agents []*fleet.Agent
	shutdown := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, a := range agents {
			_ = a.Stop(ctx)
		}
		for _, nc := range conns {
			nc.Close()
		}
		srv.Shutdown()
	}
	for i := range 2 {
		nc, err := broker.Connect(broker.Options{URL: srv.ClientURL()})
		if err != nil {
			shutdown()
			return nil, nil, err
		}
		conns = append(conns, nc)
		a, err := fleet.StartAgent(nc, fleet.AgentOptions{Capacity: 4, Logger: logger})
		if err != nil {
			shutdown()
			return nil, nil, err
		}
		agents = append(agents, a)
		if i == 0 {
			if err := a.Serve("DataProcessor", 2, 10); err != nil {
				shutdown()
				return nil, nil, err
			}
		}
	}
	nc, err := broker.Connect(broker.Options{URL: srv.ClientURL(), Name: "fleetdemo"})
	if err != nil {
		shutdown()
		return nil, nil, err
	}
	conns = append(conns, nc)
	return nc, shutdown, nil
}
