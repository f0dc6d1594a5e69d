package wire_test

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/internal/wire"
)

func TestDeadline(t *testing.T) {
	t.Parallel()
	est := time.FixedZone("EST", -5*3600)
	d := time.Date(2024, 6, 1, 7, 8, 9, 123456789, est)
	s := wire.FormatDeadline(d)
	if s != "2024-06-01T12:08:09.123456789Z" {
		t.Fatalf("FormatDeadline = %q", s)
	}
	got, err := wire.ParseDeadline(s)
	if err != nil || !got.Equal(d) || got.Location() != time.UTC {
		t.Fatalf("ParseDeadline(%q) = %v, %v; want %v in UTC", s, got, err, d)
	}
	if s := wire.FormatDeadline(time.Time{}); s != "" {
		t.Fatalf("FormatDeadline(zero) = %q, want empty", s)
	}
	if got, err := wire.ParseDeadline(""); err != nil || !got.IsZero() {
		t.Fatalf("ParseDeadline(\"\") = %v, %v; want zero time", got, err)
	}
	if got, err := wire.ParseDeadline("2024-06-01T07:08:09-05:00"); err != nil || !got.Equal(d.Truncate(time.Second)) {
		t.Fatalf("ParseDeadline without fraction = %v, %v", got, err)
	}
	if _, err := wire.ParseDeadline("tomorrow"); err == nil || !strings.HasPrefix(err.Error(), `bad Fleet-Deadline "tomorrow"`) {
		t.Fatalf("ParseDeadline(tomorrow) error = %v", err)
	}
}

// ReadCall reads every header a call carries, and ReadReply a reply's status, the server's no-responders answer
// included.
func TestReadCallAndReply(t *testing.T) {
	t.Parallel()
	m := &nats.Msg{Subject: "fleet.w.W1", Reply: "_INBOX.x.1", Data: []byte{0x91, 0x2a}, Header: nats.Header{
		wire.HeaderCallID: {"c1"}, wire.HeaderMethod: {"Process"}, wire.HeaderContentType: {"application/json"},
		wire.HeaderDeadline: {"2024-06-01T12:08:09Z"}, wire.HeaderTraceparent: {"00-ab-cd-01"},
		wire.HeaderUrgent: {"1"}, "X-Other": {"ignored"}}}
	got := wire.ReadCall(m)
	want := wire.Call{ID: "c1", Method: "Process", ContentType: "application/json", Deadline: "2024-06-01T12:08:09Z",
		Trace: "00-ab-cd-01", Reply: "_INBOX.x.1", Body: m.Data, Urgent: true}
	if got.ID != want.ID || got.Method != want.Method || got.ContentType != want.ContentType ||
		got.Deadline != want.Deadline || got.Trace != want.Trace || got.Reply != want.Reply || !got.Urgent ||
		got.Batch || string(got.Body) != string(want.Body) {
		t.Fatalf("ReadCall = %+v, want %+v", got, want)
	}
	if c := wire.ReadCall(&nats.Msg{Header: nats.Header{wire.HeaderBatch: {"3"}}}); !c.Batch {
		t.Fatal("ReadCall did not see a batch")
	}
	for _, tc := range []struct {
		hdr          nats.Header
		status, ctyp string
	}{
		{nats.Header{wire.HeaderStatus: {wire.StatusOK}, wire.HeaderContentType: {"application/json"}}, wire.StatusOK, "application/json"},
		{nats.Header{wire.HeaderStatus: {wire.StatusError}}, wire.StatusError, ""},
		{nats.Header{"Status": {"503"}}, wire.StatusNoResponders, ""},
		{nil, "", ""},
	} {
		if st, ct := wire.ReadReply(&nats.Msg{Header: tc.hdr}); st != tc.status || ct != tc.ctyp {
			t.Errorf("ReadReply(%v) = %q, %q; want %q, %q", tc.hdr, st, ct, tc.status, tc.ctyp)
		}
	}
}

// An Out sets only the headers asked for, and Reset leaves none behind for its next message.
func TestOutReuse(t *testing.T) {
	t.Parallel()
	o := wire.GetOut("a")
	o.Set(wire.FieldCallID, "c1")
	o.Set(wire.FieldDeadline, "d")
	o.Set(wire.FieldCallID, "c2")
	if got := o.Msg.Header.Get(wire.HeaderCallID); got != "c2" || len(o.Msg.Header) != 2 {
		t.Fatalf("headers %v, want call ID c2 and a deadline", o.Msg.Header)
	}
	o.Msg.Data = []byte("body")
	o.Reset()
	if len(o.Msg.Header) != 0 || o.Msg.Subject != "" || o.Msg.Data != nil {
		t.Fatalf("after Reset: %+v", o.Msg)
	}
	o.Set(wire.FieldStatus, wire.StatusOK)
	if len(o.Msg.Header) != 1 || o.Msg.Header.Get(wire.HeaderStatus) != wire.StatusOK {
		t.Fatalf("reused headers %v", o.Msg.Header)
	}
	o.Put()
}

func TestLoad(t *testing.T) {
	t.Parallel()
	if s := wire.FormatLoad(3, 1207); s != "3 1207" {
		t.Fatalf("FormatLoad(3, 1207) = %q", s)
	}
	tests := []struct {
		in              string
		inFlight, calls int64
		ok              bool
	}{
		{"3 1207", 3, 1207, true},
		{"0 0", 0, 0, true},
		{"", 0, 0, false},
		{"3", 0, 0, false},
		{"-1 4", 0, 0, false},
		{"3 x", 0, 0, false},
		{"99999999999999999999 1", 0, 0, false},
	}
	for _, tt := range tests {
		f, c, ok := wire.ParseLoad(tt.in)
		if ok != tt.ok || ok && (f != tt.inFlight || c != tt.calls) {
			t.Errorf("ParseLoad(%q) = %d, %d, %t; want %d, %d, %t", tt.in, f, c, ok, tt.inFlight, tt.calls, tt.ok)
		}
	}
}
