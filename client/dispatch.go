package client

import (
	"fmt"
	"time"
)

// The dispatcher: how an accepted call reaches a worker. A call goes to the worker the balancer picks among those
// with room under Options.MaxQueuedTasks, or waits in the pool's queue until a completion or a new worker makes
// room. Without a cap no call ever waits, and dispatch reads a snapshot of the workers without the pool's lock.

// admit puts a started worker into rotation and sends it the queued calls it has room for. It reports false when the
// pool is stopping, and the caller stops the worker.
func (p *Pool) admit(w worker) bool {
	p.mu.Lock()
	if p.stopping.Load() {
		p.mu.Unlock()
		return false
	}
	p.addLocked(w)
	p.publishSlotsLocked()
	next := p.drainLocked(nil)
	p.mu.Unlock()
	p.dispatchAll(next)
	return true
}

// admitAll puts the pool's first workers into rotation at once.
func (p *Pool) admitAll(ws []worker) {
	p.mu.Lock()
	for _, w := range ws {
		p.addLocked(w)
	}
	p.publishSlotsLocked()
	p.mu.Unlock()
}

// drop takes w out of rotation: it gets no new calls, and those it holds still end. It reports whether w was in
// rotation.
func (p *Pool) drop(w worker) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	slot, ok := p.slotOf[w]
	if ok {
		p.removeLocked(slot)
		p.publishSlotsLocked()
	}
	return ok
}

// dropAll takes every worker out of rotation and returns them, on-demand ones included.
func (p *Pool) dropAll() []worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	ws := make([]worker, 0, len(p.slotOf)+len(p.onDemand.live))
	for w := range p.onDemand.live {
		ws = append(ws, w)
	}
	for i, w := range p.slots {
		if w != nil {
			ws = append(ws, w)
			p.removeLocked(i)
		}
	}
	p.publishSlotsLocked()
	return ws
}

// dropLast takes the k workers of the highest slots out of rotation and returns them (Resize).
func (p *Pool) dropLast(k int) []worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []worker
	for i := len(p.slots) - 1; i >= 0 && len(out) < k; i-- {
		if w := p.slots[i]; w != nil {
			out = append(out, w)
			p.removeLocked(i)
		}
	}
	p.publishSlotsLocked()
	return out
}

// workers are the workers in rotation, in slot order.
func (p *Pool) workers() []worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	ws := make([]worker, 0, len(p.slotOf))
	for _, w := range p.slots {
		if w != nil {
			ws = append(ws, w)
		}
	}
	return ws
}

func (p *Pool) addLocked(w worker) {
	i := p.bal.Add()
	if i == len(p.slots) {
		p.slots = append(p.slots, w)
	} else {
		p.slots[i] = w
	}
	p.slotOf[w] = i
}

func (p *Pool) removeLocked(i int) {
	p.bal.Remove(i)
	delete(p.slotOf, p.slots[i])
	p.slots[i] = nil
}

// publishSlotsLocked gives the lock-free dispatch path a fresh copy of the slots.
func (p *Pool) publishSlotsLocked() {
	s := append([]worker(nil), p.slots...)
	p.snap.Store(&s)
	p.live.Store(int32(len(p.slotOf)))
}

// enter counts an accepted call; it fails once the pool is stopping.
func (p *Pool) enter() bool {
	p.calls.entered.Add(1)
	if p.stopping.Load() {
		p.leave()
		return false
	}
	return true
}

// leave counts a completed call and lets Stop go on after the last one.
func (p *Pool) leave() {
	if n := p.calls.left.Add(1); p.stopping.Load() && n == p.calls.entered.Load() {
		p.drainOnce.Do(func() { close(p.drained) })
	}
}

// pending is the number of accepted calls not completed.
func (p *Pool) pending() int64 { return p.calls.entered.Load() - p.calls.left.Load() }

// inFlight is the number of accepted calls whose outcome is not set yet: pending without the calls whose callers may
// already have their results.
func (p *Pool) inFlight() int64 { return p.calls.entered.Load() - p.calls.finished.Load() }

func (p *Pool) initCall(c *call, method string, args []any) {
	c.pool, c.method, c.Values, c.slot = p, method, args, -1
	c.Task.Reply = c
}

// submit accepts the call, once the futures among its arguments are resolved.
func (p *Pool) submit(c *call) {
	if p.opts.UnwrapFutures == UnwrapOn {
		if deps := findFutures(c.Values); deps != nil {
			if !p.enter() { // the call counts as accepted while it waits for its arguments
				p.reject(c, ErrPoolStopped)
				return
			}
			go p.awaitArgs(c, deps)
			return
		}
	}
	p.accept(c, false)
}

// reject fails a call the pool never accepted.
func (p *Pool) reject(c *call, err error) {
	c.pool = nil
	c.complete(nil, err)
}

func (p *Pool) awaitArgs(c *call, deps []Awaitable) {
	for _, d := range deps {
		select {
		case <-d.Done():
		case <-c.doneChan(): // cancelled while waiting
			return
		case <-p.ctx.Done():
			c.complete(nil, fmt.Errorf("%w: stopped while waiting for argument futures", ErrPoolStopped))
			return
		}
	}
	args, err := substitute(c.Values)
	if err != nil {
		c.complete(nil, fmt.Errorf("client: argument of %s: %w", c.method, err))
		return
	}
	c.Values = args
	p.accept(c, true)
}

