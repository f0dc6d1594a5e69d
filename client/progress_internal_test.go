package client

import (
	"bytes"
	"context"
	"math"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/vbauerster/mpb/v8"

	"github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/internal/testutil"
)

// On an output that is not a terminal, progress is one line when a bar starts and one when it completes.
func TestShowProgressWritesLinesOffTerminal(t *testing.T) {
	var out testutil.SyncBuffer
	old := progressOutput
	progressOutput = &out
	defer func() { progressOutput = old }()

	ctx := context.Background()
	p, err := New(ctx, demo.ProgressWorkerKind, Options{MaxWorkers: 2, ShowProgress: true})
	if err != nil {
		t.Fatal(err)
	}
	futs := []*Future[[]int]{
		Call[[]int](p, "ProcessItems", []int{1, 2, 3}, time.Millisecond),
		Call[[]int](p, "ProcessItems", []int{4, 5}, time.Millisecond),
	}
	got, err := Gather(ctx, futs, ShowGatherProgress("Gathering"))
	if err != nil || len(got[0]) != 3 || len(got[1]) != 2 {
		t.Fatalf("Gather = %v, %v", got, err)
	}
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, re := range []string{
		`(?m)^Processing \[ProcessItems on \S+\]: started, 3 steps$`,
		`(?m)^Processing \[ProcessItems on \S+\]: done 3/3 in \S+, [0-9.]+ items/s$`,
		`(?m)^Processing \[ProcessItems on \S+\]: started, 2 steps$`,
		`(?m)^Processing \[ProcessItems on \S+\]: done 2/2 in \S+, [0-9.]+ items/s$`,
		`(?m)^Gathering: 2/2 done in \S+, [0-9.]+ items/s$`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("progress output lacks %s:\n%s", re, text)
		}
	}
	if bytes.ContainsRune([]byte(text), '\x1b') {
		t.Errorf("progress output off a terminal has escape codes:\n%q", text)
	}
}

// The rate is measured over the last rateWindow up to now, so it follows a change of pace and falls while a bar
// stalls; the time left is the steps to go at that rate.
func TestProgressRate(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	var r progressRate
	if got := r.rate(t0); got != 0 {
		t.Errorf("rate of a bar without events = %g, want 0", got)
	}
	r.observe(t0, 0)
	if got := r.rate(t0); got != 0 {
		t.Errorf("rate at the first event = %g, want 0", got)
	}
	// 10 steps a second for 8 s, an event every 100 ms.
	for i := int64(1); i <= 80; i++ {
		r.observe(t0.Add(time.Duration(i)*100*time.Millisecond), i)
	}
	t8 := t0.Add(8 * time.Second)
	if got := r.rate(t8); math.Abs(got-10) > 1e-9 {
		t.Errorf("rate after 8 s at 10/s = %g, want 10", got)
	}
	if n := len(r.recent); n > int(rateWindow/(100*time.Millisecond))+1 {
		t.Errorf("%d events kept for a %s window of events 100 ms apart", n, rateWindow)
	}
	if left, ok := timeLeft(80, 200, r.rate(t8)); !ok || left != 12*time.Second {
		t.Errorf("time left for 120 steps at 10/s = %s, %v; want 12s", left, ok)
	}
	// Then 30 steps a second for 5 s: the window sees only the new pace.
	for i := int64(1); i <= 50; i++ {
		r.observe(t8.Add(time.Duration(i)*100*time.Millisecond), 80+3*i)
	}
	t13 := t8.Add(5 * time.Second)
	if got := r.rate(t13); math.Abs(got-30) > 1e-9 {
		t.Errorf("rate after 5 s at 30/s = %g, want 30", got)
	}
	// A stall: 2.5 s without a step halves the rate over the window, and a whole window without one zeroes it.
	if got := r.rate(t13.Add(rateWindow / 2)); math.Abs(got-15) > 1e-9 {
		t.Errorf("rate %s into a stall = %g, want 15", rateWindow/2, got)
	}
	if got := r.rate(t13.Add(rateWindow)); got != 0 {
		t.Errorf("rate a window into a stall = %g, want 0", got)
	}
	if _, ok := timeLeft(230, 300, r.rate(t13.Add(rateWindow))); ok {
		t.Error("time left known at no pace")
	}
	// The whole run: 230 steps in 13 s.
	if got, want := r.average(), 230.0/13; math.Abs(got-want) > 1e-9 {
		t.Errorf("average = %g, want %g", got, want)
	}
	if got := r.elapsed(); got != 13*time.Second {
		t.Errorf("elapsed = %s, want 13s", got)
	}
	if _, ok := timeLeft(5, 0, 10); ok {
		t.Error("time left known without a total")
	}
	if left, ok := timeLeft(250, 200, 10); !ok || left != 0 {
		t.Errorf("time left past the total = %s, %v; want 0", left, ok)
	}
}

