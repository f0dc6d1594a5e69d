package client

import (
	"io"
	"os"
	"sync"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/natsfleet/natsfleet/codec"
)

// ProgressEvent is one update of a progress bar a method reported with fleet.Progress. Events of one bar arrive in
// order; a worker sends at most one every fleet.ProgressInterval, and always the last.
type ProgressEvent struct {
	Method   string // the call's method
	CallID   string // the call
	WorkerID string // the worker running it
	Bar      string // the bar, unique across calls
	Seq      uint64 // the bar's event number, increasing
	Desc     string
	N, Total int64 // Total 0: unknown
	Done     bool
}

func progressEvent(c *call, ev codec.Progress) ProgressEvent {
	return ProgressEvent{Method: c.method, CallID: c.CallID, WorkerID: c.worker, Bar: ev.Bar, Seq: ev.Seq,
		Desc: ev.Desc, N: ev.N, Total: ev.Total, Done: ev.Done}
}

// progressOutput is where ShowProgress draws; tests redirect it.
var progressOutput io.Writer = os.Stderr

// newProgressSink combines the pool's progress consumers; nil when nobody listens, so calls skip reporting. The
// renderer it returns (nil without ShowProgress) must be closed when the pool stops.
func newProgressSink(opts Options) (func(ProgressEvent), *barRenderer) {
	var r *barRenderer
	if opts.ShowProgress {
		r = &barRenderer{out: progressOutput, bars: make(map[string]*trackedBar)}
	}
	switch {
	case r != nil && opts.Progress != nil:
		cb := opts.Progress
		return func(ev ProgressEvent) { r.update(ev); cb(ev) }, r
	case r != nil:
		return r.update, r
	}
	return opts.Progress, nil
}

// barRenderer draws one terminal bar per running bar of the pool's calls, several at once. On a terminal the bars
// redraw in place; on other outputs (a log file, CI) each bar prints one line when it completes.
type barRenderer struct {
	out  io.Writer
	mu   sync.Mutex
	p    *mpb.Progress // started at the first event, so pools that report nothing start no goroutines
	bars map[string]*trackedBar
}

type trackedBar struct {
	bar *mpb.Bar
	seq uint64
}

func (r *barRenderer) update(ev ProgressEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.p == nil {
		r.p = mpb.New(mpb.WithOutput(r.out), mpb.WithWidth(40))
	}
	tb := r.bars[ev.Bar]
	if tb == nil {
		name := ev.Desc
		if name == "" {
			name = ev.Method
		}
		tb = &trackedBar{bar: r.p.AddBar(ev.Total,
			mpb.PrependDecorators(decor.Name(name+" ", decor.WCSyncSpaceR), decor.CountersNoUnit("%d/%d")),
			mpb.AppendDecorators(decor.Name(" "+ev.WorkerID), decor.Percentage(decor.WCSyncSpace)))}
		r.bars[ev.Bar] = tb
	}
	if ev.Seq != 0 && ev.Seq <= tb.seq {
		return // stale
	}
	tb.seq = ev.Seq
	if ev.Total > 0 {
		tb.bar.SetTotal(ev.Total, false)
	}
	tb.bar.SetCurrent(ev.N)
	if ev.Done {
		tb.bar.SetTotal(ev.N, true)
		delete(r.bars, ev.Bar)
	}
}

// close finishes drawing; bars of calls that never completed are dropped.
func (r *barRenderer) close() {
	if r == nil {
		return
	}
	r.mu.Lock()
	p := r.p
	for id, tb := range r.bars {
		tb.bar.Abort(false)
		delete(r.bars, id)
	}
	r.p = nil
	r.mu.Unlock()
	if p != nil {
		p.Wait()
	}
}

// gatherBar is the bar ShowGatherProgress draws for Gather's own completion.
type gatherBar struct {
	p   *mpb.Progress
	bar *mpb.Bar
}

func newGatherBar(desc string, total int) *gatherBar {
	p := mpb.New(mpb.WithOutput(progressOutput), mpb.WithWidth(40))
	b := p.AddBar(int64(total), mpb.PrependDecorators(decor.Name(desc+" "), decor.CountersNoUnit("%d/%d")),
		mpb.AppendDecorators(decor.Percentage()))
	return &gatherBar{p: p, bar: b}
}

func (g *gatherBar) set(n int) { g.bar.SetCurrent(int64(n)) }

func (g *gatherBar) close() {
	if !g.bar.Completed() {
		g.bar.Abort(false)
	}
	g.p.Wait()
}
