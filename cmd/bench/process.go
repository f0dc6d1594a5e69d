package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// Rows and contenders of the process and fleet rows.
const (
	rowProcSeq = "process, sequential call"
	cNFProc1   = "natsfleet, 1 worker process"
	cRawReq    = "raw nc.Request, 1 responder child"
	cMicro1    = "nats.go micro, 1 instance"
	cNFProc4   = "natsfleet, 4 worker processes"
	cRawPipe   = "raw pipelined, 4 responder children"
	cMicro4    = "nats.go micro, 4 instances"
	cNFFleet   = "natsfleet fleet, 4 workers in 2 agents"

	rawSubject   = "bench.raw"
	microSubject = "bench.micro"
	callArg      = 42
)

// depths are the calls in flight of the pipelined process and fleet rows.
var depths = []int{256, 1024}

// pipeQueued is the natsfleet pools' MaxQueuedTasks in the pipelined rows: room on the 4 workers for the deepest
// pipeline, which the raw and micro contenders keep in flight too. The default of 100 per worker would hold 624 of
// 1024 calls in the pool's queue.
var pipeQueued = depths[len(depths)-1] / 4

func rowProcPipe(depth int) string  { return fmt.Sprintf("process, pipelined, %d in flight", depth) }
func rowFleetPipe(depth int) string { return fmt.Sprintf("fleet, pipelined, %d in flight", depth) }

// quietLogger keeps the pools' informational logs (children's start and stop) out of the table; errors still show.
var quietLogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

// payload is what the raw and micro contenders send and answer: the very bytes a natsfleet pool and worker exchange for
// DataProcessor.Process(42) (headers and msgpack body), so every contender moves the same payload.
type payload struct {
	header    nats.Header // call headers
	body      []byte      // msgpack [42]
	replyHdr  nats.Header
	replyBody []byte // msgpack 420
}

func newPayload() (payload, error) {
	body, err := codec.Msgpack.AppendArgs(nil, []any{callArg})
	if err != nil {
		return payload{}, err
	}
	reply, err := codec.Msgpack.Marshal(callArg * 10)
	if err != nil {
		return payload{}, err
	}
	const id = "0123456789abcdefghijkl" // a call ID as long as a pool's
	return payload{
		header: nats.Header{wire.HeaderCallID: {id}, wire.HeaderMethod: {"Process"}},
		body:   body,
		replyHdr: nats.Header{wire.HeaderCallID: {id}, wire.HeaderStatus: {wire.StatusOK},
			wire.HeaderContentType: {codec.ContentTypeMsgpack}},
		replyBody: reply,
	}, nil
}

// serveRaw answers every request on the subject with the same reply, from a queue group so that several children
// share the load.
func serveRaw(nc *nats.Conn, cfg childConfig, say func(string, ...any) error) error {
	w, err := newPayload()
	if err != nil {
		return err
	}
	reply := &nats.Msg{Header: w.replyHdr, Data: w.replyBody}
	sub, err := nc.QueueSubscribe(cfg.Subject, "raw", func(m *nats.Msg) { _ = m.RespondMsg(reply) })
	if err != nil {
		return err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return err
	}
	return serveUntilParentGoes(nc, say)
}

// serveMicro runs a nats.go micro service with two endpoints: {subject}.echo answers like the raw responder,
// {subject}.work sleeps for the msgpack-encoded duration it is sent (the uneven-work row).
func serveMicro(nc *nats.Conn, cfg childConfig, say func(string, ...any) error) error {
	w, err := newPayload()
	if err != nil {
		return err
	}
	svc, err := micro.AddService(nc, micro.Config{Name: "bench", Version: "1.0.0"})
	if err != nil {
		return err
	}
	defer svc.Stop()
	hdr := micro.WithHeaders(micro.Headers(w.replyHdr))
	err = svc.AddEndpoint("echo", micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(w.replyBody, hdr) }),
		micro.WithEndpointSubject(cfg.Subject+".echo"))
	if err != nil {
		return err
	}
	done, err := codec.Msgpack.Marshal(1)
	if err != nil {
		return err
	}
	err = svc.AddEndpoint("work", micro.HandlerFunc(func(r micro.Request) {
		var args []int64
		if err := msgpack.Unmarshal(r.Data(), &args); err != nil || len(args) != 1 {
			_ = r.Error("400", "want [duration]", nil)
			return
		}
		time.Sleep(time.Duration(args[0]))
		_ = r.Respond(done, hdr)
	}), micro.WithEndpointSubject(cfg.Subject+".work"))
	if err != nil {
		return err
	}
	return serveUntilParentGoes(nc, say)
}

// serveAgent runs a natsfleet agent offering cfg.Capacity workers to fleet-mode pools.
func serveAgent(nc *nats.Conn, cfg childConfig, say func(string, ...any) error) error {
	a, err := fleet.StartAgent(nc, fleet.AgentOptions{Capacity: cfg.Capacity, Logger: quietLogger})
	if err != nil {
		return err
	}
	if cfg.Standing > 0 {
		if err := a.Serve(benchKind.Name(), cfg.Standing); err != nil {
			return err
		}
	}
	if err := say("READY"); err != nil {
		return err
	}
	untilStdinEnds()
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	return a.Stop(ctx)
}

