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

// barOptions configure every terminal bar's container; tests add mpb.WithAutoRefresh to draw into a buffer.
var barOptions = []mpb.ContainerOption{mpb.WithWidth(40)}

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
			r = &lineRenderer{out: progressOutput, bars: make(map[string]*lineBar)}
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
	pacedBar
	seq uint64
}

// pacedBar is a terminal bar with its rate and time left. The decorators read its pace as mpb draws, beside the
// updates: it has a lock of its own, never held while calling mpb, whose bar goroutine runs the decorators.
type pacedBar struct {
	bar  *mpb.Bar
	mu   sync.Mutex
	pace progressRate
	done bool
}

// addBar adds a bar of total steps named name to p, followed by the after decorators, its rate and its time left.
func (pb *pacedBar) addBar(p *mpb.Progress, total int64, name string, after ...decor.Decorator) {
	after = append(after,
		decor.Any(func(decor.Statistics) string { return pb.rateText(time.Now()) }, decor.WCSyncSpace),
		decor.Any(func(s decor.Statistics) string { return pb.leftText(time.Now(), s) }, decor.WCSyncSpace))
	pb.bar = p.AddBar(total, mpb.PrependDecorators(decor.Name(name+" ", decor.WCSyncSpaceR),
		decor.CountersNoUnit("%d/%d")), mpb.AppendDecorators(after...))
}

// observe records that the bar stood at n at now, done or not.
func (pb *pacedBar) observe(now time.Time, n int64, done bool) {
	pb.mu.Lock()
	pb.pace.observe(now, n)
	pb.done = done
	pb.mu.Unlock()
}

// rateText is the bar's rate: over the last rateWindow while it runs, over its whole run once done.
func (pb *pacedBar) rateText(now time.Time) string {
	pb.mu.Lock()
	defer pb.mu.Unlock()
	if pb.done {
		return formatRate(pb.pace.average()) + "/s"
	}
	return formatRate(pb.pace.rate(now)) + "/s"
}

// leftText is the time left at the current rate while the bar runs, and the time it took once done.
func (pb *pacedBar) leftText(now time.Time, s decor.Statistics) string {
	pb.mu.Lock()
	defer pb.mu.Unlock()
	if pb.done {
		return "in " + pb.pace.elapsed().Round(time.Millisecond).String()
	}
	left, known := timeLeft(s.Current, s.Total, pb.pace.rate(now))
	return "ETA " + formatLeft(left, known)
}

func (r *barRenderer) update(ev ProgressEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.p == nil {
		r.p = mpb.New(append([]mpb.ContainerOption{mpb.WithOutput(r.out)}, barOptions...)...)
	}
	tb := r.bars[ev.Bar]
	if tb == nil {
		name := ev.Desc
		if name == "" {
			name = ev.Method
		}
		tb = new(trackedBar)
		tb.addBar(r.p, ev.Total, name, decor.Name(" "+ev.WorkerID), decor.Percentage(decor.WCSyncSpace))
		r.bars[ev.Bar] = tb
	}
	if ev.Seq != 0 && ev.Seq <= tb.seq {
		return // stale
	}
	tb.seq = ev.Seq
	tb.observe(time.Now(), ev.N, ev.Done)
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

// lineRenderer writes one line when a bar starts, one when it completes with its rate, and in between, for a bar
// that runs long, a line every lineInterval with its rate and time left: what a log file or CI can show cleanly, where
// redrawing in place would leave escape codes.
type lineRenderer struct {
	out  io.Writer
	mu   sync.Mutex
	bars map[string]*lineBar
}

// lineInterval is the least time between two lines of one running bar.
const lineInterval = 5 * time.Second

type lineBar struct {
	pace     progressRate
	lastLine time.Time
}

func (r *lineRenderer) update(ev ProgressEvent) { r.updateAt(ev, time.Now()) }

// updateAt shows ev, which arrived at now.
func (r *lineRenderer) updateAt(ev ProgressEvent, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	name := ev.Desc
	if name == "" {
		name = ev.Method
	}
	b := r.bars[ev.Bar]
	if b == nil {
		b = &lineBar{lastLine: now}
		r.bars[ev.Bar] = b
		fmt.Fprintf(r.out, "%s [%s on %s]: started, %s\n", name, ev.Method, ev.WorkerID, steps(ev.Total))
	}
	b.pace.observe(now, ev.N)
	switch {
	case ev.Done:
		delete(r.bars, ev.Bar)
		fmt.Fprintf(r.out, "%s [%s on %s]: done %d/%d in %s%s\n", name, ev.Method, ev.WorkerID, ev.N, ev.Total,
			b.pace.elapsed().Round(time.Millisecond), rateSuffix(b.pace.average()))
	case now.Sub(b.lastLine) >= lineInterval:
		b.lastLine = now
		rate := b.pace.rate(now)
		left, known := timeLeft(ev.N, ev.Total, rate)
		fmt.Fprintf(r.out, "%s [%s on %s]: %s, %s items/s, ETA %s\n", name, ev.Method, ev.WorkerID,
			position(ev.N, ev.Total), formatRate(rate), formatLeft(left, known))
	}
}

// position is n of total, with the share done when the total is known.
func position(n, total int64) string {
	if total <= 0 {
		return fmt.Sprintf("%d", n)
	}
	return fmt.Sprintf("%d/%d (%d%%)", n, total, n*100/total)
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
	paced *pacedBar // nil off a terminal
	pace  progressRate
	desc  string
	n     int
	total int
}

func newGatherBar(desc string, total int) *gatherBar {
	g := &gatherBar{desc: desc, total: total}
	now := time.Now()
	if isTerminal(progressOutput) {
		g.p = mpb.New(append([]mpb.ContainerOption{mpb.WithOutput(progressOutput)}, barOptions...)...)
		g.paced = new(pacedBar)
		g.paced.addBar(g.p, int64(total), desc, decor.Percentage(decor.WCSyncSpace))
		g.paced.observe(now, 0, false)
	} else {
		g.pace.observe(now, 0)
	}
	return g
}

func (g *gatherBar) set(n int) {
	g.n = n
	now := time.Now()
	if g.paced == nil {
		g.pace.observe(now, int64(n))
		return
	}
	g.paced.observe(now, int64(n), n == g.total)
	g.paced.bar.SetCurrent(int64(n))
}

func (g *gatherBar) close() {
	if g.paced == nil {
		g.pace.observe(time.Now(), int64(g.n))
		fmt.Fprintf(progressOutput, "%s: %d/%d done in %s%s\n", g.desc, g.n, g.total,
			g.pace.elapsed().Round(time.Millisecond), rateSuffix(g.pace.average()))
		return
	}
	if !g.paced.bar.Completed() {
		g.paced.bar.Abort(false)
	}
	g.p.Wait()
}
