package main

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/balancer"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
)

// The scale rows: what a pool of thousands of workers costs to make, to stop and to call, and whether callers that
// share standing workers see each other's load. The fleet's workers live in scaleAgents agent processes.
const (
	rowScaleCalls  = "fleet, 256 in flight on 4 agents: 4 vs 4,096 workers"
	cNFScale4      = "natsfleet, 4 workers"
	cNFScale4096   = "natsfleet, 4,096 workers"
	rowShared      = "2 clients on 8 standing workers: 4 calls of 50 ms beside 4 of 2 s"
	cNFShared      = "natsfleet least-active, time to the last of the 4"
	rowThreadLife  = "thread pool of 65,536 workers"
	scaleAgents    = 4
	scaleDepth     = 256
	sharedFast     = 50 * time.Millisecond
	sharedSlow     = 2 * time.Second
	sharedWorkers  = 8
	threadLifeSize = 65536
)

func rowFleetLife(n int) string { return fmt.Sprintf("fleet pool of %s workers", thousands(n)) }

// lifeSizes are the fleet pools made and stopped; the ratio of the last to the first is judged.
var lifeSizes = []int{1024, 16384}

func (b *bench) scale() error {
	url, err := b.server()
	if err != nil {
		return err
	}
	agents, err := b.startChildren(scaleAgents, roleAgent, childConfig{URL: url,
		Capacity: lifeSizes[len(lifeSizes)-1]/scaleAgents + 1})
	if err != nil {
		return err
	}
	defer stopChildren(agents)
	if err := b.fleetLifecycle(agents); err != nil {
		return err
	}
	if err := b.threadLifecycle(); err != nil {
		return err
	}
	if err := b.scaleCalls(); err != nil {
		return err
	}
	return b.sharedWorkers(url)
}

// fleetLifecycle makes and stops fleet pools of lifeSizes workers, once each, and reports the agents' memory per
// worker at the largest.
func (b *bench) fleetLifecycle(agents []*child) error {
	nc, err := b.connect()
	if err != nil {
		return err
	}
	for _, n := range lifeSizes {
		before := agentsRSS(agents)
		start := time.Now()
		p, err := client.New(bg, demo.DataProcessorKind, client.Options{Mode: client.Fleet, MaxWorkers: n, Conn: nc,
			Logger: quietLogger, StartTimeout: time.Minute}, 10)
		if err != nil {
			return fmt.Errorf("fleet pool of %d: %w", n, err)
		}
		created := time.Since(start)
		perWorker := float64(agentsRSS(agents)-before) / float64(n)
		start = time.Now()
		if err := p.Stop(bg); err != nil {
			return fmt.Errorf("stop fleet pool of %d: %w", n, err)
		}
		stopped := time.Since(start)
		b.record(rowFleetLife(n), "create", seconds, created.Seconds(), "once")
		b.record(rowFleetLife(n), "stop", seconds, stopped.Seconds(), "once")
		b.record(rowFleetLife(n), "agents' memory per worker", kilobytes, perWorker, "RSS growth while it lives")
		// The agents free the workers' slots as they stop; the next pool needs them.
		if err := waitFor(30*time.Second, func() error {
			infos, err := client.DiscoverAgents(bg, nc, "")
			if err != nil {
				return err
			}
			for _, a := range infos {
				if a.Free != a.Capacity {
					return fmt.Errorf("agent %s has %d of %d free", a.ID, a.Free, a.Capacity)
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

func agentsRSS(agents []*child) int {
	total := 0
	for _, a := range agents {
		if kb, err := rssKB(a.pid()); err == nil {
			total += kb
		}
	}
	return total
}

func (b *bench) threadLifecycle() error {
	start := time.Now()
	p, err := client.New(bg, demo.DataProcessorKind, client.Options{Mode: client.Thread, MaxWorkers: threadLifeSize},
		10)
	if err != nil {
		return err
	}
	created := time.Since(start)
	start = time.Now()
	if err := p.Stop(bg); err != nil {
		return err
	}
	b.record(rowThreadLife, "create", seconds, created.Seconds(), "once")
	b.record(rowThreadLife, "stop", seconds, time.Since(start).Seconds(), "once")
	return nil
}

// scaleCalls keeps 256 calls in flight on a pool of 4 workers and on one of 4,096, on the same agents.
func (b *bench) scaleCalls() error {
	pools := map[string]*client.Pool{}
	for name, n := range map[string]int{cNFScale4: 4, cNFScale4096: 4096} {
		nc, err := b.connect()
		if err != nil {
			return err
		}
		p, err := client.New(bg, demo.DataProcessorKind, client.Options{Mode: client.Fleet, MaxWorkers: n, Conn: nc,
			Logger: quietLogger, StartTimeout: time.Minute}, 10)
		if err != nil {
			return err
		}
		defer p.Close()
		pools[name] = p
	}
	return b.measure(rowScaleCalls, callsPerSec, contender{cNFScale4, ringCalls(pools[cNFScale4], scaleDepth)},
		contender{cNFScale4096, ringCalls(pools[cNFScale4096], scaleDepth)})
}

// sharedWorkers has two clients attached to the same standing workers, least-active both: one keeps half of them
// busy with slow calls, then the other makes as many fast ones. The figure is how long the fast calls take, against
// their own 50 ms: a client that sees the other's load puts none behind a slow call.
func (b *bench) sharedWorkers(url string) error {
	agent, err := b.startChild(roleAgent, childConfig{URL: url, Capacity: -1, Standing: sharedWorkers})
	if err != nil {
		return err
	}
	defer agent.stop()
	var ps [2]*client.Pool
	for i := range ps {
		nc, err := b.connect()
		if err != nil {
			return err
		}
		if ps[i], err = attachAll(nc, benchKind.Name(), sharedWorkers); err != nil {
			return err
		}
		defer ps[i].Close()
	}
	busy, fast := ps[0], ps[1]
	run := func(time.Duration) (float64, error) {
		slow := make([]*client.Future[int], sharedWorkers/2)
		for i := range slow {
			slow[i] = client.Call[int](busy, "Work", sharedSlow)
		}
		time.Sleep(100 * time.Millisecond) // the slow calls run
		start := time.Now()
		futs := make([]*client.Future[int], sharedWorkers/2)
		for i := range futs {
			futs[i] = client.Call[int](fast, "Work", sharedFast)
		}
		if _, err := client.Gather(bg, futs); err != nil {
			return 0, err
		}
		took := time.Since(start)
		_, err := client.Gather(bg, slow)
		return took.Seconds(), err
	}
	return b.measureFor(rowShared, seconds, 0, contender{cNFShared, run})
}

// attachAll attaches to the standing workers of kind on nc, least-active, and waits until it has n.
func attachAll(nc *nats.Conn, kind string, n int) (*client.Pool, error) {
	p, err := client.Attach(bg, nc, kind, client.Options{LoadBalancing: balancer.LeastActive, Logger: quietLogger})
	if err != nil {
		return nil, err
	}
	err = waitFor(10*time.Second, func() error {
		if got := p.Stats().TotalWorkers; got != n {
			return fmt.Errorf("attached to %d workers, want %d", got, n)
		}
		return nil
	})
	if err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// thousands writes n with a comma every three digits.
func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
