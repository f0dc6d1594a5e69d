package fleet_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/actor"
	"github.com/natsfleet/natsfleet/internal/testutil"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// Gated is a kind whose calls the tests control: Hold blocks until the test opens its gate, Mark records that it ran.
// Both report whether they ran inline, in the goroutine of the worker's call subscription. None takes a context.
type Gated struct {
	mu     sync.Mutex
	marked []string
}

func NewGated() *Gated { return &Gated{} }

var _ = fleet.Register("Gated", NewGated)

// gates are the gates Hold waits for, by name; a name with no gate is open.
var gates sync.Map

// newGate makes a closed gate named after the test and returns its name and the function that opens it. The test's
// end opens it too; call newGate after serve, so that it opens before the worker stops.
func newGate(t testing.TB) (string, func()) {
	name := t.Name()
	ch := make(chan struct{})
	if _, dup := gates.LoadOrStore(name, ch); dup {
		t.Fatalf("gate %s made twice", name)
	}
	var once sync.Once
	open := func() { once.Do(func() { close(ch) }) }
	t.Cleanup(func() {
		open()
		gates.Delete(name)
	})
	return name, open
}

// Hold waits until the gate named name opens.
func (g *Gated) Hold(name string) bool {
	if ch, ok := gates.Load(name); ok {
		<-ch.(chan struct{})
	}
	return ranInline()
}

// Mark records that the call marked id ran.
func (g *Gated) Mark(id string) bool {
	g.mu.Lock()
	g.marked = append(g.marked, id)
	g.mu.Unlock()
	return ranInline()
}

// Marked lists the marks in the order they ran.
func (g *Gated) Marked() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.marked)
}

// Ping answers "pong".
func (g *Gated) Ping() string { return "pong" }

// Spin keeps busy for us microseconds (a sleep this short can take a millisecond).
func (g *Gated) Spin(us int) bool {
	for start := time.Now(); time.Since(start) < time.Duration(us)*time.Microsecond; {
	}
	return ranInline()
}

// Blob is n bytes, and whether the call ran inline.
type Blob struct {
	Data   string
	Inline bool
}

// Blob returns n bytes.
func (g *Gated) Blob(n int) Blob { return Blob{Data: strings.Repeat("x", n), Inline: ranInline()} }

// ranInline reports whether the calling goroutine is the one nats.go delivers a subscription's messages on. The
// buffer holds the few frames of a method's stack, and is small enough that the method stays short (under the race
// detector too), as inline calls must be.
func ranInline() bool {
	buf := make([]byte, 8<<10)
	return bytes.Contains(buf[:runtime.Stack(buf, false)], []byte("(*Conn).waitForMsgs"))
}

func marked(t testing.TB, h *fleet.Hosted) []string {
	t.Helper()
	return h.Worker().Instance().Interface().(*Gated).Marked()
}

// publishCall sends a call without waiting for its reply, which goes to inbox.
func publishCall(t testing.TB, nc *nats.Conn, h *fleet.Hosted, inbox, id, method string, a ...any) {
	t.Helper()
	m := callMsg(subjects.Worker(h.ID()), method, "", args(t, a...))
	m.Reply = inbox
	m.Header.Set(wire.HeaderCallID, id)
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
}

// warmUp calls method until the worker takes it for a short method, so that its next call runs inline, and returns
// how many calls that took.
func warmUp(t testing.TB, nc *nats.Conn, h *fleet.Hosted, method string, a ...any) int {
	t.Helper()
	n := 0
	waitFor(t, 10*time.Second, method+" to be short", func() bool {
		if err := result(t, request(t, nc, callMsg(subjects.Worker(h.ID()), method, "", args(t, a...))), nil); err != nil {
			t.Fatalf("warm-up %s: %v", method, err)
		}
		n++
		return fleet.Short(h, method)
	})
	return n
}

// byID reads the replies by call ID; each result is a bool (did the call run inline).
func byID(t testing.TB, rs *replies) map[string]error {
	t.Helper()
	out := map[string]error{}
	for _, r := range rs.snapshot() {
		var inline bool
		out[r.Header.Get(wire.HeaderCallID)] = result(t, r, &inline)
	}
	return out
}

