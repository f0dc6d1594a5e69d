package client

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"sync/atomic"

	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/actor"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// localBackend hosts workers in this process: goroutines (Thread, Asyncio) or the caller itself (Sync).
type localBackend struct {
	pool *Pool
	args []any
	seq  atomic.Uint64 // makes worker IDs unique, replacements and on-demand workers included
}

type localHandle struct{ w *actor.Worker }

func (b *localBackend) start(_ context.Context, index int) (handle, error) {
	p := b.pool
	w, err := actor.Registry.Start(p.name, actor.Options{
		ID:         p.id + "-" + strconv.Itoa(index) + "-" + strconv.FormatUint(b.seq.Add(1), 36),
		Index:      index,
		Concurrent: p.opts.Mode == Asyncio,
		Limits:     p.lims,
	}, b.args)
	if err != nil {
		return nil, err
	}
	return localHandle{w}, nil
}

func (b *localBackend) prepare(c *call) error {
	p := b.pool
	m, err := actor.Registry.Method(p.name, c.method)
	if err != nil {
		return err
	}
	args, err := decodeRawArgs(m, c.Values)
	if err != nil {
		return err
	}
	c.Values = args
	// Arguments of the very parameter types reach the method as they are; the rest are converted here, so that a
	// wrong one fails the call before it is queued.
	if !m.Exact(args) {
		if c.Args, err = m.Args(args); err != nil {
			return err
		}
	}
	c.Method = m
	c.Retry = p.retry.forMethod(c.method)
	base := p.ctx
	if c.ext != nil && c.ext.ctx != nil {
		base = c.ext.ctx
	}
	if m.TakesContext() {
		c.Ctx, c.Cancel = context.WithCancel(base)
	} else {
		c.Ctx = base
	}
	if p.sink != nil {
		c.CallID = p.id + "." + strconv.FormatUint(p.nextCallID(), 10)
	}
	return nil
}

// decodeRawArgs decodes results of remote futures passed on to an in-process method into its parameter types.
func decodeRawArgs(m actor.Method, args []any) ([]any, error) {
	params := m.Params()
	out := args
	for i, a := range args {
		rv, ok := a.(rawValue)
		if !ok {
			continue
		}
		if i >= len(params) {
			break // the count error is reported by Method.Args
		}
		if &out[0] == &args[0] {
			out = append([]any(nil), args...)
		}
		v := reflect.New(params[i])
		if err := rv.codec.Unmarshal(rv.raw, v.Interface()); err != nil {
			return nil, m.BadArguments(fmt.Errorf("argument %d: %w", i, err))
		}
		out[i] = v.Elem().Interface()
	}
	return out, nil
}

func (b *localBackend) close(context.Context) error { return nil }

func (h localHandle) id() string                     { return h.w.ID() }
func (h localHandle) stop(ctx context.Context) error { return h.w.Stop(ctx) }
func (h localHandle) stats() fleet.WorkerStats {
	st := h.w.Stats()
	return fleet.WorkerStats{ID: h.w.ID(), Index: h.w.Index(), Kind: h.w.Kind(), Calls: st.Calls, Errors: st.Errors,
		InFlight: st.InFlight, Stopped: st.Stopped, PID: pid, Host: host}
}

var (
	pid     = os.Getpid()
	host, _ = os.Hostname()
)

func (h localHandle) send(c *call) {
	reportTo(c, h.w)
	h.w.Submit(&c.Task)
}

// reportTo sends the progress events of c, run by w, to its pool's sink. The worker is known only now, and only a
// pool that shows progress pays for the closure.
func reportTo(c *call, w *actor.Worker) {
	if sink := c.pool.sink; sink != nil {
		c.Progress = func(ev wire.Progress) { sink(progressEvent(c, w.ID(), ev)) }
	}
}

// runInline runs a Sync-mode call in the caller's goroutine; the future is done when Call returns.
func (p *Pool) runInline(c *call) {
	p.mu.Lock()
	slot, ok := p.bal.Pick(0)
	if !ok {
		p.mu.Unlock()
		c.complete(nil, fmt.Errorf("%w: %s", ErrNoWorkers, p.name))
		return
	}
	c.slot = int32(slot)
	w := p.slots[slot].(localHandle).w
	p.mu.Unlock()
	reportTo(c, w)
	p.syncMu.Lock()
	res, err := w.Run(&c.Task)
	p.syncMu.Unlock()
	c.complete(res, err)
}

// runOnDemand starts a worker for c alone, runs c on it and stops it.
func (p *Pool) runOnDemand(c *call) {
	defer p.onDemandWG.Done()
	ctx, cancel := context.WithTimeout(p.ctx, p.opts.StartTimeout)
	h, err := p.be.start(ctx, 0)
	cancel()
	if err == nil {
		p.mu.Lock()
		p.onDemand[h] = struct{}{}
		p.onDemandTotal++
		p.mu.Unlock()
		h.send(c)
		<-c.doneChan()
		stopCtx, cancel := context.WithTimeout(context.Background(), p.opts.StartTimeout)
		err = h.stop(stopCtx)
		cancel()
		if err != nil {
			p.opts.Logger.Warn("client: stop on-demand worker", "worker", h.id(), "err", err)
		}
	} else {
		c.complete(nil, fmt.Errorf("client: start on-demand worker of %s: %w", p.name, err))
	}
	p.mu.Lock()
	delete(p.onDemand, h)
	p.onDemandActive--
	next := p.drainLocked(nil)
	p.mu.Unlock()
	p.dispatchAll(next)
}