// sequentialRequests returns a contender that makes one request at a time with msg and checks the reply.
func sequentialRequests(nc *nats.Conn, msg *nats.Msg, want []byte) func(time.Duration) (float64, error) {
	return func(d time.Duration) (float64, error) {
		n, el, err := timed(d, 16, func(int) error {
			r, err := nc.RequestMsg(msg, 5*time.Second)
			if err == nil && !bytes.Equal(r.Data, want) {
				err = fmt.Errorf("reply %x, want %x", r.Data, want)
			}
			return err
		})
		return perCall(n, el), err
	}
}

// sequentialCalls returns a contender that makes one natsfleet call at a time.
func sequentialCalls(p *client.Pool) func(time.Duration) (float64, error) {
	ctx := context.Background()
	return func(d time.Duration) (float64, error) {
		n, el, err := timed(d, 16, func(int) error {
			v, err := client.Call[int](p, "Process", callArg).Result(ctx)
			if err == nil && v != callArg*10 {
				err = wrong(v, callArg*10)
			}
			return err
		})
		return perCall(n, el), err
	}
}

// processPool starts a pool on a connection of its own and returns it with the worker processes it started (none
// in fleet mode).
func (b *bench) processPool(kind *fleet.Kind, opts client.Options, args ...any) (*client.Pool, []int, error) {
	nc, err := b.connect()
	if err != nil {
		return nil, nil, err
	}
	opts.Conn, opts.Logger = nc, quietLogger
	before := childPIDs()
	p, err := client.New(bg, kind, opts, args...)
	if err != nil {
		return nil, nil, err
	}
	var pids []int
	for pid := range childPIDs() {
		if !before[pid] {
			pids = append(pids, pid)
		}
	}
	return p, pids, nil
}

func pids(cs ...*child) []int {
	var out []int
	for _, c := range cs {
		out = append(out, c.pid())
	}
	return out
}

func (b *bench) processSequential() error {
	url, err := b.server()
	if err != nil {
		return err
	}
	w, err := newPayload()
	if err != nil {
		return err
	}
	p, workers, err := b.processPool(demo.DataProcessorKind, client.Options{Mode: client.Process, MaxWorkers: 1}, 10)
	if err != nil {
		return err
	}
	defer p.Close()
	b.procsOf[cNFProc1] = workers
	raw, err := b.startChild(roleRaw, childConfig{URL: url, Subject: rawSubject})
	if err != nil {
		return err
	}
	defer raw.stop()
	mc, err := b.startChild(roleMicro, childConfig{URL: url, Subject: microSubject})
	if err != nil {
		return err
	}
	defer mc.stop()
	b.procsOf[cRawReq], b.procsOf[cMicro1] = pids(raw), pids(mc)
	ncRaw, err := b.connect()
	if err != nil {
		return err
	}
	ncMicro, err := b.connect()
	if err != nil {
		return err
	}
	return b.measure(rowProcSeq, nsPerCall,
		contender{cNFProc1, sequentialCalls(p)},
		contender{cRawReq, sequentialRequests(ncRaw, &nats.Msg{Subject: rawSubject, Header: w.header, Data: w.body}, w.replyBody)},
		contender{cMicro1, sequentialRequests(ncMicro, &nats.Msg{Subject: microSubject + ".echo", Header: w.header, Data: w.body}, w.replyBody)},
	)
}

// ringCalls keeps depth natsfleet calls in flight for d: a ring of futures, each slot waited for (in call order)
// before it is reused. It returns completed calls per second, the tail included.
func ringCalls(p *client.Pool, depth int) func(time.Duration) (float64, error) {
	ring := ringCallsStalled(p, depth)
	return func(d time.Duration) (float64, error) {
		v, _, err := ring(d)
		return v, err
	}
}

// ringCallsStalled is ringCalls that also returns the longest time the ring waited for a call to complete.
func ringCallsStalled(p *client.Pool, depth int) func(time.Duration) (float64, time.Duration, error) {
	ctx := context.Background()
	return func(d time.Duration) (float64, time.Duration, error) {
		futs := make([]*client.Future[int], depth)
		wait := func(i int) error {
			if i < 0 {
				return nil
			}
			v, err := futs[i%depth].Result(ctx)
			if err == nil && v != (i%1000)*10 {
				err = wrong(v, (i%1000)*10)
			}
			return err
		}
		start := time.Now()
		last, stall := start, time.Duration(0)
		n := 0
		for ; ; n++ {
			now := time.Now()
			stall, last = max(stall, now.Sub(last)), now
			if now.Sub(start) >= d {
				break
			}
			if err := wait(n - depth); err != nil {
				return 0, 0, err
			}
			futs[n%depth] = client.Call[int](p, "Process", n%1000)
		}
		for i := n - depth; i < n; i++ {
			if err := wait(i); err != nil {
				return 0, 0, err
			}
		}
		return perSec(n, time.Since(start)), stall, nil
	}
}

