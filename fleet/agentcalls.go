package fleet

import (
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/internal/wire"
)

// An agent's calls subject ({prefix}.agent.{id}.calls) takes calls for any of its workers, alone or in batches,
// each naming its worker (wire.HeaderWorker, wire.BatchCall.Worker). A pool with more workers on an agent than the
// agent has CPUs sends them their calls there (client's route.go): spread over thousands of workers, calls would
// otherwise travel one message each, and NATS's cost per message would dominate. The agent serves a batch as each
// worker serves its own (batch.go): every entry is taken by its worker in order, and the replies that pile up for
// one caller, from any of the workers, travel together.

// agentCalls is the agent's part in serving its calls subject; only the subscription's goroutine touches it.
type agentCalls struct {
	batch   []wire.BatchCall
	replies replyBatch
}

func (a *Agent) startCalls() error {
	a.calls.replies.nc, a.calls.replies.log, a.calls.replies.owner = a.nc, a.opts.Logger, "agent "+a.opts.ID
	sub, err := a.nc.Subscribe(a.subjects.AgentCalls(a.opts.ID), a.onCalls)
	if err != nil {
		return err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		return err
	}
	a.callSub = sub
	return nil
}

func (a *Agent) stopCalls() { _ = a.callSub.Unsubscribe() }

// hostedFor returns the worker a call names, nil when the agent does not host it (any more).
func (a *Agent) hostedFor(id string) *hosted {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.workers[id]
}

func (a *Agent) onCalls(m *nats.Msg) {
	start := time.Now()
	in := wire.ReadCall(m)
	if in.Batch {
		a.onCallBatch(m, start)
		return
	}
	if h := a.hostedFor(in.Worker); h != nil {
		h.take(&in, start)
		return
	}
	a.noWorker(in.Reply, nil)
}

// onCallBatch serves a batch of calls for the agent's workers.
func (a *Agent) onCallBatch(m *nats.Msg, start time.Time) {
	ac := &a.calls
	batch, err := wire.DecodeBatchCalls(ac.batch[:0], m.Data)
	if err != nil {
		a.opts.Logger.Warn("fleet: unreadable call batch dropped", "agent", a.opts.ID, "bytes", len(m.Data),
			"err", err)
	} else {
		rb := &ac.replies
		rb.open()
		var h *hosted // consecutive entries are often for one worker: look it up once for them
		opened, served := start, 0
		for i := range batch {
			e := &batch[i]
			if h == nil || h.spec.ID != e.Worker {
				h = a.hostedFor(e.Worker)
			}
			if h == nil {
				a.noWorker(e.Reply, rb)
			} else {
				in := wire.Call{ID: e.ID, Method: e.Method, Deadline: e.Deadline, Reply: e.Reply, Body: e.Args}
				if c := h.accept(&in, start, rb); c != nil {
					h.dispatch(c, false)
				}
			}
			if served++; i == len(batch)-1 {
				break
			}
			if served == replyChunk || served%8 == 0 && time.Since(opened) >= replyWait {
				rb.flush()
				rb.open()
				opened, served = time.Now(), 0
			}
		}
		rb.flush()
	}
	clear(batch)
	ac.batch = batch[:0]
}

// noWorker answers a call for a worker the agent does not host as the server answers a call to a subject nobody
// serves: the call never started, and its caller treats it so (wire.StatusNoResponders).
func (a *Agent) noWorker(reply string, rb *replyBatch) {
	if reply == "" {
		return
	}
	none := func(dst []byte) (string, []byte, bool) { return wire.StatusNoResponders, dst, true }
	if rb != nil && rb.add(reply, "", none, func(string, []byte) {}) {
		return
	}
	msg := nats.NewMsg(reply)
	msg.Header.Set("Status", wire.StatusNoResponders)
	if err := a.nc.PublishMsg(msg); err != nil {
		a.opts.Logger.Debug("fleet: agent: no-worker reply", "agent", a.opts.ID, "err", err)
	}
}
