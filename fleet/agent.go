package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// AgentOptions configure StartAgent. Zero values mean the defaults noted.
type AgentOptions struct {
	// ID identifies the agent in the fleet; default: generated.
	ID string
	// Prefix is the subject prefix; default "fleet".
	Prefix string
	// Capacity is how many workers the agent starts for pools at most (standing workers do not count). Default
	// runtime.NumCPU(); a negative value offers none, for an agent that only serves standing workers.
	Capacity int
	// HeartbeatInterval is the heartbeat interval of workers whose spec leaves it zero; default
	// DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	// MaxCallBytes is the largest call body its workers accept; default: the connection's maximum payload.
	MaxCallBytes int
	// Logger receives the agent's and its workers' logs; default slog.Default().
	Logger *slog.Logger
	// OnCall is every hosted worker's serveOptions.OnCall; default nil.
	OnCall func(CallRecord)
}

// Agent hosts workers on one connection: it starts the workers pools ask for (client.Fleet mode), up to its
// capacity, tells pools what it offers (AgentInfo), and serves standing workers of a kind (Agent.Serve) that
// clients join with client.Attach. A worker binary runs one agent; see package agent for one that takes its
// settings from the command line.
type Agent struct {
	nc       *nats.Conn
	opts     AgentOptions
	subjects broker.Subjects
	host     string

	discSub, spawnSub, callSub *nats.Subscription
	calls                      agentCalls // agentcalls.go

	mu       sync.Mutex
	workers  map[string]*hosted
	used     int            // capacity taken by spawned workers, those being started included
	next     map[string]int // next index of a standing worker, by kind
	stopped  bool
	spawning sync.WaitGroup
}

