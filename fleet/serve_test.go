package fleet_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/testutil"
	"github.com/natsfleet/natsfleet/internal/wire"
	"github.com/natsfleet/natsfleet/limits"
)

var subjects = broker.Subjects{Prefix: broker.DefaultPrefix}

func TestServeCalls(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	h := serve(t, nc, wire.WorkerSpec{Kind: "DataProcessor", ID: "dp1", Args: args(t, 10)}, fleet.ServeOptions{})
	subj := subjects.Worker(h.ID())

	tests := []struct {
		name, contentType string
		body              []byte
		callID, trace     string
		wantType          string
		want              string // the reply body, as its codec encodes 420
	}{
		{name: "msgpack", body: args(t, 42), callID: "c1", wantType: codec.ContentTypeMsgpack,
			want: string(mustMarshal(t, codec.Msgpack, 420))},
		{name: "msgpack content type named", contentType: "application/msgpack", body: args(t, 42), callID: "c2",
			wantType: codec.ContentTypeMsgpack, want: string(mustMarshal(t, codec.Msgpack, 420))},
		{name: "json", contentType: "application/json", body: []byte(`[42]`), callID: "c3",
			wantType: codec.ContentTypeJSON, want: "420"},
		{name: "json bare argument", contentType: "application/json; charset=utf-8", body: []byte(`42`),
			wantType: codec.ContentTypeJSON, want: "420"},
		{name: "traceparent echoed", body: args(t, 42), callID: "c5",
			trace: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", wantType: codec.ContentTypeMsgpack,
			want: string(mustMarshal(t, codec.Msgpack, 420))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := callMsg(subj, "Process", tt.contentType, tt.body)
			if tt.callID != "" {
				m.Header.Set(wire.HeaderCallID, tt.callID)
			}
			if tt.trace != "" {
				m.Header.Set(wire.HeaderTraceparent, tt.trace)
			}
			r := request(t, nc, m)
			if got := r.Header.Get(wire.HeaderStatus); got != wire.StatusOK {
				t.Fatalf("status %q, body %q", got, r.Data)
			}
			if got := r.Header.Get(wire.HeaderContentType); got != tt.wantType {
				t.Errorf("content type %q, want %q", got, tt.wantType)
			}
			if string(r.Data) != tt.want {
				t.Errorf("body %q, want %q", r.Data, tt.want)
			}
			id := r.Header.Get(wire.HeaderCallID)
			switch {
			case tt.callID != "" && id != tt.callID:
				t.Errorf("call ID %q, want %q", id, tt.callID)
			case tt.callID == "" && len(id) < 10:
				t.Errorf("generated call ID %q, want a nuid", id)
			}
			if got := r.Header.Get(wire.HeaderTraceparent); got != tt.trace {
				t.Errorf("traceparent %q, want %q", got, tt.trace)
			}
		})
	}

	var processed int
	if err := result(t, request(t, nc, callMsg(subj, "Processed", "", nil)), &processed); err != nil {
		t.Fatal(err)
	}
	if processed != len(tests) {
		t.Errorf("Processed() = %d, want %d", processed, len(tests))
	}
	// A method without a value result replies nil.
	r := request(t, nc, callMsg(subj, "Processed", codec.ContentTypeJSON, []byte(`[]`)))
	if string(r.Data) != fmt.Sprint(len(tests)) {
		t.Errorf("JSON Processed() body %q", r.Data)
	}
}

