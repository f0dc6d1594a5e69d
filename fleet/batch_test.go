package fleet_test

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/fleet"
)

// batchMsg builds a call batch to the worker.
func batchMsg(t testing.TB, h *fleet.Hosted, calls []fleet.BatchCall) *nats.Msg {
	t.Helper()
	m := nats.NewMsg(subjects.Worker(h.ID()))
	m.Header.Set(fleet.HeaderBatch, strconv.Itoa(len(calls)))
	m.Data = mustMarshal(t, codec.Msgpack, calls)
	return m
}

// entry is a batch entry calling method with args, answered on prefix+token.
func entry(t testing.TB, prefix, token, method string, a ...any) fleet.BatchCall {
	t.Helper()
	return fleet.BatchCall{ID: "id-" + token, Method: method, Reply: prefix + token, Args: msgpack.RawMessage(args(t, a...))}
}

// batchReplies collects what an inbox prefix receives: reply batches on prefix+"_b" and single replies on any other
// token.
type batchReplies struct {
	batches *replies
	singles *replies
}

func collectBatches(t testing.TB, nc *nats.Conn, prefix string) batchReplies {
	t.Helper()
	var out batchReplies
	out.batches, out.singles = &replies{}, &replies{}
	sub, err := nc.Subscribe(prefix+"*", func(m *nats.Msg) {
		rs := out.singles
		if strings.HasSuffix(m.Subject, "."+fleet.ReplyBatchToken) {
			rs = out.batches
		}
		rs.mu.Lock()
		rs.msgs = append(rs.msgs, m)
		rs.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return out
}

// entries decodes every reply batch received, in order, checking each message's Fleet-Batch header.
func (br batchReplies) entries(t testing.TB) []fleet.BatchReply {
	t.Helper()
	var out []fleet.BatchReply
	for _, m := range br.batches.snapshot() {
		var b []fleet.BatchReply
		if err := codec.Msgpack.Unmarshal(m.Data, &b); err != nil {
			t.Fatalf("reply batch %q: %v", m.Data, err)
		}
		if n := m.Header.Get(fleet.HeaderBatch); n != strconv.Itoa(len(b)) {
			t.Errorf("reply batch of %d replies says %s %q", len(b), fleet.HeaderBatch, n)
		}
		out = append(out, b...)
	}
	return out
}

// batchResult decodes a batch entry's outcome into out.
func batchResult(t testing.TB, r fleet.BatchReply, out any) error {
	t.Helper()
	switch r.Status {
	case codec.StatusOK:
		if out == nil {
			return nil
		}
		return codec.Msgpack.Unmarshal(r.Body, out)
	case codec.StatusError:
		var e codec.Error
		if err := codec.Msgpack.Unmarshal(r.Body, &e); err != nil {
			t.Fatalf("error body %q: %v", r.Body, err)
		}
		return fleet.DecodeError(e)
	}
	t.Fatalf("reply status %q", r.Status)
	return nil
}

func TestServeBatch(t *testing.T) {
	t.Parallel()
	s := startServer(t, 0)
	nc := connect(t, s)
	h := serve(t, nc, fleet.WorkerSpec{Kind: "Gated"}, fleet.ServeOptions{})
	warm := warmUp(t, nc, h, "Mark", "warm")
	pa, pb := nc.NewInbox()+".", nc.NewInbox()+"."
	ra, rb := collectBatches(t, nc, pa), collectBatches(t, nc, pb)
	calls := []fleet.BatchCall{
		entry(t, pa, "1", "Mark", "1"),
		entry(t, pb, "1", "Mark", "2"),
		entry(t, pa, "2", "Explode"),
		entry(t, pa, "3", "Mark", 3),
		entry(t, pa, "4", "Mark", "4"),
	}
	calls[4].Deadline = codec.FormatDeadline(time.Now().Add(time.Minute))
	if err := nc.PublishMsg(batchMsg(t, h, calls)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the replies", func() bool { return ra.batches.count() == 1 && rb.batches.count() == 1 })

	// The calls ran inline, in order, so all their replies went in one batch per inbox.
	if n := ra.singles.count() + rb.singles.count(); n != 0 {
		t.Errorf("%d replies alone, want all in batches", n)
	}
	got := ra.entries(t)
	if tokens := []string{got[0].Token, got[1].Token, got[2].Token, got[3].Token}; len(got) != 4 ||
		!slices.Equal(tokens, []string{"1", "2", "3", "4"}) {
		t.Fatalf("inbox a's replies %+v, want tokens 1 to 4 in order", got)
	}
	var inline bool
	for i, want := range []error{nil, fleet.ErrUnknownMethod, fleet.ErrBadArguments, nil} {
		if err := batchResult(t, got[i], &inline); !errors.Is(err, want) {
			t.Errorf("reply %s: %v, want %v", got[i].Token, err, want)
		}
	}
	if other := rb.entries(t); len(other) != 1 || other[0].Token != "1" || batchResult(t, other[0], nil) != nil {
		t.Errorf("inbox b's replies %+v, want call 1's", other)
	}
	want := slices.Repeat([]string{"warm"}, warm)
	if m := marked(t, h); !slices.Equal(m, append(want, "1", "2", "4")) {
		t.Errorf("marks %v, want the warm-ups then 1 2 4", m)
	}
	if st := h.Worker().Stats(); st.Calls != int64(warm+3) {
		t.Errorf("worker counted %d calls, want %d (bad calls are answered before they reach it)", st.Calls, warm+3)
	}
	if ms := h.MethodStats(); ms[slices.IndexFunc(ms, func(s fleet.MethodStats) bool { return s.Method == "Mark" })].Calls !=
		int64(warm+4) {
		t.Errorf("method stats %+v, want %d Mark calls (one with bad arguments)", ms, warm+4)
	}
}

// Replies too many for one message go in several; one too large for any gets an error.
func TestServeBatchRepliesOverMaxPayload(t *testing.T) {
	t.Parallel()
	s := startServer(t, 4096)
	nc := connect(t, s)
	h := serve(t, nc, fleet.WorkerSpec{Kind: "Kit"}, fleet.ServeOptions{})
	warmUp(t, nc, h, "Repeat", 10)
	prefix := nc.NewInbox() + "."
	rs := collectBatches(t, nc, prefix)
	sizes := []int{1500, 1500, 5000, 1500, 10}
	var calls []fleet.BatchCall
	for i, n := range sizes {
		calls = append(calls, entry(t, prefix, strconv.Itoa(i), "Repeat", n))
	}
	if err := nc.PublishMsg(batchMsg(t, h, calls)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "5 replies", func() bool { return len(rs.entries(t)) == len(sizes) })
	if n := rs.batches.count(); n < 2 {
		t.Errorf("%d reply batches, want the replies split over several", n)
	}
	for i, r := range rs.entries(t) {
		if r.Token != strconv.Itoa(i) {
			t.Fatalf("reply %d has token %s", i, r.Token)
		}
		var out string
		err := batchResult(t, r, &out)
		if sizes[i] > 4096 {
			if !errors.Is(err, fleet.ErrPayloadTooLarge) {
				t.Errorf("reply %d: %v, want ErrPayloadTooLarge", i, err)
			}
			continue
		}
		if err != nil || len(out) != sizes[i] {
			t.Errorf("reply %d: %d bytes, %v; want %d", i, len(out), err, sizes[i])
		}
	}
	if n := rs.singles.count(); n != 0 {
		t.Errorf("%d replies alone", n)
	}
}

// Calls of a batch that cannot join a reply batch are answered alone: a reply subject with no '.', and calls still
// running when the batch has been served (handed to the worker's goroutine).
func TestServeBatchRepliesAlone(t *testing.T) {
	t.Parallel()
	s := startServer(t, 0)
	nc := connect(t, s)
	h := serve(t, nc, fleet.WorkerSpec{Kind: "Gated"}, fleet.ServeOptions{})
	gate, open := newGate(t)
	prefix := nc.NewInbox() + "."
	rs := collectBatches(t, nc, prefix)
	single := "single-" + strings.ReplaceAll(t.Name(), "/", "-")
	singles := &replies{}
	sub, err := nc.Subscribe(single, func(m *nats.Msg) {
		singles.mu.Lock()
		singles.msgs = append(singles.msgs, m)
		singles.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	// Hold runs first (its method is not known to be short: it goes to the worker's goroutine), so Mark queues
	// behind it; both finish after the batch has been served.
	calls := []fleet.BatchCall{
		entry(t, prefix, "1", "Hold", gate),
		entry(t, prefix, "2", "Mark", "2"),
		{ID: "id-3", Method: "Ping", Reply: single, Args: msgpack.RawMessage(args(t))},
	}
	if err := nc.PublishMsg(batchMsg(t, h, calls)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the calls to queue", func() bool { return h.Worker().InFlight() == 3 })
	waitFor(t, 5*time.Second, "the batch to be served", func() bool { return !fleet.ReplyBatchOpen(h) })
	open()
	waitFor(t, 5*time.Second, "3 replies", func() bool { return rs.singles.count()+singles.count() == 3 })
	if n := rs.batches.count(); n != 0 {
		t.Errorf("%d reply batches, want none", n)
	}
	for _, m := range append(rs.singles.snapshot(), singles.snapshot()...) {
		if err := result(t, m, nil); err != nil {
			t.Errorf("call %s: %v", m.Header.Get(codec.HeaderCallID), err)
		}
	}
	if m := marked(t, h); !slices.Equal(m, []string{"2"}) {
		t.Errorf("marks %v", m)
	}
}

// A batch that cannot be read is dropped; the worker goes on serving.
func TestServeBatchMalformed(t *testing.T) {
	t.Parallel()
	s := startServer(t, 0)
	nc := connect(t, s)
	h := serve(t, nc, fleet.WorkerSpec{Kind: "Gated"}, fleet.ServeOptions{})
	for _, body := range [][]byte{nil, []byte{0x91, 0xc1}, mustMarshal(t, codec.Msgpack, "not a batch")} {
		m := nats.NewMsg(subjects.Worker(h.ID()))
		m.Header.Set(fleet.HeaderBatch, "1")
		m.Data = body
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	var got string
	if err := result(t, request(t, nc, callMsg(subjects.Worker(h.ID()), "Ping", "", nil)), &got); err != nil ||
		got != "pong" {
		t.Fatalf("Ping after malformed batches: %q, %v", got, err)
	}
}