func TestServeInlineKeepsOrder(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	h := serve(t, nc, wire.WorkerSpec{Kind: "Gated"}, fleet.ServeOptions{})
	warm := warmUp(t, nc, h, "Mark", "warm")
	inbox, rs := collect(t, nc)
	const n = 200
	var want []string
	for range warm {
		want = append(want, "warm")
	}
	for i := range n {
		publishCall(t, nc, h, inbox, strconv.Itoa(i), "Mark", strconv.Itoa(i))
		want = append(want, strconv.Itoa(i))
	}
	waitFor(t, 10*time.Second, "200 replies", func() bool { return rs.count() == n })
	inline := 0
	for i, r := range rs.snapshot() {
		if id := r.Header.Get(wire.HeaderCallID); id != strconv.Itoa(i) {
			t.Fatalf("reply %d is call %s's: out of order", i, id)
		}
		var ran bool
		if err := result(t, r, &ran); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if i == 0 && !ran {
			t.Error("the first call, to an idle worker, did not run inline")
		}
		if ran {
			inline++
		}
	}
	if got := marked(t, h); !slices.Equal(got, want) {
		t.Errorf("calls ran in the order %v, want %v", got, want)
	}
	// On a quiet machine all run inline. A run slowed down by a busy machine makes Mark look long for a while, and
	// the calls behind it go to the worker's goroutine; that they keep their order is what this test is about.
	t.Logf("%d of %d calls ran inline", inline, n)
}

func TestServeControlCall(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	h := serve(t, nc, wire.WorkerSpec{Kind: "Gated"}, fleet.ServeOptions{})
	warmUp(t, nc, h, "Hold", "open")
	gate, open := newGate(t)
	inbox, rs := collect(t, nc)
	publishCall(t, nc, h, inbox, "hold", "Hold", gate)
	waitFor(t, 5*time.Second, "the held call to run", func() bool { return h.Worker().InFlight() == 1 })

	// The held call runs inline: the call subject waits for it, the control subject does not.
	tests := []struct {
		name, method, contentType string
		body                      []byte
		want                      string // the reply body
		wantErr                   error
	}{
		{name: "msgpack", method: "Ping", want: string(mustMarshal(t, codec.Msgpack, "pong"))},
		{name: "json", method: "Ping", contentType: codec.ContentTypeJSON, body: []byte(`[]`), want: `"pong"`},
		{name: "unknown method", method: "Explode", wantErr: fleet.ErrUnknownMethod},
		{name: "no method", wantErr: fleet.ErrMalformed},
	}
	for _, tt := range tests {
		m := callMsg(subjects.Control(h.ID()), tt.method, tt.contentType, tt.body)
		m.Header.Set(wire.HeaderControl, wire.ControlCall)
		m.Header.Set(wire.HeaderCallID, "urgent-"+tt.name)
		r := request(t, nc, m)
		if id := r.Header.Get(wire.HeaderCallID); id != "urgent-"+tt.name {
			t.Errorf("%s: reply call ID %q", tt.name, id)
		}
		if tt.wantErr != nil {
			if err := result(t, r, nil); !errors.Is(err, tt.wantErr) {
				t.Errorf("%s: error %v, want %v", tt.name, err, tt.wantErr)
			}
			continue
		}
		if st := r.Header.Get(wire.HeaderStatus); st != wire.StatusOK || string(r.Data) != tt.want {
			t.Errorf("%s: status %q body %q, want ok %q", tt.name, st, r.Data, tt.want)
		}
	}
	if n := rs.count(); n != 0 {
		t.Fatalf("%d replies before the held call's gate opened", n)
	}
	open()
	waitFor(t, 5*time.Second, "the held call's reply", func() bool { return rs.count() == 1 })
	var inline bool
	if err := result(t, rs.snapshot()[0], &inline); err != nil || !inline {
		t.Errorf("held call: inline %v, %v; want it run inline", inline, err)
	}
	if got := marked(t, h); len(got) != 0 {
		t.Errorf("marks %v", got)
	}
}