func mustMarshal(t testing.TB, c codec.Codec, v any) []byte {
	t.Helper()
	b, err := c.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestServeNilResult(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	h := serve(t, nc, wire.WorkerSpec{Kind: "Kit"}, fleet.ServeOptions{})
	for _, tt := range []struct {
		contentType, want string
	}{
		{"", "\xc0"}, // msgpack nil
		{codec.ContentTypeJSON, "null"},
	} {
		r := request(t, nc, callMsg(subjects.Worker(h.ID()), "Nothing", tt.contentType, nil))
		if st := r.Header.Get(wire.HeaderStatus); st != wire.StatusOK || string(r.Data) != tt.want {
			t.Errorf("%q: status %q body %q, want ok %q", tt.contentType, st, r.Data, tt.want)
		}
	}
}

func TestServeBadInput(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	h := serve(t, nc, wire.WorkerSpec{Kind: "DataProcessor", Args: args(t, 10)}, fleet.ServeOptions{MaxCallBytes: 1024})
	subj := subjects.Worker(h.ID())

	tests := []struct {
		name        string
		msg         *nats.Msg
		want        error
		wantMessage string
	}{
		{"unknown method", callMsg(subj, "Explode", "", args(t, 1)), fleet.ErrUnknownMethod, "DataProcessor.Explode"},
		{"wrong type", callMsg(subj, "Process", "", args(t, "forty-two")), fleet.ErrBadArguments, "argument 0"},
		{"wrong count", callMsg(subj, "Process", "", args(t, 1, 2)), fleet.ErrBadArguments, "got 2 arguments"},
		{"json wrong type", callMsg(subj, "Process", codec.ContentTypeJSON, []byte(`["x"]`)), fleet.ErrBadArguments,
			"argument 0"},
		{"malformed msgpack", callMsg(subj, "Process", "", []byte{0x91, 0xc1}), fleet.ErrMalformed, "msgpack"},
		{"truncated msgpack", callMsg(subj, "Process", "", []byte{0xdd, 0xff, 0xff, 0xff, 0xff}), fleet.ErrMalformed,
			"msgpack"},
		{"malformed json", callMsg(subj, "Process", codec.ContentTypeJSON, []byte(`[42`)), fleet.ErrMalformed, "json"},
		{"oversized", callMsg(subj, "Process", "", make([]byte, 2048)), fleet.ErrPayloadTooLarge, "2048 bytes"},
		{"no method header", callMsg(subj, "", "", args(t, 1)), fleet.ErrMalformed, wire.HeaderMethod},
		{"unsupported content type", callMsg(subj, "Process", "text/plain", []byte("42")), fleet.ErrMalformed,
			"text/plain"},
		{"bad deadline", func() *nats.Msg {
			m := callMsg(subj, "Process", "", args(t, 1))
			m.Header.Set(wire.HeaderDeadline, "tomorrow")
			return m
		}(), fleet.ErrMalformed, "tomorrow"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.msg.Header.Set(wire.HeaderCallID, "bad-"+strings.ReplaceAll(tt.name, " ", "-"))
			r := request(t, nc, tt.msg)
			if got := r.Header.Get(wire.HeaderCallID); got != tt.msg.Header.Get(wire.HeaderCallID) {
				t.Errorf("call ID %q", got)
			}
			err := result(t, r, nil)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v (%T), want one matching %v", err, err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.wantMessage) {
				t.Errorf("error %q does not mention %q", err, tt.wantMessage)
			}
			if got := process(t, nc, subj, 42); got != 420 {
				t.Errorf("after the bad call Process(42) = %d, want 420", got)
			}
		})
	}
}

func TestServeResultTooLarge(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{MaxPayload: 4096})
	nc := testutil.Connect(t, s.ClientURL())
	h := serve(t, nc, wire.WorkerSpec{Kind: "Kit"}, fleet.ServeOptions{})
	subj := subjects.Worker(h.ID())
	var small string
	if err := result(t, request(t, nc, callMsg(subj, "Repeat", "", args(t, 100))), &small); err != nil ||
		len(small) != 100 {
		t.Fatalf("Repeat(100) = %d bytes, %v", len(small), err)
	}
	err := result(t, request(t, nc, callMsg(subj, "Repeat", "", args(t, 5000))), nil)
	if !errors.Is(err, fleet.ErrPayloadTooLarge) || !strings.Contains(err.Error(), "4096") {
		t.Fatalf("Repeat(5000) error %v, want ErrPayloadTooLarge naming the 4096 limit", err)
	}
}

func TestServePanicAndErrors(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	h := serve(t, nc, wire.WorkerSpec{Kind: "RiskyWorker"}, fleet.ServeOptions{})
	subj := subjects.Worker(h.ID())

	err := result(t, request(t, nc, callMsg(subj, "RiskyOperation", "", args(t, -13))), nil)
	var re *fleet.RemoteError
	if !errors.As(err, &re) {
		t.Fatalf("panic gave %v (%T), want *fleet.RemoteError", err, err)
	}
	if re.Message != "fleet: method panicked: demo: unlucky value" || re.Type != "*fleet.PanicError" {
		t.Errorf("panic error %q of type %q", re.Message, re.Type)
	}
	if !strings.Contains(re.Stack, "RiskyOperation") {
		t.Errorf("panic stack does not show the method:\n%s", re.Stack)
	}

	err = result(t, request(t, nc, callMsg(subj, "RiskyOperation", "", args(t, -1))), nil)
	if !errors.Is(err, demo.ErrNegative) || err.Error() != "demo: negative value not allowed: -1" {
		t.Errorf("RiskyOperation(-1) error %v, want demo.ErrNegative", err)
	}
	var out int
	if err := result(t, request(t, nc, callMsg(subj, "RiskyOperation", "", args(t, 21))), &out); err != nil ||
		out != 42 {
		t.Errorf("after the panic RiskyOperation(21) = %d, %v; want 42", out, err)
	}
	if st := h.Worker().Stats(); st.Calls != 3 || st.Errors != 2 {
		t.Errorf("stats %+v, want 3 calls, 2 errors", st)
	}
}

