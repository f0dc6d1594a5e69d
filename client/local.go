package client

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/actor"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// localTransport hosts a pool's workers in this process: goroutines (Thread, Asyncio) or the caller itself (Sync).
type localTransport struct {
	pool *Pool
	kind actor.Kind
	args []any
	seq  atomic.Uint64 // makes worker IDs unique, replacements and on-demand workers included
	// inline runs Sync calls in their callers one at a time.
	inline sync.Mutex
}

// localWorker is an in-process worker; inline is set for a Sync worker, whose calls run in their callers.
type localWorker struct {
	w      *actor.Worker
	inline *sync.Mutex
}

func (t *localTransport) start(_ context.Context, index int) (worker, error) {
	p := t.pool
	w, err := t.kind.Start(actor.Options{
		ID:         p.id + "-" + strconv.Itoa(index) + "-" + strconv.FormatUint(t.seq.Add(1), 36),
		Index:      index,
		Concurrent: p.opts.Mode == Asyncio,
		Limits:     p.lims,
	}, t.args)
	if err != nil {
		return nil, err
	}
	lw := localWorker{w: w}
	if p.opts.Mode == Sync {
		lw.inline = &t.inline
	}
	return lw, nil
}

func (t *localTransport) prepare(c *call) error {
	p := t.pool
	m, err := t.kind.Method(c.method)
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

// run: in-process calls travel one by one.
func (*localTransport) run(int64, int) (int, bool) { return 1, false }

// waiting: no call is held back.
func (*localTransport) waiting() {}

// cancel: a cancelled call's context is cancelled when it completes; the worker needs no word.
func (*localTransport) cancel(*call) {}

func (*localTransport) close(context.Context) error { return nil }

// report: in-process workers are never lost or reconciled.
func (*localTransport) report(*PoolStats) {}

// decodeRawArgs decodes results of remote futures passed on to an in-process method into its parameter types.
func decodeRawArgs(m actor.Method, args []any) ([]any, error) {
	var params []reflect.Type
	out := args
	for i, a := range args {
		rv, ok := a.(rawValue)
		if !ok {
			continue
		}
		if params == nil {
			params = m.Params()
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

func (lw localWorker) id() string { return lw.w.ID() }

func (lw localWorker) send(c *call) {
	lw.reportTo(c)
	if lw.inline == nil {
		lw.w.Submit(&c.Task)
		return
	}
	lw.inline.Lock()
	res, err := lw.w.Run(&c.Task)
	lw.inline.Unlock()
	c.complete(res, err)
}

func (lw localWorker) sendUrgent(c *call) {
	lw.reportTo(c)
	if lw.inline == nil {
		lw.w.SubmitUrgent(&c.Task)
		return
	}
	res, err := lw.w.Run(&c.Task)
	c.complete(res, err)
}

// reportTo sends the progress events of c to its pool's sink. The worker is known only now, and only a pool that
// shows progress pays for the closure.
func (lw localWorker) reportTo(c *call) {
	if sink := c.pool.sink; sink != nil {
		c.Progress = func(ev wire.Progress) { sink(progressEvent(c, lw.w.ID(), ev)) }
	}
}

// abort fails the calls with err before their contexts are cancelled, so a method returning ctx.Err() does not
// decide the call's error.
func (lw localWorker) abort(err error) { lw.w.Abort(err) }

func (lw localWorker) stop(ctx context.Context) error { return lw.w.Stop(ctx) }

func (lw localWorker) stats() fleet.WorkerStats {
	st := lw.w.Stats()
	return fleet.WorkerStats{ID: lw.w.ID(), Index: lw.w.Index(), Kind: lw.w.Kind(), Calls: st.Calls,
		Errors: st.Errors, InFlight: st.InFlight, Stopped: st.Stopped, PID: pid, Host: host}
}

var (
	pid     = os.Getpid()
	host, _ = os.Hostname()
)
