package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// DiscoveryWindow is how long a pool listens for the answers of agents or standing workers it asked to report:
// every one of them answers, so the pool gathers what arrives in this window.
const DiscoveryWindow = 300 * time.Millisecond

// gather sends a request on subject and collects the replies that arrive within DiscoveryWindow.
func gather[T any](ctx context.Context, nc *nats.Conn, subject string) ([]T, error) {
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("client: discovery: %w", err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, fmt.Errorf("client: discovery: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, DiscoveryWindow)
	defer cancel()
	var out []T
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return out, nil
			}
			return out, fmt.Errorf("client: discovery: %w", err)
		}
		var v T
		if msg.Header.Get("Status") == "503" {
			return out, nil // nobody listens
		}
		if err := msgpack.Unmarshal(msg.Data, &v); err == nil {
			out = append(out, v)
		}
	}
}

// DiscoverAgents lists the agents of the fleet reachable on nc under prefix ("" means "fleet").
func DiscoverAgents(ctx context.Context, nc *nats.Conn, prefix string) ([]fleet.AgentInfo, error) {
	return gather[fleet.AgentInfo](ctx, nc, broker.Subjects{Prefix: prefix}.AgentDiscover())
}

// planFleet places the pool's workers on the agents that can build its kind, most free capacity first.
func (t *remoteTransport) planFleet(ctx context.Context) error {
	p := t.pool
	agents, err := DiscoverAgents(ctx, t.nc, p.opts.Prefix)
	if err != nil {
		return err
	}
	agents = slices.DeleteFunc(agents, func(a fleet.AgentInfo) bool { return !slices.Contains(a.Kinds, p.name) || a.Free <= 0 })
	free := 0
	for _, a := range agents {
		free += a.Free
	}
	want := p.opts.MaxWorkers
	if want == 0 {
		want = free
	}
	if want == 0 || free < want {
		return fmt.Errorf("%w: the fleet's agents offer %d free workers of kind %s, want %d", ErrNoWorkers, free, p.name, want)
	}
	t.plan = make([]string, want)
	for i := range t.plan {
		best := 0
		for j := range agents {
			if agents[j].Free > agents[best].Free {
				best = j
			}
		}
		t.plan[i] = agents[best].ID
		agents[best].Free--
		t.agents.placed(agents[best])
	}
	p.opts.MaxWorkers = want
	return nil
}

// spawnOnAgent asks an agent to start the worker: the planned one for the pool's first workers, the agent with the
// most free capacity for replacements and on-demand workers.
func (t *remoteTransport) spawnOnAgent(ctx context.Context, index int, spec wire.WorkerSpec) (string, error) {
	agent := ""
	if t.plan != nil && index < len(t.plan) {
		agent, t.plan[index] = t.plan[index], "" // a replacement at this index places itself afresh
	}
	if agent == "" {
		agents, err := DiscoverAgents(ctx, t.nc, t.pool.opts.Prefix)
		if err != nil {
			return "", err
		}
		best := -1
		for j, a := range agents {
			if slices.Contains(a.Kinds, spec.Kind) && a.Free > 0 && (best < 0 || a.Free > agents[best].Free) {
				best = j
			}
		}
		if best < 0 {
			return "", fmt.Errorf("%w: no agent has free capacity for kind %s", ErrNoWorkers, spec.Kind)
		}
		agent = agents[best].ID
		t.agents.placed(agents[best])
	}
	body, err := msgpack.Marshal(&spec)
	if err != nil {
		return "", fmt.Errorf("client: encode worker spec: %w", err)
	}
	reply, err := t.nc.RequestWithContext(ctx, t.subj.Spawn(agent), body)
	if err != nil {
		return "", fmt.Errorf("client: spawn %s on agent %s: %w", spec.Kind, agent, err)
	}
	var sr wire.SpawnReply
	if err := msgpack.Unmarshal(reply.Data, &sr); err != nil {
		return "", fmt.Errorf("client: spawn reply of agent %s: %w", agent, err)
	}
	if sr.Error != "" {
		return "", fmt.Errorf("client: agent %s refused to spawn %s: %s", agent, spec.Kind, sr.Error)
	}
	return agent, nil
}

// Attach joins the standing workers of kind that agents serve (worker --serve Kind=N) on nc: the pool balances calls
// over them, adds workers that start later and drops those that stop answering. Stop leaves the workers running.
// A pool that finds no worker yet is returned all the same; its calls fail with ErrNoWorkers until one joins.
// opts.Mode is Fleet whatever it says; MaxWorkers, OnDemand and constructor settings do not apply.
func Attach(ctx context.Context, nc *nats.Conn, kind string, opts Options) (*Pool, error) {
	if nc == nil {
		return nil, fmt.Errorf("%w: Attach needs a connection", ErrInvalidOptions)
	}
	if !broker.ValidToken(kind) {
		return nil, fmt.Errorf("%w: kind %q", ErrInvalidOptions, kind)
	}
	opts.Mode, opts.Conn, opts.OnDemand, opts.MaxWorkers = Fleet, nc, false, 0
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if len(opts.Limits) > 0 {
		return nil, fmt.Errorf("%w: standing workers were started with their own limits; Attach takes no Limits", ErrInvalidOptions)
	}
	p := newPool(nil, kind, opts)
	t, err := newRemoteTransport(ctx, p, nil, true)
	if err != nil {
		return nil, err
	}
	p.tr = t
	beats, err := gather[wire.Heartbeat](ctx, nc, t.subj.KindDiscover(kind))
	if err != nil {
		t.shutdown()
		return nil, err
	}
	for _, hb := range beats {
		t.join(hb)
	}
	return p, nil
}