// pipeClient is the raw pipelined baseline: requests published with reply subjects under one wildcard
// subscription, at most depth in flight, counted as they come back.
type pipeClient struct {
	nc     *nats.Conn
	prefix string
	sem    chan struct{}
	bad    atomic.Int64
}

func newPipeClient(nc *nats.Conn, depth int, want []byte) (*pipeClient, error) {
	c := &pipeClient{nc: nc, prefix: nc.NewInbox() + ".", sem: make(chan struct{}, depth)}
	sub, err := nc.Subscribe(c.prefix+"*", func(m *nats.Msg) {
		if !bytes.Equal(m.Data, want) {
			c.bad.Add(1)
		}
		<-c.sem
	})
	if err != nil {
		return nil, err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, err
	}
	return c, nc.Flush()
}

// run keeps the pipe full for d with copies of msg and returns completed requests per second, the tail included.
func (c *pipeClient) run(msg *nats.Msg) func(time.Duration) (float64, error) {
	return func(d time.Duration) (float64, error) {
		start := time.Now()
		n := 0
		for ; time.Since(start) < d; n++ {
			c.sem <- struct{}{}
			m := &nats.Msg{Subject: msg.Subject, Reply: c.prefix + strconv.Itoa(n), Header: msg.Header, Data: msg.Data}
			if err := c.nc.PublishMsg(m); err != nil {
				return 0, err
			}
		}
		// The pipe is drained when every slot of the semaphore can be taken.
		t := time.NewTimer(10 * time.Second)
		defer t.Stop()
		for range cap(c.sem) {
			select {
			case c.sem <- struct{}{}:
			case <-t.C:
				return 0, errors.New("replies missing after 10s")
			}
		}
		el := time.Since(start)
		for range cap(c.sem) {
			<-c.sem
		}
		if bad := c.bad.Swap(0); bad > 0 {
			return 0, fmt.Errorf("%d wrong replies", bad)
		}
		return perSec(n, el), nil
	}
}

// pipeContenders builds, for one depth, the raw and micro pipelined contenders against running children.
func (b *bench) pipeContenders(depth int, w payload) ([]contender, error) {
	ncRaw, err := b.connect()
	if err != nil {
		return nil, err
	}
	ncMicro, err := b.connect()
	if err != nil {
		return nil, err
	}
	rc, err := newPipeClient(ncRaw, depth, w.replyBody)
	if err != nil {
		return nil, err
	}
	mc, err := newPipeClient(ncMicro, depth, w.replyBody)
	if err != nil {
		return nil, err
	}
	return []contender{
		{cRawPipe, rc.run(&nats.Msg{Subject: rawSubject, Header: w.header, Data: w.body})},
		{cMicro4, mc.run(&nats.Msg{Subject: microSubject + ".echo", Header: w.header, Data: w.body})},
	}, nil
}

func (b *bench) processPipelined() error {
	url, err := b.server()
	if err != nil {
		return err
	}
	w, err := newPayload()
	if err != nil {
		return err
	}
	opts := client.Options{Mode: client.Process, MaxWorkers: 4, MaxQueuedTasks: pipeQueued}
	p, workers, err := b.processPool(demo.DataProcessorKind, opts, 10)
	if err != nil {
		return err
	}
	defer p.Close()
	b.procsOf[cNFProc4] = workers
	raws, err := b.startChildren(4, roleRaw, childConfig{URL: url, Subject: rawSubject})
	if err != nil {
		return err
	}
	defer stopChildren(raws)
	micros, err := b.startChildren(4, roleMicro, childConfig{URL: url, Subject: microSubject})
	if err != nil {
		return err
	}
	defer stopChildren(micros)
	b.procsOf[cRawPipe], b.procsOf[cMicro4] = pids(raws...), pids(micros...)
	for _, depth := range depths {
		cs, err := b.pipeContenders(depth, w)
		if err != nil {
			return err
		}
		if err := b.measure(rowProcPipe(depth), callsPerSec, append([]contender{{cNFProc4, ringCalls(p, depth)}}, cs...)...); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) fleetPipelined() error {
	url, err := b.server()
	if err != nil {
		return err
	}
	agents, err := b.startChildren(2, roleAgent, childConfig{URL: url, Capacity: 2})
	if err != nil {
		return err
	}
	defer stopChildren(agents)
	opts := client.Options{Mode: client.Fleet, MaxWorkers: 4, MaxQueuedTasks: pipeQueued}
	p, _, err := b.processPool(demo.DataProcessorKind, opts, 10)
	if err != nil {
		return err
	}
	defer p.Close()
	b.procsOf[cNFFleet] = pids(agents...)
	for _, depth := range depths {
		if err := b.measure(rowFleetPipe(depth), callsPerSec, contender{cNFFleet, ringCalls(p, depth)}); err != nil {
			return err
		}
	}
	return nil
}

// serveUntilParentGoes makes sure the server has the child's subscriptions, tells the parent the child is ready, and
// serves until the parent closes the child's stdin.
func serveUntilParentGoes(nc *nats.Conn, say func(string, ...any) error) error {
	if err := nc.Flush(); err != nil {
		return err
	}
	if err := say("READY"); err != nil {
		return err
	}
	untilStdinEnds()
	return nil
}