// StartAgent starts an agent on nc. It answers pools until Stop.
func StartAgent(nc *nats.Conn, opts AgentOptions) (*Agent, error) {
	if nc == nil {
		return nil, errors.New("fleet: start agent: nil connection")
	}
	if opts.ID == "" {
		opts.ID = nuid.Next()
	}
	if !broker.ValidToken(opts.ID) {
		return nil, fmt.Errorf("fleet: start agent: ID %q must contain no '.', '*', '>' or spaces", opts.ID)
	}
	if opts.Prefix == "" {
		opts.Prefix = broker.DefaultPrefix
	}
	switch {
	case opts.Capacity == 0:
		opts.Capacity = runtime.NumCPU()
	case opts.Capacity < 0:
		opts.Capacity = 0
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	host, _ := os.Hostname()
	a := &Agent{nc: nc, opts: opts, subjects: broker.Subjects{Prefix: opts.Prefix}, host: host,
		workers: make(map[string]*hosted), next: make(map[string]int)}
	var err error
	if a.discSub, err = nc.Subscribe(a.subjects.AgentDiscover(), a.onDiscover); err != nil {
		return nil, fmt.Errorf("fleet: start agent %s: %w", opts.ID, err)
	}
	if a.spawnSub, err = nc.Subscribe(a.subjects.Spawn(opts.ID), a.onSpawn); err != nil {
		_ = a.discSub.Unsubscribe()
		return nil, fmt.Errorf("fleet: start agent %s: %w", opts.ID, err)
	}
	if err := a.startCalls(); err != nil {
		_ = a.discSub.Unsubscribe()
		_ = a.spawnSub.Unsubscribe()
		return nil, fmt.Errorf("fleet: start agent %s: %w", opts.ID, err)
	}
	// Discoverable as soon as StartAgent returns (see Serve).
	_ = nc.FlushTimeout(flushTimeout)
	return a, nil
}

// ID is the agent's ID.
func (a *Agent) ID() string { return a.opts.ID }

// AgentInfo is what an agent offers, as pools discover it.
type AgentInfo struct {
	ID       string   `msgpack:"id" json:"id"`
	Host     string   `msgpack:"host" json:"host"`
	Capacity int      `msgpack:"capacity" json:"capacity"` // workers it may start for pools
	Free     int      `msgpack:"free" json:"free"`         // of which not in use
	Kinds    []string `msgpack:"kinds" json:"kinds"`       // kinds it can build
	Workers  int      `msgpack:"workers" json:"workers"`   // workers it hosts now, standing ones included
	CPUs     int      `msgpack:"cpus" json:"cpus"`         // its GOMAXPROCS: how many of its workers run at once
}

// Info is what the agent offers, as it answers discovery requests.
func (a *Agent) Info() AgentInfo {
	a.mu.Lock()
	defer a.mu.Unlock()
	return AgentInfo{ID: a.opts.ID, Host: a.host, Capacity: a.opts.Capacity, Free: a.opts.Capacity - a.used,
		Kinds: Kinds(), Workers: len(a.workers), CPUs: runtime.GOMAXPROCS(0)}
}

// Serve starts n standing workers of the named kind, built with the constructor arguments args. Standing workers
// belong to no pool; clients attach to them by kind. They do not use the agent's capacity.
func (a *Agent) Serve(kind string, n int, args ...any) error {
	if n < 1 {
		return fmt.Errorf("fleet: agent %s: serve %d workers of kind %q: n must be at least 1", a.opts.ID, n, kind)
	}
	if _, err := Lookup(kind); err != nil {
		return fmt.Errorf("fleet: agent %s: %w", a.opts.ID, err)
	}
	enc, err := codec.Msgpack.AppendArgs(nil, args)
	if err != nil {
		return fmt.Errorf("fleet: agent %s: constructor arguments of kind %q: %w", a.opts.ID, kind, err)
	}
	started := make([]*hosted, 0, n)
	for range n {
		a.mu.Lock()
		idx := a.next[kind]
		a.next[kind]++
		a.mu.Unlock()
		h, err := a.serve(wire.WorkerSpec{Kind: kind, Index: idx, Args: enc}, false)
		if err != nil {
			for _, h := range started {
				_ = h.Stop(context.Background()) // no call reached them yet that could hold them up long
			}
			return fmt.Errorf("fleet: agent %s: %w", a.opts.ID, err)
		}
		started = append(started, h)
	}
	return nil
}

// serve starts a worker of spec and tracks it until it stops; spawned workers give their capacity back then.
func (a *Agent) serve(spec wire.WorkerSpec, spawned bool) (*hosted, error) {
	if spec.Prefix == "" {
		spec.Prefix = a.opts.Prefix
	}
	if spec.HeartbeatInterval <= 0 {
		spec.HeartbeatInterval = a.opts.HeartbeatInterval
	}
	a.mu.Lock()
	if a.stopped {
		a.mu.Unlock()
		return nil, fmt.Errorf("%w: agent %s is stopping", ErrWorkerStopped, a.opts.ID)
	}
	a.mu.Unlock()
	h, err := serve(a.nc, spec, serveOptions{Agent: a.opts.ID, MaxCallBytes: a.opts.MaxCallBytes,
		Logger: a.opts.Logger, OnCall: a.opts.OnCall, onStop: func(h *hosted) { a.forget(h, spawned) },
		agentCalls: a.callSub})
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	if a.stopped {
		// Stop began while the worker started and did not see it.
		a.mu.Unlock()
		_ = h.Stop(context.Background()) // nothing was sent to it yet
		return nil, fmt.Errorf("%w: agent %s is stopping", ErrWorkerStopped, a.opts.ID)
	}
	a.workers[h.ID()] = h
	a.mu.Unlock()
	return h, nil
}

func (a *Agent) forget(h *hosted, spawned bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.workers[h.ID()] == h {
		delete(a.workers, h.ID())
	}
	if spawned {
		a.used--
	}
}

func (a *Agent) onDiscover(m *nats.Msg) {
	c, err := codec.ForContentType(m.Header.Get(wire.HeaderContentType))
	if err != nil || m.Reply == "" {
		return
	}
	a.respond(m, c, a.Info())
}

func (a *Agent) onSpawn(m *nats.Msg) {
	c, err := codec.ForContentType(m.Header.Get(wire.HeaderContentType))
	if err != nil {
		a.respond(m, codec.JSON, wire.SpawnReply{Error: fmt.Sprintf("fleet: agent %s: %v", a.opts.ID, err)})
		return
	}
	var spec wire.WorkerSpec
	if err := c.Unmarshal(m.Data, &spec); err != nil {
		a.respond(m, c, wire.SpawnReply{Error: fmt.Sprintf("fleet: agent %s: bad spawn request: %v", a.opts.ID, err)})
		return
	}
	if _, err := Lookup(spec.Kind); err != nil {
		a.respond(m, c, wire.SpawnReply{Error: fmt.Sprintf("fleet: agent %s: %v", a.opts.ID, err)})
		return
	}
	a.mu.Lock()
	switch {
	case a.stopped:
		a.mu.Unlock()
		a.respond(m, c, wire.SpawnReply{Error: fmt.Sprintf("%v: agent %s is stopping", ErrWorkerStopped, a.opts.ID)})
		return
	case a.used >= a.opts.Capacity:
		used := a.used
		a.mu.Unlock()
		a.respond(m, c, wire.SpawnReply{Error: fmt.Sprintf("%v: agent %s uses %d of %d", ErrNoCapacity, a.opts.ID,
			used, a.opts.Capacity)})
		return
	}
	a.used++
	a.spawning.Add(1)
	a.mu.Unlock()
	// Building a worker may wait on JetStream (its limit set); other spawns and discovery go on meanwhile.
	go func() {
		defer a.spawning.Done()
		h, err := a.serve(spec, true)
		if err != nil {
			a.mu.Lock()
			a.used--
			a.mu.Unlock()
			a.respond(m, c, wire.SpawnReply{Error: err.Error()})
			return
		}
		a.respond(m, c, wire.SpawnReply{WorkerID: h.ID()})
	}()
}

func (a *Agent) respond(m *nats.Msg, c codec.Codec, v any) {
	if m.Reply == "" {
		return
	}
	b, err := c.Marshal(v)
	if err != nil {
		a.opts.Logger.Warn("fleet: agent: encode reply", "agent", a.opts.ID, "err", err)
		return
	}
	r := nats.NewMsg(m.Reply)
	r.Header.Set(wire.HeaderContentType, c.ContentType())
	r.Data = b
	if err := a.nc.PublishMsg(r); err != nil {
		a.opts.Logger.Warn("fleet: agent: reply", "agent", a.opts.ID, "err", err)
	}
}

// Stop stops answering spawn and discovery requests and stops every worker the agent hosts, letting their calls
// finish; when ctx ends first, the remaining calls are cancelled and Stop returns ctx's error. Stop is idempotent.
func (a *Agent) Stop(ctx context.Context) error {
	a.mu.Lock()
	first := !a.stopped
	a.stopped = true
	a.mu.Unlock()
	if first {
		_ = a.discSub.Unsubscribe()
		_ = a.spawnSub.Unsubscribe()
	}
	a.spawning.Wait()
	defer a.stopCalls() // once the workers have stopped: calls buffered for them still reach them
	a.mu.Lock()
	hosted := make([]*hosted, 0, len(a.workers))
	for _, h := range a.workers {
		hosted = append(hosted, h)
	}
	a.mu.Unlock()
	errs := make([]error, len(hosted))
	var wg sync.WaitGroup
	for i, h := range hosted {
		wg.Go(func() { errs[i] = h.Stop(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
