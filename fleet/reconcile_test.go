package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/testutil"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// inbox collects the messages of a wildcard subject.
type inbox struct {
	mu   sync.Mutex
	msgs map[string][]*nats.Msg // by subject
}

func collectAll(t *testing.T, nc *nats.Conn, subject string) *inbox {
	t.Helper()
	in := &inbox{msgs: make(map[string][]*nats.Msg)}
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		in.mu.Lock()
		in.msgs[m.Subject] = append(in.msgs[m.Subject], m)
		in.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return in
}

func (in *inbox) of(subject string) []*nats.Msg {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]*nats.Msg(nil), in.msgs[subject]...)
}

// sendCall publishes a call with a chosen ID and reply subject, without waiting.
func sendCall(t *testing.T, nc *nats.Conn, worker, id, reply, method string, body []byte, resend bool) {
	t.Helper()
	m := callMsg(subjects.Worker(worker), method, "", body)
	m.Reply = reply
	m.Header.Set(wire.HeaderCallID, id)
	if resend {
		m.Header.Set(wire.HeaderResend, "1")
	}
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
}

func reconcile(t *testing.T, nc *nats.Conn, worker string, ids ...string) []wire.CallState {
	t.Helper()
	m := nats.NewMsg(subjects.Control(worker))
	m.Header.Set(wire.HeaderControl, wire.ControlReconcile)
	var err error
	if m.Data, err = codec.Msgpack.Marshal(ids); err != nil {
		t.Fatal(err)
	}
	var states []wire.CallState
	if err := result(t, request(t, nc, m), &states); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	return states
}

// A worker tells a caller that lost track of its calls which it holds, which it ran (sending their outcomes again),
// which it never received, and which it may have run but forgot; a resent copy of a call it has does not run again.
func TestReconcile(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, srv.ClientURL())
	h := serve(t, nc, wire.WorkerSpec{Kind: "Kit"}, fleet.ServeOptions{})
	replies := collectAll(t, nc, "caller.>")

	// A call whose reply nobody heard: the worker ran it, its reply went to a subject with no subscriber. A call
	// that is still running: Block runs in the worker's goroutine (its first call is never run inline), so the
	// subscription goes on reading.
	sendCall(t, nc, h.ID(), "cA-1", "caller.1", "Mark", args(t, time.Duration(0)), false)
	sendCall(t, nc, h.ID(), "cA-3", "caller.3", "Block", nil, false)
	waitFor(t, 5*time.Second, "the first call to be answered", func() bool { return h.Stats().Calls == 1 })
	waitFor(t, 5*time.Second, "the second call to run", func() bool { return h.Stats().InFlight == 1 })

	got := reconcile(t, nc, h.ID(), "cA-1", "cA-2", "cA-3", "other-5")
	want := []wire.CallState{wire.CallDone, wire.CallUnknown, wire.CallPending, wire.CallUnknown}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("states %v, want %v", got, want)
	}
	// The outcome of cA-1 came twice: as its reply and as the reconcile sent it again.
	testutil.Eventually(t, 5*time.Second, func() error {
		if n := len(replies.of("caller.1")); n != 2 {
			return fmt.Errorf("%d replies to cA-1, want its reply and the copy reconcile sent", n)
		}
		return nil
	})
	for _, r := range replies.of("caller.1") {
		var id string
		if err := result(t, r, &id); err != nil || id != "cA-1" || r.Header.Get(wire.HeaderCallID) != "cA-1" {
			t.Fatalf("reply to cA-1: %q, %v", id, err)
		}
	}

	// A resend of a call the worker holds does not run it a second time; one of a call it never received runs
	// (behind the running one: calls to one worker run one at a time); one of a call it ran sends the kept outcome
	// again instead of running it.
	sendCall(t, nc, h.ID(), "cA-3", "caller.3", "Block", nil, true)
	sendCall(t, nc, h.ID(), "cA-2", "caller.2", "Mark", args(t, time.Duration(0)), true)
	cancelCall(t, nc, h.ID(), "cA-3")
	testutil.Eventually(t, 5*time.Second, func() error {
		if n := len(replies.of("caller.2")); n != 1 {
			return fmt.Errorf("%d replies to the resent call, want 1", n)
		}
		return nil
	})
	sendCall(t, nc, h.ID(), "cA-2", "caller.2", "Mark", args(t, time.Duration(0)), true)
	testutil.Eventually(t, 5*time.Second, func() error {
		if n := len(replies.of("caller.2")); n != 2 {
			return fmt.Errorf("%d replies to the call resent after it ran, want 2", n)
		}
		return nil
	})
	for _, r := range replies.of("caller.2") {
		var id string
		if err := result(t, r, &id); err != nil || id != "cA-2" {
			t.Fatalf("resent call: %q, %v", id, err)
		}
	}
	if st := h.Stats(); st.Calls != 3 || st.InFlight != 0 {
		t.Fatalf("worker ran %d calls with %d in flight; want 3 (cA-1, cA-3 cancelled, cA-2) and 0: a resend ran "+
			"again", st.Calls, st.InFlight)
	}
	// The resend of cA-3 came in while it ran (dropped) or after its cancel (its outcome sent again): either way one
	// outcome, once or twice, never a second run.
	r3 := replies.of("caller.3")
	if len(r3) < 1 || len(r3) > 2 {
		t.Fatalf("%d replies to the call resent while it ran, want its cancel once or twice", len(r3))
	}
	for _, r := range r3 {
		if err := result(t, r, nil); !errors.Is(err, context.Canceled) {
			t.Fatalf("reply to the cancelled call: %v, want context.Canceled", err)
		}
	}
}

// Once a worker has dropped the outcomes of a caller's calls, it cannot tell a dropped one from one it never
// received among the lower numbers, and says it may have run them; higher numbers are never-received calls.
func TestReconcileExpired(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, srv.ClientURL())
	h := serve(t, nc, wire.WorkerSpec{Kind: "Kit"}, fleet.ServeOptions{})
	const n = 1100 // more than a worker keeps
	for i := 1; i <= n; i++ {
		sendCall(t, nc, h.ID(), "cE-"+strconv.FormatUint(uint64(i), 36), "nowhere."+strconv.Itoa(i), "Nothing", nil,
			false)
	}
	waitFor(t, 10*time.Second, "the calls to be answered", func() bool { return h.Stats().Calls == n })
	got := reconcile(t, nc, h.ID(), "cE-1", "cE-"+strconv.FormatUint(n, 36), "cE-"+strconv.FormatUint(n+50, 36))
	want := []wire.CallState{wire.CallExpired, wire.CallDone, wire.CallUnknown}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("states %v, want %v", got, want)
	}
}