// replies collects the replies on one inbox, in arrival order.
type replies struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func collect(t testing.TB, nc *nats.Conn) (string, *replies) {
	t.Helper()
	inbox := nc.NewRespInbox()
	rs := &replies{}
	sub, err := nc.Subscribe(inbox, func(m *nats.Msg) {
		rs.mu.Lock()
		rs.msgs = append(rs.msgs, m)
		rs.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return inbox, rs
}

func (rs *replies) snapshot() []*nats.Msg {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return append([]*nats.Msg(nil), rs.msgs...)
}

func (rs *replies) count() int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return len(rs.msgs)
}

func TestServeActorOrder(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	w1 := serve(t, nc, wire.WorkerSpec{Kind: "DataProcessor", Args: args(t, 10)}, fleet.ServeOptions{})
	w2 := serve(t, nc, wire.WorkerSpec{Kind: "DataProcessor", Args: args(t, 100)}, fleet.ServeOptions{})
	inbox, rs := collect(t, nc)
	const n = 100
	for i := range n {
		for _, w := range []*fleet.Hosted{w1, w2} {
			m := callMsg(subjects.Worker(w.ID()), "Process", "", args(t, i))
			m.Reply = inbox
			m.Header.Set(wire.HeaderCallID, fmt.Sprintf("%s-%d", w.ID(), i))
			if err := nc.PublishMsg(m); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor(t, 10*time.Second, "200 replies", func() bool { return rs.count() == 2*n })
	next := map[string]int{w1.ID(): 0, w2.ID(): 0}
	mult := map[string]int{w1.ID(): 10, w2.ID(): 100}
	for _, r := range rs.snapshot() {
		var worker string
		var i int
		id := r.Header.Get(wire.HeaderCallID)
		if _, err := fmt.Sscanf(strings.Replace(id, "-", " ", 1), "%s %d", &worker, &i); err != nil {
			t.Fatalf("call ID %q: %v", id, err)
		}
		if i != next[worker] {
			t.Fatalf("worker %s replied to call %d, want %d (out of order)", worker, i, next[worker])
		}
		next[worker]++
		var out int
		if err := result(t, r, &out); err != nil || out != i*mult[worker] {
			t.Fatalf("call %s = %d, %v; want %d", id, out, err, i*mult[worker])
		}
	}
}

func TestServeNoReplySubject(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	h := serve(t, nc, wire.WorkerSpec{Kind: "DataProcessor", Args: args(t, 10)}, fleet.ServeOptions{})
	subj := subjects.Worker(h.ID())
	for _, m := range []*nats.Msg{callMsg(subj, "Process", "", args(t, 1)), callMsg(subj, "Explode", "", nil),
		callMsg(subj, "Process", "", args(t, 2))} {
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	var processed int
	if err := result(t, request(t, nc, callMsg(subj, "Processed", "", nil)), &processed); err != nil || processed != 2 {
		t.Fatalf("Processed() = %d, %v; want 2", processed, err)
	}
}

func TestServeDeadline(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	h := serve(t, nc, wire.WorkerSpec{Kind: "SlowWorker"}, fleet.ServeOptions{})
	subj := subjects.Worker(h.ID())
	tests := []struct {
		name     string
		deadline time.Time
		sleep    time.Duration
		wantErr  error
	}{
		{"passed", time.Now().Add(-time.Second), time.Millisecond, context.DeadlineExceeded},
		{"reached while running", time.Now().Add(100 * time.Millisecond), time.Minute, context.DeadlineExceeded},
		{"met", time.Now().Add(time.Minute), time.Millisecond, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := callMsg(subj, "Process", "", args(t, tt.sleep))
			m.Header.Set(wire.HeaderDeadline, wire.FormatDeadline(tt.deadline))
			start := time.Now()
			err := result(t, request(t, nc, m), &demo.Identity{})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("reply took %v", d)
			}
		})
	}
}

// cancelCall sends a ControlCancel for callID to worker id.
func cancelCall(t testing.TB, nc *nats.Conn, id, callID string) {
	t.Helper()
	m := nats.NewMsg(subjects.Control(id))
	m.Header.Set(wire.HeaderControl, wire.ControlCancel)
	m.Header.Set(wire.HeaderCallID, callID)
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
}

func TestServeCancel(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	h := serve(t, nc, wire.WorkerSpec{Kind: "SlowWorker"}, fleet.ServeOptions{})
	subj := subjects.Worker(h.ID())
	inbox, rs := collect(t, nc)
	send := func(callID string, d time.Duration) {
		m := callMsg(subj, "Process", "", args(t, d))
		m.Reply = inbox
		m.Header.Set(wire.HeaderCallID, callID)
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	send("running", time.Minute)
	send("queued", time.Minute)
	send("after", time.Millisecond)
	waitFor(t, 5*time.Second, "the first call to run", func() bool { return h.Worker().InFlight() == 3 })

	start := time.Now()
	cancelCall(t, nc, h.ID(), "queued")
	waitFor(t, time.Second, "the queued call's reply", func() bool { return rs.count() == 1 })
	cancelCall(t, nc, h.ID(), "running")
	waitFor(t, 5*time.Second, "three replies", func() bool { return rs.count() == 3 })
	if d := time.Since(start); d > time.Second {
		t.Errorf("cancelled calls and the next one took %v", d)
	}
	got := map[string]error{}
	for _, r := range rs.snapshot() {
		got[r.Header.Get(wire.HeaderCallID)] = result(t, r, &demo.Identity{})
	}
	for id, want := range map[string]error{"running": context.Canceled, "queued": context.Canceled, "after": nil} {
		if !errors.Is(got[id], want) {
			t.Errorf("call %s: %v, want %v", id, got[id], want)
		}
	}
	if order := rs.snapshot(); order[0].Header.Get(wire.HeaderCallID) != "queued" {
		t.Errorf("first reply %q, want the queued call's", order[0].Header.Get(wire.HeaderCallID))
	}
}

// TestServeCancelLatency bounds the time from a ControlCancel to the reply of a context-honouring method.
func TestServeCancelLatency(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	h := serve(t, nc, wire.WorkerSpec{Kind: "Kit"}, fleet.ServeOptions{})
	inbox, rs := collect(t, nc)
	m := callMsg(subjects.Worker(h.ID()), "Block", "", nil)
	m.Reply = inbox
	m.Header.Set(wire.HeaderCallID, "block")
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the call to run", func() bool { return h.Worker().InFlight() == 1 })
	start := time.Now()
	cancelCall(t, nc, h.ID(), "block")
	waitFor(t, time.Second, "the reply", func() bool { return rs.count() == 1 })
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("cancel took %v, want under 100ms", d)
	}
	if err := result(t, rs.snapshot()[0], nil); !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
	waitFor(t, time.Second, "the method to return", func() bool { return h.Worker().InFlight() == 0 })
}

func control(t testing.TB, nc *nats.Conn, id, op string, hdr map[string]string) *nats.Msg {
	t.Helper()
	m := nats.NewMsg(subjects.Control(id))
	m.Header.Set(wire.HeaderControl, op)
	for k, v := range hdr {
		m.Header.Set(k, v)
	}
	return request(t, nc, m)
}

func TestServeControlStop(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		abort   bool
		wantErr error
	}{
		{"drain", false, nil},
		{"abort", true, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := testutil.StartServer(t, broker.EmbeddedOptions{})
			nc := testutil.Connect(t, s.ClientURL())
			h, err := fleet.Serve(nc, wire.WorkerSpec{Kind: "SlowWorker"}, fleet.ServeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			inbox, rs := collect(t, nc)
			for i := range 3 {
				m := callMsg(subjects.Worker(h.ID()), "Process", "", args(t, 100*time.Millisecond))
				m.Reply = inbox
				m.Header.Set(wire.HeaderCallID, fmt.Sprint(i))
				if err := nc.PublishMsg(m); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, 5*time.Second, "calls queued", func() bool { return h.Worker().InFlight() == 3 })
			hdr := map[string]string{}
			if tt.abort {
				hdr[wire.HeaderAbort] = "1"
			}
			start := time.Now()
			r := control(t, nc, h.ID(), wire.ControlStop, hdr)
			if err := result(t, r, nil); err != nil || len(r.Data) != 0 {
				t.Fatalf("stop reply %q, %v", r.Data, err)
			}
			// The stop is answered just before Done is closed (so that a process waiting for Done exits only once
			// its stop is answered): Done follows within moments.
			select {
			case <-h.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("Done not closed 5s after the stop was answered")
			}
			// The calls were answered before the stop was acknowledged, on the same connection; their subscription's
			// callback may lag behind the request's by a moment.
			waitFor(t, time.Second, "3 replies", func() bool { return rs.count() == 3 })
			for _, r := range rs.snapshot() {
				if err := result(t, r, &demo.Identity{}); !errors.Is(err, tt.wantErr) {
					t.Errorf("call %s: %v, want %v", r.Header.Get(wire.HeaderCallID), err, tt.wantErr)
				}
			}
			if d := time.Since(start); tt.abort && d > time.Second {
				t.Errorf("abort took %v", d)
			} else if !tt.abort && d < 200*time.Millisecond {
				t.Errorf("drain took %v, less than the calls need", d)
			}
			_, err = nc.RequestMsg(callMsg(subjects.Worker(h.ID()), "Process", "", args(t, time.Millisecond)),
				5*time.Second)
			if !errors.Is(err, nats.ErrNoResponders) {
				t.Errorf("call after stop: %v, want no responders", err)
			}
			if err := h.Stop(context.Background()); err != nil {
				t.Errorf("second Stop: %v", err)
			}
			// The control subscription is gone with the worker: a late stop request finds no one.
			m := nats.NewMsg(subjects.Control(h.ID()))
			m.Header.Set(wire.HeaderControl, wire.ControlStop)
			if _, err := nc.RequestMsg(m, 5*time.Second); !errors.Is(err, nats.ErrNoResponders) {
				t.Errorf("stop after stop: %v, want no responders", err)
			}
		})
	}
}

func TestServeStatsAndPing(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	h := serve(t, nc, wire.WorkerSpec{Kind: "RiskyWorker", ID: "risky", Index: 3}, fleet.ServeOptions{})
	subj := subjects.Worker(h.ID())
	for _, v := range []int{1, 2, -1} {
		request(t, nc, callMsg(subj, "RiskyOperation", "", args(t, v)))
	}
	host, _ := os.Hostname()
	want := fleet.WorkerStats{ID: "risky", Index: 3, Kind: "RiskyWorker", Calls: 3, Errors: 1, PID: os.Getpid(), Host: host}
	for _, ct := range []string{"", codec.ContentTypeJSON} {
		var st fleet.WorkerStats
		if err := result(t, control(t, nc, h.ID(), wire.ControlStats, map[string]string{
			wire.HeaderContentType: ct}), &st); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(st, want) {
			t.Errorf("stats (%q) %+v, want %+v", ct, st, want)
		}
	}
	if r := control(t, nc, h.ID(), wire.ControlPing, nil); r.Header.Get(wire.HeaderStatus) != wire.StatusOK ||
		len(r.Data) != 0 {
		t.Errorf("ping reply %q %q", r.Header.Get(wire.HeaderStatus), r.Data)
	}
	if err := result(t, control(t, nc, h.ID(), "reboot", nil), nil); !errors.Is(err, fleet.ErrMalformed) {
		t.Errorf("unknown control: %v, want ErrMalformed", err)
	}
}

func TestServeHeartbeats(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	const interval = 50 * time.Millisecond
	type beat struct {
		at time.Time
		hb wire.Heartbeat
	}
	var mu sync.Mutex
	var beats []beat
	sub, err := nc.Subscribe(subjects.Heartbeat("SlowWorker", "hb1"), func(m *nats.Msg) {
		var hb wire.Heartbeat
		if err := codec.Msgpack.Unmarshal(m.Data, &hb); err != nil {
			t.Errorf("heartbeat %q: %v", m.Data, err)
		}
		mu.Lock()
		beats = append(beats, beat{time.Now(), hb})
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	snapshot := func() []beat {
		mu.Lock()
		defer mu.Unlock()
		return append([]beat(nil), beats...)
	}
	start := time.Now()
	h, err := fleet.Serve(nc, wire.WorkerSpec{Kind: "SlowWorker", ID: "hb1", Pool: "p1", Index: 2,
		HeartbeatInterval: interval}, fleet.ServeOptions{Agent: "a1"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "the first heartbeat", func() bool { return len(snapshot()) >= 1 })
	if first := snapshot()[0]; first.at.Sub(start) > interval/2 {
		t.Errorf("first heartbeat after %v, want at once", first.at.Sub(start))
	}
	want := wire.Heartbeat{WorkerID: "hb1", Kind: "SlowWorker", Agent: "a1", Pool: "p1", Index: 2, Interval: interval,
		Batches: true}
	if got := snapshot()[0].hb; got != want {
		t.Errorf("heartbeat %+v, want %+v", got, want)
	}

	inbox, rs := collect(t, nc)
	m := callMsg(subjects.Worker(h.ID()), "Process", "", args(t, 300*time.Millisecond))
	m.Reply = inbox
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "a heartbeat with the call in flight", func() bool {
		bs := snapshot()
		return bs[len(bs)-1].hb.InFlight == 1
	})
	waitFor(t, 2*time.Second, "a heartbeat with the call done", func() bool {
		hb := snapshot()[len(snapshot())-1].hb
		return hb.InFlight == 0 && hb.Calls == 1
	})
	if rs.count() != 1 {
		t.Errorf("%d replies, want 1", rs.count())
	}
	// The beats keep the interval: between 0.5 and 2 intervals apart on average, measured over several.
	bs := snapshot()
	if len(bs) < 6 {
		t.Fatalf("%d heartbeats in %v", len(bs), time.Since(start))
	}
	avg := bs[len(bs)-1].at.Sub(bs[1].at) / time.Duration(len(bs)-2)
	if avg < interval/2 || avg > 2*interval {
		t.Errorf("heartbeats every %v on average, want about %v", avg, interval)
	}

	if err := h.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "a stopping heartbeat", func() bool {
		bs := snapshot()
		return bs[len(bs)-1].hb.Stopping
	})
	n := len(snapshot())
	// Flush round trips prove the server delivered anything published before; none is.
	time.Sleep(3 * interval)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := len(snapshot()); got != n {
		t.Errorf("%d heartbeats after stop", got-n)
	}
}

func TestServeKindDiscover(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	a := serve(t, nc, wire.WorkerSpec{Kind: "DataProcessor", ID: "standing-a", Args: args(t, 1)}, fleet.ServeOptions{})
	serve(t, nc, wire.WorkerSpec{Kind: "DataProcessor", ID: "standing-b", Args: args(t, 1)}, fleet.ServeOptions{})
	serve(t, nc, wire.WorkerSpec{Kind: "DataProcessor", ID: "pooled", Pool: "p", Args: args(t, 1)}, fleet.ServeOptions{})
	serve(t, nc, wire.WorkerSpec{Kind: "SlowWorker", ID: "other-kind"}, fleet.ServeOptions{})

	discover := func() map[string]wire.Heartbeat {
		inbox, rs := collect(t, nc)
		if err := nc.PublishRequest(subjects.KindDiscover("DataProcessor"), inbox, nil); err != nil {
			t.Fatal(err)
		}
		// The workers share nc, so their replies precede the answer to a flush that follows the request.
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Second, "replies", func() bool { return rs.count() >= 1 })
		// Gathering has no end marker: like a real caller, wait a moment for stragglers, so that a reply from the
		// pooled worker or the other kind would be seen.
		time.Sleep(100 * time.Millisecond)
		got := map[string]wire.Heartbeat{}
		for _, r := range rs.snapshot() {
			var hb wire.Heartbeat
			if err := result(t, r, &hb); err != nil {
				t.Fatal(err)
			}
			got[hb.WorkerID] = hb
		}
		return got
	}
	got := discover()
	if len(got) != 2 || got["standing-a"].Kind != "DataProcessor" || got["standing-b"].WorkerID != "standing-b" {
		t.Fatalf("discovered %+v, want standing-a and standing-b", got)
	}
	if err := a.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := discover(); len(got) != 1 || got["standing-b"].WorkerID != "standing-b" {
		t.Fatalf("after stopping standing-a discovered %+v, want standing-b", got)
	}
}

func TestServeProgress(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	h := serve(t, nc, wire.WorkerSpec{Kind: "ProgressWorker"}, fleet.ServeOptions{})
	inbox, rs := collect(t, nc)
	m := callMsg(subjects.Worker(h.ID()), "ProcessItems", "", args(t, []int{1, 2, 3}, 20*time.Millisecond))
	m.Reply = inbox
	m.Header.Set(wire.HeaderCallID, "prog")
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the final reply", func() bool {
		msgs := rs.snapshot()
		return len(msgs) > 0 && msgs[len(msgs)-1].Header.Get(wire.HeaderStatus) != wire.StatusProgress
	})
	msgs := rs.snapshot()
	if len(msgs) < 3 {
		t.Fatalf("%d messages, want progress events and a reply", len(msgs))
	}
	var last wire.Progress
	for _, r := range msgs[:len(msgs)-1] {
		if st := r.Header.Get(wire.HeaderStatus); st != wire.StatusProgress || r.Header.Get(wire.HeaderCallID) != "prog" {
			t.Fatalf("message status %q call %q", st, r.Header.Get(wire.HeaderCallID))
		}
		var p wire.Progress
		if err := codec.Msgpack.Unmarshal(r.Data, &p); err != nil {
			t.Fatal(err)
		}
		if p.Seq <= last.Seq || p.Bar != "prog/1" || p.Desc != "Processing" || p.Total != 3 {
			t.Errorf("progress %+v after %+v", p, last)
		}
		last = p
	}
	if !last.Done || last.N != 3 {
		t.Errorf("last progress %+v, want done at 3", last)
	}
	var out []int
	if err := result(t, msgs[len(msgs)-1], &out); err != nil || fmt.Sprint(out) != "[2 4 6]" {
		t.Errorf("result %v, %v", out, err)
	}
}

