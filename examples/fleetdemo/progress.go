package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
)

// 6. Progress reported by methods running in child processes, drawn here; and a bar for a Gather.
func progress(ctx context.Context, d *runner) {
	var mu sync.Mutex
	final := map[string]client.ProgressEvent{}
	events := 0
	pool := d.newPool(ctx, demo.ProgressWorkerKind, client.Options{Mode: client.Process, Conn: d.nc, MaxWorkers: 4,
		ShowProgress: true,
		Progress: func(ev client.ProgressEvent) {
			mu.Lock()
			defer mu.Unlock()
			events++
			if ev.Done {
				final[ev.Bar] = ev
			}
		}})
	if pool == nil {
		return
	}
	// On a terminal the bars redraw in place. Elsewhere (CI, a log file) the client prints one line per completed
	// bar; tap stderr to check that.
	tap, err := tapStderr()
	if d.failed("tap stderr", err) {
		d.stop(pool, "ProgressWorker process pool")
		return
	}
	d.printf("4 batches of 10 items, 100 ms per item, in 4 worker processes (bars on stderr):")
	futs := make([]*client.Future[[]int], 4)
	for i := range futs {
		futs[i] = client.Call[[]int](pool, "ProcessItems", []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 100*time.Millisecond)
	}
	res, err := client.Gather(ctx, futs)
	d.stop(pool, "ProgressWorker process pool") // draws the bars' last state before we print
	d.checkBars(tap, "Processing", 4)
	if !d.failed("gather batches", err) {
		want := []int{0, 2, 4, 6, 8, 10, 12, 14, 16, 18}
		for i, r := range res {
			d.expect(slices.Equal(r, want), "batch %d = %v, want %v", i, r, want)
		}
	}
	mu.Lock()
	d.printf("received %d progress events; %d bars completed", events, len(final))
	d.expect(len(final) == 4, "%d bars completed, want 4", len(final))
	for _, ev := range final {
		d.expect(ev.N == 10 && ev.Total == 10 && ev.Desc == "Processing" && ev.WorkerID != "",
			"final event of bar %s: %+v", ev.Bar, ev)
	}
	mu.Unlock()

	slow := d.newPool(ctx, demo.SlowWorkerKind, client.Options{Mode: client.Thread, MaxWorkers: 5})
	if slow == nil {
		return
	}
	defer d.stop(slow, "SlowWorker thread pool")
	if tap, err = tapStderr(); d.failed("tap stderr", err) {
		return
	}
	d.printf("Gather of 50 calls of 100 ms on 5 thread workers, with its own bar (stderr):")
	sf := make([]*client.Future[demo.Identity], 50)
	for i := range sf {
		sf[i] = client.Call[demo.Identity](slow, "Process", 100*time.Millisecond)
	}
	var seen []int
	ids, err := client.Gather(ctx, sf, client.ShowGatherProgress("gather"),
		client.OnGatherProgress(func(done, total int) { seen = append(seen, done) }))
	d.checkBars(tap, "gather", 1)
	if !d.failed("gather with a bar", err) {
		d.printf("gathered %d results; progress callback saw %d updates, last %d/50", len(ids), len(seen), seen[len(seen)-1])
		d.expect(len(ids) == 50 && len(seen) > 0 && seen[len(seen)-1] == 50, "gather progress %v", seen)
	}
}

// checkBars stops tap and checks that at least n lines of what it saw name the bar desc. Without a tap (stderr is
// a terminal) there is nothing to check: the bars were drawn in place.
func (d *runner) checkBars(tap *stderrTap, desc string, n int) {
	if tap == nil {
		return
	}
	got := 0
	for line := range strings.Lines(tap.stop()) {
		if strings.Contains(line, desc) {
			got++
		}
	}
	d.printf("stderr is not a terminal: %d lines of %q bars written there", got, desc)
	d.expect(got >= n, "stderr is not a terminal and the client wrote %d lines of %q bars there, want at least %d "+
		"(one per completed bar, as client's progress renderer documents for non-terminal outputs)", got, desc, n)
}

// stderrTap copies what this process writes to file descriptor 2, where the client draws its bars, into a buffer
// on its way to the real stderr.
type stderrTap struct {
	// orig is the real stderr, duplicated. It is closed through this one *os.File only: a second File on the same
	// descriptor would close it again when collected, after the number was reused for, say, a NATS socket.
	orig *os.File
	w    *os.File // the pipe's write end, now also descriptor 2
	buf  bytes.Buffer
	done chan struct{}
}

// tapStderr starts a tap, or returns nil when stderr is a terminal (a pipe in between would stop the bars from
// redrawing in place).
func tapStderr() (*stderrTap, error) {
	if fi, err := os.Stderr.Stat(); err != nil || fi.Mode()&os.ModeCharDevice != 0 {
		return nil, nil
	}
	orig, err := syscall.Dup(2)
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		syscall.Close(orig)
		return nil, err
	}
	if err := syscall.Dup2(int(w.Fd()), 2); err != nil {
		syscall.Close(orig)
		r.Close()
		w.Close()
		return nil, err
	}
	t := &stderrTap{orig: os.NewFile(uintptr(orig), "stderr"), w: w, done: make(chan struct{})}
	go func() {
		defer close(t.done)
		defer r.Close()
		_, _ = io.Copy(io.MultiWriter(t.orig, &t.buf), r)
	}()
	return t, nil
}

// stop puts the real stderr back and returns what went through the tap.
func (t *stderrTap) stop() string {
	_ = syscall.Dup2(int(t.orig.Fd()), 2)
	t.w.Close() // with descriptor 2 restored, the pipe's last write end: the copy sees EOF
	<-t.done
	t.orig.Close()
	return t.buf.String()
}