// A call of a method without a context that is cancelled before it starts never runs: whether it waits in the
// worker's queue (behind a call handed to the worker's goroutine) or in the subscription's buffer (behind a call
// running inline).
func TestServeCancelWaitingCallWithoutContext(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		inline bool // the held call runs inline, so the calls behind it wait in the subscription's buffer
	}{
		{"queued in the worker", false},
		{"buffered behind an inline call", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := testutil.StartServer(t, broker.EmbeddedOptions{})
			nc := testutil.Connect(t, s.ClientURL())
			h := serve(t, nc, wire.WorkerSpec{Kind: "Gated"}, fleet.ServeOptions{})
			calls := int64(3)
			if tt.inline {
				calls += int64(warmUp(t, nc, h, "Hold", "open"))
			}
			gate, open := newGate(t)
			inbox, rs := collect(t, nc)
			publishCall(t, nc, h, inbox, "hold", "Hold", gate)
			waitFor(t, 5*time.Second, "the held call to run", func() bool { return h.Worker().InFlight() == 1 })
			publishCall(t, nc, h, inbox, "cancelled", "Mark", "cancelled")
			publishCall(t, nc, h, inbox, "after", "Mark", "after")
			if !tt.inline {
				waitFor(t, 5*time.Second, "the calls to queue", func() bool { return h.Worker().InFlight() == 3 })
			}
			// The calls and the cancel travel on one connection in order, so the cancel finds the calls received:
			// queued in the worker, or in the subscription's buffer.
			cancelCall(t, nc, h.ID(), "cancelled")
			if !tt.inline {
				// A queued call is answered at once.
				waitFor(t, 5*time.Second, "the cancelled call's reply", func() bool { return rs.count() == 1 })
			} else {
				// A buffered one when it comes out. The control subject answers in order, so once a ping is answered
				// the worker has seen the cancel.
				control(t, nc, h.ID(), wire.ControlPing, nil)
				if n := rs.count(); n != 0 {
					t.Fatalf("%d replies while the held call runs", n)
				}
			}
			open()
			waitFor(t, 5*time.Second, "3 replies", func() bool { return rs.count() == 3 })
			got := byID(t, rs)
			for id, want := range map[string]error{"hold": nil, "cancelled": context.Canceled, "after": nil} {
				if !errors.Is(got[id], want) {
					t.Errorf("call %s: %v, want %v", id, got[id], want)
				}
			}
			if m := marked(t, h); !slices.Equal(m, []string{"after"}) {
				t.Errorf("marks %v, want [after]: the cancelled call ran", m)
			}
			if st := h.Worker().Stats(); st.Calls != calls || st.Errors != 1 || st.InFlight != 0 {
				t.Errorf("stats %+v, want %d calls, 1 error, none in flight", st, calls)
			}
		})
	}
}

// Stopping with calls in the subscription's buffer behind an inline call: an abort fails them unrun, and so does a
// stop whose deadline passes.
func TestServeStopWithBufferedCalls(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		abort   bool // a ControlStop with Fleet-Abort; otherwise Stop with a deadline
		wantErr error
	}{
		{"control stop abort", true, context.Canceled},
		{"stop deadline", false, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := testutil.StartServer(t, broker.EmbeddedOptions{})
			nc := testutil.Connect(t, s.ClientURL())
			h, err := fleet.Serve(nc, wire.WorkerSpec{Kind: "Gated"}, fleet.ServeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			warmUp(t, nc, h, "Hold", "open")
			gate, open := newGate(t)
			inbox, rs := collect(t, nc)
			publishCall(t, nc, h, inbox, "hold", "Hold", gate)
			waitFor(t, 5*time.Second, "the held call to run", func() bool { return h.Worker().InFlight() == 1 })
			publishCall(t, nc, h, inbox, "m1", "Mark", "m1")
			publishCall(t, nc, h, inbox, "m2", "Mark", "m2")
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			stopped := make(chan error, 1)
			if tt.abort {
				m := nats.NewMsg(subjects.Control(h.ID()))
				m.Header.Set(wire.HeaderControl, wire.ControlStop)
				m.Header.Set(wire.HeaderAbort, "1")
				go func() {
					r, err := nc.RequestMsg(m, 10*time.Second)
					if err == nil {
						err = result(t, r, nil)
					}
					stopped <- err
				}()
			} else {
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
					defer cancel()
					stopped <- h.Stop(ctx)
				}()
			}
			// The held call, which cannot see a cancel, is answered at once; its method runs on.
			waitFor(t, 5*time.Second, "the held call's reply", func() bool { return rs.count() == 1 })
			open()
			waitFor(t, 5*time.Second, "3 replies", func() bool { return rs.count() == 3 })
			for id, err := range byID(t, rs) {
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("call %s: %v, want %v", id, err, tt.wantErr)
				}
			}
			select {
			case err := <-stopped:
				if tt.abort && err != nil {
					t.Errorf("stop: %v", err)
				} else if !tt.abort && !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Stop: %v, want DeadlineExceeded", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("stop did not return")
			}
			if m := marked(t, h); len(m) != 0 {
				t.Errorf("marks %v: buffered calls ran after the stop", m)
			}
		})
	}
}