func TestServeConstructorArgs(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	tests := []struct {
		name    string
		spec    wire.WorkerSpec
		want    string // Kit.Parts
		wantErr error
	}{
		{"variadic flat", wire.WorkerSpec{Kind: "Kit", Args: args(t, "a", "b")}, "[a b]", nil},
		{"variadic packed", wire.WorkerSpec{Kind: "Kit", Args: args(t, []string{"a", "b", "c"})}, "[a b c]", nil},
		{"variadic none", wire.WorkerSpec{Kind: "Kit"}, "[]", nil},
		{"variadic wrong type", wire.WorkerSpec{Kind: "Kit", Args: args(t, 1, 2)}, "", fleet.ErrBadArguments},
		{"missing argument", wire.WorkerSpec{Kind: "DataProcessor"}, "", fleet.ErrBadArguments},
		{"constructor error", wire.WorkerSpec{Kind: "DataProcessor", Args: args(t, 0)}, "", nil},
		{"unknown kind", wire.WorkerSpec{Kind: "Nope"}, "", fleet.ErrUnknownKind},
		{"bad ID", wire.WorkerSpec{Kind: "Kit", ID: "a.b"}, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := fleet.Serve(nc, tt.spec, fleet.ServeOptions{})
			if tt.want == "" {
				if err == nil {
					_ = h.Stop(context.Background())
					t.Fatal("Serve succeeded")
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer h.Stop(context.Background())
			var parts []string
			if err := result(t, request(t, nc, callMsg(subjects.Worker(h.ID()), "Parts", "", nil)), &parts); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(parts) != tt.want {
				t.Errorf("Parts() = %v, want %s", parts, tt.want)
			}
		})
	}
}

func TestServeSharedLimits(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	ls, err := limits.MarshalLimits([]limits.Limit{limits.ResourceLimit{Key: "connections", Capacity: 1}})
	if err != nil {
		t.Fatal(err)
	}
	var ws []*fleet.Hosted
	for i := range 2 {
		ws = append(ws, serve(t, nc, wire.WorkerSpec{Kind: "DatabaseWorker", Index: i, Pool: "db", Limits: ls,
			LimitSet: "db-" + t.Name()}, fleet.ServeOptions{}))
	}
	inbox, rs := collect(t, nc)
	for _, w := range ws {
		m := callMsg(subjects.Worker(w.ID()), "Query", "", args(t, "SELECT 1", 150*time.Millisecond))
		m.Reply = inbox
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "both queries", func() bool { return rs.count() == 2 })
	var spans []demo.Span
	for _, r := range rs.snapshot() {
		var sp demo.Span
		if err := result(t, r, &sp); err != nil {
			t.Fatal(err)
		}
		spans = append(spans, sp)
	}
	a, b := spans[0], spans[1]
	if a.Start < b.End && b.Start < a.End {
		t.Errorf("queries overlapped holding the one shared connection: %+v %+v", a, b)
	}
}

// rawResponder answers every request on bench.raw, on nc, with the very reply a served DataProcessor sends for
// Process(42), and returns that reply.
func rawResponder(b *testing.B, nc *nats.Conn) *nats.Msg {
	b.Helper()
	reply := nats.NewMsg("")
	reply.Header.Set(wire.HeaderCallID, "0123456789abcdefghijkl")
	reply.Header.Set(wire.HeaderStatus, wire.StatusOK)
	reply.Header.Set(wire.HeaderContentType, codec.ContentTypeMsgpack)
	reply.Data = mustMarshal(b, codec.Msgpack, 420)
	sub, err := nc.Subscribe("bench.raw", func(m *nats.Msg) { _ = m.RespondMsg(reply) })
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		b.Fatal(err)
	}
	return reply
}