// accept prepares the call and dispatches it, or queues it when no worker has room; counted says the call was
// counted in already.
func (p *Pool) accept(c *call, counted bool) {
	if err := p.tr.prepare(c); err != nil {
		if counted {
			c.complete(nil, err)
		} else {
			p.reject(c, err)
		}
		return
	}
	if !counted && !p.enter() {
		p.reject(c, ErrPoolStopped)
		return
	}
	p.route(c)
}

// route dispatches an accepted call, or queues it when no worker has room.
func (p *Pool) route(c *call) {
	if p.direct {
		slot, ok := p.pick(c, 0)
		if !ok {
			c.complete(nil, fmt.Errorf("%w: %s", ErrNoWorkers, p.name))
			return
		}
		c.slot = int32(slot)
		(*p.snap.Load())[slot].send(c)
		return
	}
	p.mu.Lock()
	if p.queue.len() == 0 {
		if w, ok := p.pickLocked(c); ok {
			p.mu.Unlock()
			p.dispatch(w, c)
			return
		}
	}
	if !p.opts.OnDemand && p.bal.Len() == 0 {
		p.mu.Unlock()
		c.complete(nil, fmt.Errorf("%w: %s", ErrNoWorkers, p.name))
		return
	}
	p.seq++
	p.queue.push(c, time.Now().UnixNano()-int64(c.priority)*int64(p.opts.PriorityAging), p.seq)
	p.mu.Unlock()
}

// pickLocked chooses the worker for c, or reports that none has room; an on-demand call gets a nil worker, and a
// worker of its own once dispatched.
func (p *Pool) pickLocked(c *call) (worker, bool) {
	if p.opts.OnDemand {
		if p.opts.MaxWorkers > 0 && p.onDemand.active >= p.opts.MaxWorkers {
			return nil, false
		}
		p.onDemand.active++
		p.onDemand.wg.Add(1)
		return nil, true
	}
	slot, ok := p.pick(c, p.limit)
	if !ok {
		return nil, false
	}
	c.slot = int32(slot)
	return p.slots[slot], true
}

func (p *Pool) dispatch(w worker, c *call) {
	if w == nil {
		go p.runOnDemand(c)
		return
	}
	w.send(c)
}

// finished is called once per accepted call when it completes, before its outcome is published: it frees the call's
// slot and dispatches what the freed slot makes room for. The call is counted out (leave) after publication.
func (p *Pool) finished(c *call) {
	p.calls.finished.Add(1)
	if p.direct {
		if c.slot >= 0 && p.counted {
			p.bal.Done(int(c.slot))
		}
		return
	}
	p.mu.Lock()
	if c.slot >= 0 {
		p.bal.Done(int(c.slot))
		c.slot = -1
	}
	var room [4]dispatchable // a completion frees one slot: the calls it lets go fit here without an allocation
	next := p.drainLocked(room[:0])
	p.mu.Unlock()
	p.dispatchAll(next)
}

// dispatchable is a queued call and the worker picked for it.
type dispatchable struct {
	c *call
	w worker
}

// drainLocked takes from the queue the calls that workers now have room for, appending them to dst.
func (p *Pool) drainLocked(dst []dispatchable) []dispatchable {
	for p.queue.len() > 0 {
		n := p.queue.peek()
		if n.settled() {
			p.queue.pop()
			continue
		}
		w, ok := p.pickLocked(n)
		if !ok {
			break
		}
		p.queue.pop()
		dst = append(dst, dispatchable{n, w})
	}
	return dst
}

// dispatchAll dispatches what drainLocked took; the caller no longer holds p.mu.
func (p *Pool) dispatchAll(ds []dispatchable) {
	for _, d := range ds {
		p.dispatch(d.w, d.c)
	}
}

// failover sends a call whose worker was lost to another worker: the pool counts it as accepted all along, frees
// its slot on the lost worker and routes it afresh.
func (p *Pool) failover(c *call) {
	p.failovers.Add(1)
	if c.slot >= 0 {
		if p.direct {
			if p.counted {
				p.bal.Done(int(c.slot))
			}
		} else {
			p.mu.Lock()
			p.bal.Done(int(c.slot))
			p.mu.Unlock()
		}
		c.slot = -1
	}
	p.route(c)
}

// redispatch sends the queued calls that workers have room for: after a change of the rules (Resize of an
// on-demand pool).
func (p *Pool) redispatch() {
	p.mu.Lock()
	next := p.drainLocked(nil)
	p.mu.Unlock()
	p.dispatchAll(next)
}

// failQueuedIfNoWorkers fails the waiting calls of a pool that has lost its last worker, so nothing waits forever.
func (p *Pool) failQueuedIfNoWorkers() {
	p.mu.Lock()
	if p.bal.Len() > 0 || p.opts.OnDemand {
		p.mu.Unlock()
		return
	}
	var queued []*call
	for p.queue.len() > 0 {
		queued = append(queued, p.queue.pop())
	}
	p.mu.Unlock()
	for _, c := range queued {
		c.complete(nil, fmt.Errorf("%w: %s", ErrNoWorkers, p.name))
	}
}

// cancelled tells the worker running c that c was cancelled.
func (p *Pool) cancelled(c *call) { p.tr.cancel(c) }

// waiting tells the transport that a caller is about to wait for a call.
func (p *Pool) waiting() { p.tr.waiting() }