// worker starts a Gated worker outside any server.
func worker(t testing.TB, opts actor.Options) *actor.Worker {
	t.Helper()
	k, err := fleet.Lookup("Gated")
	if err != nil {
		t.Fatal(err)
	}
	w, err := fleet.StartWorker(k, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return w
}

// outcome is a Replier that keeps one task's outcome.
type outcome struct {
	done   chan struct{}
	result any
	err    error
}

func (o *outcome) Reply(_ *actor.Task, res any, err error) {
	o.result, o.err = res, err
	close(o.done)
}

func (o *outcome) wait(t testing.TB) (any, error) {
	t.Helper()
	select {
	case <-o.done:
		return o.result, o.err
	case <-time.After(5 * time.Second):
		t.Fatal("no reply in 5s")
		return nil, nil
	}
}

func gatedTask(t testing.TB, w *actor.Worker, method string, a ...any) (*actor.Task, *outcome) {
	t.Helper()
	k, err := fleet.Lookup(w.Kind())
	if err != nil {
		t.Fatal(err)
	}
	m, err := fleet.Method(k, method)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := m.Args(a)
	if err != nil {
		t.Fatal(err)
	}
	o := &outcome{done: make(chan struct{})}
	return &actor.Task{Method: m, Args: vals, CallID: fmt.Sprint(method, a), Reply: o}, o
}

func TestWorkerRunIfIdle(t *testing.T) {
	t.Parallel()
	w := worker(t, actor.Options{})
	gate, open := newGate(t)

	// Idle: the call runs in the calling goroutine and is answered before RunIfIdle returns.
	tk, o := gatedTask(t, w, "Mark", "a")
	if !w.RunIfIdle(tk) {
		t.Fatal("RunIfIdle on an idle worker did not run the call")
	}
	select {
	case <-o.done:
	default:
		t.Fatal("RunIfIdle returned before the call was answered")
	}

	// Busy: a submitted call holds the worker; RunIfIdle declines, and the call submitted instead runs after it.
	hold, ho := gatedTask(t, w, "Hold", gate)
	w.Submit(hold)
	waitFor(t, 5*time.Second, "the held call to run", func() bool { return w.InFlight() == 1 })
	tk, o = gatedTask(t, w, "Mark", "b")
	if w.RunIfIdle(tk) {
		t.Fatal("RunIfIdle ran a call beside a running one")
	}
	w.Submit(tk)
	open()
	if _, err := ho.wait(t); err != nil {
		t.Fatal(err)
	}
	if _, err := o.wait(t); err != nil {
		t.Fatal(err)
	}
	if got := w.Instance().Interface().(*Gated).Marked(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("marks %v, want [a b]", got)
	}
	// The worker is idle again as soon as the last call is answered.
	tk, _ = gatedTask(t, w, "Mark", "c")
	if !w.RunIfIdle(tk) {
		t.Error("RunIfIdle after the queue drained did not run the call")
	}

	conc := worker(t, actor.Options{Concurrent: true})
	if tk, _ := gatedTask(t, conc, "Mark", "x"); conc.RunIfIdle(tk) {
		t.Error("a concurrent worker ran a call inline")
	}
}

// Stop waits for a call running inline; when its context ends first, the call fails and Stop returns.
func TestWorkerStopWaitsForInlineCall(t *testing.T) {
	t.Parallel()
	w := worker(t, actor.Options{})
	gate, open := newGate(t)
	tk, o := gatedTask(t, w, "Hold", gate)
	ran := make(chan bool)
	go func() { ran <- w.RunIfIdle(tk) }()
	waitFor(t, 5*time.Second, "the call to run", func() bool { return w.InFlight() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := w.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop with a call running inline: %v, want DeadlineExceeded", err)
	}
	if _, err := o.wait(t); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("inline call: %v, want an error wrapping DeadlineExceeded", err)
	}
	if tk, _ := gatedTask(t, w, "Mark", "late"); w.RunIfIdle(tk) {
		t.Error("RunIfIdle ran a call on a stopped worker")
	}
	open()
	if !<-ran {
		t.Error("RunIfIdle did not report the call it ran")
	}
}