// BenchmarkServeRoundTrip compares a call to a served worker with a raw NATS responder that answers the same
// request bytes with the same reply bytes, over the same server and connections. raw and served report each alone
// (allocations include the requesting side, which both share); interleaved alternates them in one loop, so machine
// noise hits both alike, and reports served/raw as "ratio".
func BenchmarkServeRoundTrip(b *testing.B) {
	s := testutil.StartServer(b, broker.EmbeddedOptions{})
	wc := testutil.Connect(b, s.ClientURL()) // the worker's connection
	cc := testutil.Connect(b, s.ClientURL()) // the caller's
	h := serve(b, wc, wire.WorkerSpec{Kind: "DataProcessor", Args: args(b, 10)}, fleet.ServeOptions{})
	served := callMsg(subjects.Worker(h.ID()), "Process", "", args(b, 42))
	served.Header.Set(wire.HeaderCallID, "0123456789abcdefghijkl")

	rawReply := rawResponder(b, wc)
	raw := callMsg("bench.raw", "Process", "", args(b, 42))
	raw.Header.Set(wire.HeaderCallID, "0123456789abcdefghijkl")

	roundTrip := func(b *testing.B, m *nats.Msg) {
		r, err := cc.RequestMsg(m, 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		if !bytes.Equal(r.Data, rawReply.Data) {
			b.Fatalf("reply %q", r.Data)
		}
	}
	b.Run("raw", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			roundTrip(b, raw)
		}
	})
	b.Run("served", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			roundTrip(b, served)
		}
	})
	b.Run("interleaved", func(b *testing.B) {
		var rawT, servedT time.Duration
		n := 0
		for b.Loop() {
			t0 := time.Now()
			roundTrip(b, raw)
			t1 := time.Now()
			roundTrip(b, served)
			servedT += time.Since(t1)
			rawT += t1.Sub(t0)
			n++
		}
		b.ReportMetric(float64(rawT.Nanoseconds())/float64(n), "raw-ns/call")
		b.ReportMetric(float64(servedT.Nanoseconds())/float64(n), "served-ns/call")
		b.ReportMetric(float64(servedT)/float64(rawT), "ratio")
	})
}