func TestProgressFormats(t *testing.T) {
	for rate, want := range map[float64]string{0: "0.00", 0.25: "0.25", 12.54: "12.5", 250.4: "250",
		12345: "12345"} {
		if got := formatRate(rate); got != want {
			t.Errorf("formatRate(%g) = %q, want %q", rate, got, want)
		}
	}
	for _, c := range []struct {
		d     time.Duration
		known bool
		want  string
	}{{0, false, "?"}, {300 * time.Millisecond, true, "<1s"}, {1499 * time.Millisecond, true, "1s"},
		{90 * time.Second, true, "1m30s"}} {
		if got := formatLeft(c.d, c.known); got != c.want {
			t.Errorf("formatLeft(%s, %v) = %q, want %q", c.d, c.known, got, c.want)
		}
	}
	if got := rateSuffix(0); got != "" {
		t.Errorf("rateSuffix(0) = %q, want none", got)
	}
	if got := rateSuffix(12.54); got != ", 12.5 items/s" {
		t.Errorf("rateSuffix(12.54) = %q, want \", 12.5 items/s\"", got)
	}
}

// Off a terminal a long bar gets a line with its rate and time left every lineInterval, no more often, and its done
// line gives the rate of the whole run.
func TestProgressLinesRateAndETA(t *testing.T) {
	var out bytes.Buffer
	r := &lineRenderer{out: &out, bars: make(map[string]*lineBar)}
	t0 := time.Unix(1_700_000_000, 0)
	ev := ProgressEvent{Method: "Crunch", WorkerID: "W1", Bar: "c1/1", Desc: "Crunching", Total: 200}
	// 10 steps a second, an event every 200 ms, for 12 s.
	for i := int64(0); i <= 60; i++ {
		ev.Seq, ev.N = uint64(i+1), 2*i
		r.updateAt(ev, t0.Add(time.Duration(i)*200*time.Millisecond))
	}
	ev.Seq, ev.N, ev.Done = 62, 200, true
	r.updateAt(ev, t0.Add(20*time.Second))
	want := "Crunching [Crunch on W1]: started, 200 steps\n" +
		"Crunching [Crunch on W1]: 50/200 (25%), 10.0 items/s, ETA 15s\n" +
		"Crunching [Crunch on W1]: 100/200 (50%), 10.0 items/s, ETA 10s\n" +
		"Crunching [Crunch on W1]: done 200/200 in 20s, 10.0 items/s\n"
	if got := out.String(); got != want {
		t.Errorf("lines:\n%s\nwant:\n%s", got, want)
	}
	if len(r.bars) != 0 {
		t.Errorf("%d bars still tracked after done", len(r.bars))
	}
}

// On a terminal each bar shows its rate and time left while it runs, and its rate and duration once done.
func TestProgressBarsRateAndETA(t *testing.T) {
	old := barOptions
	barOptions = append(slices.Clone(barOptions), mpb.WithAutoRefresh(),
		mpb.WithRefreshRate(20*time.Millisecond), mpb.WithWidth(120)) // a terminal's width, as the bars get there
	defer func() { barOptions = old }()
	var out testutil.SyncBuffer
	r := &barRenderer{out: &out, bars: make(map[string]*trackedBar)}
	ev := ProgressEvent{Method: "Crunch", WorkerID: "W1", Bar: "c1/1", Desc: "Crunching", Total: 40}
	for i := int64(0); i < 40; i += 2 {
		ev.Seq, ev.N = uint64(i+1), i
		r.update(ev)
		time.Sleep(25 * time.Millisecond)
	}
	ev.Seq, ev.N, ev.Done = 100, 40, true
	r.update(ev)
	r.close()
	text := out.String()
	for _, re := range []string{
		`Crunching\s+\d+/40 \[=*>-+\]\s+W1\s+\d+ %\s+[0-9.]+/s\s+ETA (<1s|\d+s)\n`, // a frame while it ran
		`Crunching\s+40/40 \[=+\]\s+W1\s+100 %\s+[0-9.]+/s\s+in \d+ms\n`,           // the last frame
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("bar output lacks %s:\n%q", re, text)
		}
	}
	// The last frame's rate is the whole run's: 40 steps over the time it shows.
	if m := regexp.MustCompile(`([0-9.]+)/s\s+in (\d+)ms\n$`).FindStringSubmatch(text); m != nil {
		rate, _ := strconv.ParseFloat(m[1], 64)
		ms, _ := strconv.ParseFloat(m[2], 64)
		if steps := rate * ms / 1000; math.Abs(steps-40) > 1 {
			t.Errorf("last frame: %s/s over %sms makes %.1f steps, want 40", m[1], m[2], steps)
		}
	}
}
