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

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/testutil"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// batchMsg builds a call batch to the worker.
func batchMsg(t testing.TB, h *fleet.Hosted, calls []wire.BatchCall) *nats.Msg {
	t.Helper()
	m := nats.NewMsg(subjects.Worker(h.ID()))
	m.Header.Set(wire.HeaderBatch, strconv.Itoa(len(calls)))
	m.Data = mustMarshal(t, codec.Msgpack, calls)
	return m
}

// entry is a batch entry calling method with args, answered on prefix+token.
func entry(t testing.TB, prefix, token, method string, a ...any) wire.BatchCall {
	t.Helper()
	return wire.BatchCall{ID: "id-" + token, Method: method, Reply: prefix + token, Args: msgpack.RawMessage(args(t, a...))}
}

// sendBatch sends h one batch of n calls of method, the i-th with argument arg(i) and answered on prefix+i, and
// returns the replies once rs has all of them.
func sendBatch(t testing.TB, nc *nats.Conn, h *fleet.Hosted, rs batchReplies, prefix string, n int, method string,
	arg func(i int) any) map[string]wire.BatchReply {
	t.Helper()
	calls := make([]wire.BatchCall, n)
	for i := range calls {
		calls[i] = entry(t, prefix, strconv.Itoa(i), method, arg(i))
	}
	if err := nc.PublishMsg(batchMsg(t, h, calls)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "every reply", func() bool {
		got, _ := rs.outcomes(t, prefix)
		return len(got) == n
	})
	got, _ := rs.outcomes(t, prefix)
	return got
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
		if strings.HasSuffix(m.Subject, "."+wire.ReplyBatchToken) {
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
func (br batchReplies) entries(t testing.TB) []wire.BatchReply {
	t.Helper()
	var out []wire.BatchReply
	for _, m := range br.batches.snapshot() {
		var b []wire.BatchReply
		if err := codec.Msgpack.Unmarshal(m.Data, &b); err != nil {
			t.Fatalf("reply batch %q: %v", m.Data, err)
		}
		if n := m.Header.Get(wire.HeaderBatch); n != strconv.Itoa(len(b)) {
			t.Errorf("reply batch of %d replies says %s %q", len(b), wire.HeaderBatch, n)
		}
		out = append(out, b...)
	}
	return out
}

// outcomes is every reply the inbox received by token, whether in a reply batch or alone, and whether it came in a
// batch; a call answered twice fails the test.
func (br batchReplies) outcomes(t testing.TB, prefix string) (replies map[string]wire.BatchReply, batched map[string]bool) {
	t.Helper()
	replies, batched = map[string]wire.BatchReply{}, map[string]bool{}
	add := func(r wire.BatchReply, inBatch bool) {
		if _, dup := replies[r.Token]; dup {
			t.Fatalf("call %s answered twice", r.Token)
		}
		replies[r.Token], batched[r.Token] = r, inBatch
	}
	for _, r := range br.entries(t) {
		add(r, true)
	}
	for _, m := range br.singles.snapshot() {
		add(wire.BatchReply{Token: strings.TrimPrefix(m.Subject, prefix), Status: m.Header.Get(wire.HeaderStatus),
			Body: m.Data}, false)
	}
	return replies, batched
}

// batchResult decodes a reply's outcome into out.
func batchResult(t testing.TB, r wire.BatchReply, out any) error {
	t.Helper()
	return decodeReply(t, codec.Msgpack, r.Status, r.Body, out)
}

// Calls answered while the worker serves their batch share a reply batch per inbox: calls that ran inline, and calls
// refused before they ran. A call handed to the worker's goroutine (a run slowed down by a busy machine makes a short
// method look long) may be answered alone.
func TestServeBatch(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	h := serve(t, nc, wire.WorkerSpec{Kind: "Gated"}, fleet.ServeOptions{})
	warm := warmUp(t, nc, h, "Mark", "warm")
	pa, pb := nc.NewInbox()+".", nc.NewInbox()+"."
	ra, rb := collectBatches(t, nc, pa), collectBatches(t, nc, pb)
	calls := []wire.BatchCall{
		entry(t, pa, "1", "Mark", "1"),
		entry(t, pb, "1", "Mark", "2"),
		entry(t, pa, "2", "Explode"),
		entry(t, pa, "3", "Mark", 3),
		entry(t, pa, "4", "Mark", "4"),
	}
	calls[4].Deadline = wire.FormatDeadline(time.Now().Add(time.Minute))
	if err := nc.PublishMsg(batchMsg(t, h, calls)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "5 replies", func() bool {
		a, _ := ra.outcomes(t, pa)
		b, _ := rb.outcomes(t, pb)
		return len(a) == 4 && len(b) == 1
	})
	a, aBatched := ra.outcomes(t, pa)
	b, bBatched := rb.outcomes(t, pb)
	tests := []struct {
		got     wire.BatchReply
		batched bool
		wantErr error
	}{
		{a["1"], aBatched["1"], nil},
		{b["1"], bBatched["1"], nil},
		{a["2"], aBatched["2"], fleet.ErrUnknownMethod},
		{a["3"], aBatched["3"], fleet.ErrBadArguments},
		{a["4"], aBatched["4"], nil},
	}
	for i, tt := range tests {
		var inline bool
		err := batchResult(t, tt.got, &inline)
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("call %d: %v, want %v", i, err, tt.wantErr)
		}
		if (err != nil || inline) && !tt.batched {
			t.Errorf("call %d was answered while the batch was served (inline %v, error %v), but alone", i, inline, err)
		}
	}
	// A reply batch keeps the order in which the calls were answered: the batch's order.
	var tokens []string
	for _, r := range ra.entries(t) {
		tokens = append(tokens, r.Token)
	}
	if !slices.IsSorted(tokens) {
		t.Errorf("inbox a's batched replies in the order %v", tokens)
	}
	want := slices.Repeat([]string{"warm"}, warm)
	if m := marked(t, h); !slices.Equal(m, append(want, "1", "2", "4")) {
		t.Errorf("marks %v, want the warm-ups then 1 2 4", m)
	}
	if st := h.Worker().Stats(); st.Calls != int64(warm+3) {
		t.Errorf("worker counted %d calls, want %d (bad calls are answered before they reach it)", st.Calls, warm+3)
	}
	ms := h.MethodStats()
	if i := slices.IndexFunc(ms, func(s fleet.MethodStats) bool { return s.Method == "Mark" }); ms[i].Calls != int64(warm+4) {
		t.Errorf("method stats %+v, want %d Mark calls (one with bad arguments)", ms[i], warm+4)
	}
}

// A long batch is answered in chunks: the caller gets the first replies, and can send more calls, while the worker
// serves the rest.
func TestServeBatchRepliesInChunks(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	h := serve(t, nc, wire.WorkerSpec{Kind: "Gated"}, fleet.ServeOptions{})
	warmUp(t, nc, h, "Mark", "warm")
	prefix := nc.NewInbox() + "."
	rs := collectBatches(t, nc, prefix)
	const n = 2*fleet.ReplyChunk + 6
	sendBatch(t, nc, h, rs, prefix, n, "Mark", func(i int) any { return strconv.Itoa(i) })
	_, batched := rs.outcomes(t, prefix)
	inBatches := 0
	for _, b := range batched {
		if b {
			inBatches++
		}
	}
	msgs := rs.batches.snapshot()
	for _, m := range msgs {
		if k, _ := strconv.Atoi(m.Header.Get(wire.HeaderBatch)); k > fleet.ReplyChunk {
			t.Errorf("a reply batch carries %d replies, more than a chunk of %d", k, fleet.ReplyChunk)
		}
	}
	if want := (inBatches + fleet.ReplyChunk - 1) / fleet.ReplyChunk; len(msgs) < want {
		t.Errorf("%d batched replies came in %d messages, want at least %d", inBatches, len(msgs), want)
	}
	if inBatches <= fleet.ReplyChunk {
		t.Logf("only %d of %d calls were answered in batches (the machine is slow)", inBatches, n)
	}
}

// A batch of calls that take a while is answered as it goes, every millisecond or so, not only once it is done.
func TestServeBatchRepliesWithinWait(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	h := serve(t, nc, wire.WorkerSpec{Kind: "Gated"}, fleet.ServeOptions{})
	warmUp(t, nc, h, "Spin", 50)
	prefix := nc.NewInbox() + "."
	rs := collectBatches(t, nc, prefix)
	const n = 64 // fewer than a chunk, and 3.2ms of work
	got := sendBatch(t, nc, h, rs, prefix, n, "Spin", func(int) any { return 50 })
	inline := 0
	for tok, r := range got {
		var ran bool
		if err := batchResult(t, r, &ran); err != nil {
			t.Fatalf("call %s: %v", tok, err)
		}
		if ran {
			inline++
		}
	}
	msgs := len(rs.batches.snapshot()) + len(rs.singles.snapshot())
	switch {
	case inline == n && msgs < 3:
		t.Errorf("%d calls of at least 50µs each were answered in %d messages, want at least 3", n, msgs)
	case inline < n:
		t.Logf("only %d of %d calls ran inline (the machine is slow)", inline, n)
	}
}

// Replies too many for one message go in several; one too large for any message gets an error.
func TestServeBatchRepliesOverMaxPayload(t *testing.T) {
	t.Parallel()
	const maxPayload = 4096
	s := testutil.StartServer(t, broker.EmbeddedOptions{MaxPayload: maxPayload})
	nc := testutil.Connect(t, s.ClientURL())
	h := serve(t, nc, wire.WorkerSpec{Kind: "Gated"}, fleet.ServeOptions{})
	warmUp(t, nc, h, "Blob", 10)
	prefix := nc.NewInbox() + "."
	rs := collectBatches(t, nc, prefix)
	sizes := []int{1500, 1500, 5000, 1500, 10}
	var calls []wire.BatchCall
	for i, n := range sizes {
		calls = append(calls, entry(t, prefix, strconv.Itoa(i), "Blob", n))
	}
	if err := nc.PublishMsg(batchMsg(t, h, calls)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "5 replies", func() bool {
		got, _ := rs.outcomes(t, prefix)
		return len(got) == len(sizes)
	})
	got, batched := rs.outcomes(t, prefix)
	inline := 0
	for i, n := range sizes {
		var out Blob
		err := batchResult(t, got[strconv.Itoa(i)], &out)
		if n > maxPayload {
			if !errors.Is(err, fleet.ErrPayloadTooLarge) {
				t.Errorf("call %d: %v, want ErrPayloadTooLarge", i, err)
			}
			continue
		}
		if err != nil || len(out.Data) != n {
			t.Errorf("call %d: %d bytes, %v; want %d", i, len(out.Data), err, n)
		}
		if out.Inline && batched[strconv.Itoa(i)] && n == 1500 {
			inline++
		}
	}
	// Three 1500-byte results do not fit in one message.
	if n := rs.batches.count(); inline == 3 && n < 2 {
		t.Errorf("%d reply batches carried the three 1500-byte results", n)
	}
	for _, m := range rs.batches.snapshot() {
		if len(m.Data) > maxPayload {
			t.Errorf("reply batch of %d bytes", len(m.Data))
		}
	}
}

// Calls of a batch that cannot join a reply batch are answered alone: a reply subject with no '.', and calls still
// running when the batch has been served (handed to the worker's goroutine).
func TestServeBatchRepliesAlone(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	h := serve(t, nc, wire.WorkerSpec{Kind: "Gated"}, fleet.ServeOptions{})
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
	calls := []wire.BatchCall{
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
			t.Errorf("call %s: %v", m.Header.Get(wire.HeaderCallID), err)
		}
	}
	if m := marked(t, h); !slices.Equal(m, []string{"2"}) {
		t.Errorf("marks %v", m)
	}
}

// A batch that cannot be read is dropped; the worker goes on serving.
func TestServeBatchMalformed(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	h := serve(t, nc, wire.WorkerSpec{Kind: "Gated"}, fleet.ServeOptions{})
	for _, body := range [][]byte{nil, []byte{0x91, 0xc1}, mustMarshal(t, codec.Msgpack, "not a batch")} {
		m := nats.NewMsg(subjects.Worker(h.ID()))
		m.Header.Set(wire.HeaderBatch, "1")
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