// BenchmarkServeCall measures the worker's side of one call, from the received message to the published reply,
// without the network: the handler runs in the benchmark's goroutine, as the call subscription would run it, and
// the reply goes to a subject nobody listens on.
func BenchmarkServeCall(b *testing.B) {
	s := testutil.StartServer(b, broker.EmbeddedOptions{})
	nc := testutil.Connect(b, s.ClientURL())
	h := serve(b, nc, wire.WorkerSpec{Kind: "DataProcessor", Args: args(b, 10)}, fleet.ServeOptions{})
	m := callMsg(subjects.Worker(h.ID()), "Process", "", args(b, 42))
	m.Header.Set(wire.HeaderCallID, "0123456789abcdefghijkl")
	// A call over NATS first: the worker learns that Process is short, so the calls below run inline.
	if got := process(b, nc, subjects.Worker(h.ID()), 42); got != 420 {
		b.Fatalf("Process(42) = %d", got)
	}
	m.Reply = "bench.sink"
	b.ReportAllocs()
	for b.Loop() {
		fleet.HandleCall(h, m)
		// A run slowed down by the machine (a GC pause, a preemption) sends the next calls to the worker's
		// goroutine; unlike a subscription, this loop would then keep the worker busy for good.
		for h.Worker().InFlight() != 0 {
			runtime.Gosched()
		}
	}
}

