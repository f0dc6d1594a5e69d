package client

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/natsfleet/natsfleet/internal/wire"
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

func progressEvent(c *call, worker string, ev wire.Progress) ProgressEvent {
	return ProgressEvent{Method: c.method, CallID: c.callID(), WorkerID: worker, Bar: ev.Bar, Seq: ev.Seq,
		Desc: ev.Desc, N: ev.N, Total: ev.Total, Done: ev.Done}
}

// progressOutput is where ShowProgress draws; tests redirect it.
var progressOutput io.Writer = os.Stderr

// progressView shows progress events: bars redrawn in place on a terminal, lines elsewhere.
type progressView interface {
	update(ev ProgressEvent)
	close()
}

// isTerminal reports whether w is a terminal, where bars can redraw in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// newProgressSink combines the pool's progress consumers; nil when nobody listens, so calls skip reporting. The view
// it returns (nil without ShowProgress) must be closed when the pool stops.
func newProgressSink(opts Options) (func(ProgressEvent), progressView) {
	var r progressView
	if opts.ShowProgress {
		if isTerminal(progressOutput) {
			r = &barRenderer{out: progressOutput, bars: make(map[string]*trackedBar)}
		} else {
			r = &lineRenderer{out: progressOutput, started: make(map[string]time.Time)}
		}
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

// barRenderer draws one terminal bar per running bar of the pool's calls, several at once, redrawn in place.
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

// lineRenderer writes one line when a bar starts and one when it completes: what a log file or CI can show cleanly,
// where redrawing in place would leave escape codes.
type lineRenderer struct {
	out     io.Writer
	mu      sync.Mutex
	started map[string]time.Time
}

func (r *lineRenderer) update(ev ProgressEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	name := ev.Desc
	if name == "" {
		name = ev.Method
	}
	start, seen := r.started[ev.Bar]
	if !seen {
		start = time.Now()
		r.started[ev.Bar] = start
		fmt.Fprintf(r.out, "%s [%s on %s]: started, %s\n", name, ev.Method, ev.WorkerID, steps(ev.Total))
	}
	if ev.Done {
		delete(r.started, ev.Bar)
		fmt.Fprintf(r.out, "%s [%s on %s]: done %d/%d in %s\n", name, ev.Method, ev.WorkerID, ev.N, ev.Total,
			time.Since(start).Round(time.Millisecond))
	}
}

func steps(total int64) string {
	if total <= 0 {
		return "unknown steps"
	}
	return fmt.Sprintf("%d steps", total)
}

func (r *lineRenderer) close() {}

// gatherBar is the bar ShowGatherProgress draws for Gather's own completion: a terminal bar, or one line at the end.
type gatherBar struct {
	p     *mpb.Progress
	bar   *mpb.Bar
	desc  string
	n     int
	total int
	start time.Time
}

func newGatherBar(desc string, total int) *gatherBar {
	g := &gatherBar{desc: desc, total: total, start: time.Now()}
	if isTerminal(progressOutput) {
		g.p = mpb.New(mpb.WithOutput(progressOutput), mpb.WithWidth(40))
		g.bar = g.p.AddBar(int64(total), mpb.PrependDecorators(decor.Name(desc+" "), decor.CountersNoUnit("%d/%d")),
			mpb.AppendDecorators(decor.Percentage()))
	}
	return g
}

func (g *gatherBar) set(n int) {
	g.n = n
	if g.bar != nil {
		g.bar.SetCurrent(int64(n))
	}
}

func (g *gatherBar) close() {
	if g.bar == nil {
		fmt.Fprintf(progressOutput, "%s: %d/%d done in %s\n", g.desc, g.n, g.total, time.Since(g.start).Round(time.Millisecond))
		return
	}
	if !g.bar.Completed() {
		g.bar.Abort(false)
	}
	g.p.Wait()
}