// BenchmarkServeBatch is BenchmarkServeCall for a batch of 64 calls; figures are per call.
func BenchmarkServeBatch(b *testing.B) {
	const n = 64
	s := testutil.StartServer(b, broker.EmbeddedOptions{})
	nc := testutil.Connect(b, s.ClientURL())
	h := serve(b, nc, wire.WorkerSpec{Kind: "DataProcessor", Args: args(b, 10)}, fleet.ServeOptions{})
	if got := process(b, nc, subjects.Worker(h.ID()), 42); got != 420 {
		b.Fatalf("Process(42) = %d", got)
	}
	calls := make([]wire.BatchCall, n)
	for i := range calls {
		calls[i] = entry(b, "bench.sink.", strconv.Itoa(i), "Process", 42)
		calls[i].ID = "0123456789abcdefghijkl-" + strconv.Itoa(i)
	}
	m := batchMsg(b, h, calls)
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		fleet.HandleCall(h, m)
		for h.Worker().InFlight() != 0 {
			runtime.Gosched()
		}
	}
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N*n), "ns/call")
}

// BenchmarkServePipelined keeps window calls in flight to one served worker, against a raw responder that answers
// the same request bytes with the same reply bytes; caller, server and worker share the machine, so calls/s follow
// the CPU time a call costs them all.
func BenchmarkServePipelined(b *testing.B) {
	const window = 64
	s := testutil.StartServer(b, broker.EmbeddedOptions{})
	wc := testutil.Connect(b, s.ClientURL())
	cc := testutil.Connect(b, s.ClientURL())
	h := serve(b, wc, wire.WorkerSpec{Kind: "DataProcessor", Args: args(b, 10)}, fleet.ServeOptions{})
	rawReply := rawResponder(b, wc)

	run := func(b *testing.B, subject string) {
		inbox := cc.NewRespInbox()
		slots := make(chan struct{}, window)
		rsub, err := cc.Subscribe(inbox, func(r *nats.Msg) {
			if !bytes.Equal(r.Data, rawReply.Data) {
				b.Errorf("reply %q", r.Data)
			}
			<-slots
		})
		if err != nil {
			b.Fatal(err)
		}
		defer rsub.Unsubscribe()
		m := callMsg(subject, "Process", "", args(b, 42))
		m.Header.Set(wire.HeaderCallID, "0123456789abcdefghijkl")
		m.Reply = inbox
		b.ReportAllocs()
		start := time.Now()
		for b.Loop() {
			slots <- struct{}{}
			if err := cc.PublishMsg(m); err != nil {
				b.Fatal(err)
			}
		}
		for range window {
			slots <- struct{}{}
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
	}
	b.Run("raw", func(b *testing.B) { run(b, "bench.raw") })
	b.Run("served", func(b *testing.B) { run(b, subjects.Worker(h.ID())) })
}

func TestServeControlStopTwice(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	h, err := fleet.Serve(nc, wire.WorkerSpec{Kind: "SlowWorker"}, fleet.ServeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	inbox, rs := collect(t, nc)
	call := callMsg(subjects.Worker(h.ID()), "Process", "", args(t, 200*time.Millisecond))
	call.Reply = inbox
	if err := nc.PublishMsg(call); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the call to run", func() bool { return h.Worker().InFlight() == 1 })
	for range 2 {
		m := nats.NewMsg(subjects.Control(h.ID()))
		m.Header.Set(wire.HeaderControl, wire.ControlStop)
		m.Reply = inbox
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "the call's and both stops' replies", func() bool { return rs.count() == 3 })
	for _, r := range rs.snapshot() {
		if err := result(t, r, nil); err != nil {
			t.Errorf("reply %q: %v", r.Data, err)
		}
	}
	<-h.Done()
}

// A worker served on NATS answers any NATS client; here a plain JSON request.
func ExampleServe() {
	srv, err := broker.StartEmbedded(broker.EmbeddedOptions{Port: -1})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect()
	if err != nil {
		panic(err)
	}
	defer nc.Close()

	ctorArgs, _ := codec.Msgpack.AppendArgs(nil, []any{10}) // NewDataProcessor(10)
	h, err := fleet.Serve(nc, wire.WorkerSpec{Kind: "DataProcessor", ID: "dp1", Args: ctorArgs},
		fleet.ServeOptions{})
	if err != nil {
		panic(err)
	}
	defer h.Stop(context.Background())

	req := nats.NewMsg("fleet.w.dp1")
	req.Header.Set("Fleet-Method", "Process")
	req.Header.Set("Content-Type", "application/json")
	req.Data = []byte("[42]")
	reply, err := nc.RequestMsg(req, 5*time.Second)
	if err != nil {
		panic(err)
	}
	fmt.Println(reply.Header.Get("Fleet-Status"), string(reply.Data))
	// Output: ok 420
}
