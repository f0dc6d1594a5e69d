package wire_test

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/internal/msgp"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// TestBatchCodecMatchesMsgpack: the hand-written batch encodings are byte for byte msgpack's encoding of the
// structs, and decode back, whichever wrote them.
func TestBatchCodecMatchesMsgpack(t *testing.T) {
	t.Parallel()
	args, _ := codec.Msgpack.AppendArgs(nil, []any{42, "x"})
	calls := []wire.BatchCall{
		{ID: "c1", Method: "Process", Reply: "_INBOX.abc.1", Args: args},
		{ID: strings.Repeat("i", 40), Method: "M", Reply: "_INBOX.abc.2", Deadline: "2026-11-29T08:00:00.5Z", Args: args},
		{ID: "c3", Method: "Nothing", Reply: "r"},
		{ID: "c4", Method: "M", Reply: "_INBOX.abc.4", Deadline: "2026-11-29T08:00:00.5Z", Args: args, Worker: "W1"},
	}
	replies := []wire.BatchReply{
		{Token: "1", Status: wire.StatusOK, Body: []byte{0x2a}},
		{Token: "zz", Status: wire.StatusError, Body: args},
		{Token: "3", Status: "503"},
		{Token: "4", Status: wire.StatusOK, Load: wire.FormatLoad(3, 1207), Body: []byte{0x01}},
	}
	var ours []byte
	ours = msgp.AppendArrayLen(ours, len(calls))
	for i := range calls {
		ours = calls[i].AppendMsgpack(ours)
	}
	theirs, err := msgpack.Marshal(calls)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ours, theirs) {
		t.Fatalf("calls encode as\n% x\nmsgpack writes\n% x", ours, theirs)
	}
	gotCalls, err := wire.DecodeBatchCalls(nil, theirs)
	calls[2].Args = []byte{0xc0} // nil arguments travel as msgpack nil
	if err != nil || !reflect.DeepEqual(gotCalls, calls) {
		t.Fatalf("DecodeBatchCalls = %+v, %v; want %+v", gotCalls, err, calls)
	}

	ours = msgp.AppendArrayLen(nil, len(replies))
	for i := range replies {
		ours = replies[i].AppendMsgpack(ours)
	}
	if theirs, err = msgpack.Marshal(replies); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ours, theirs) {
		t.Fatalf("replies encode as\n% x\nmsgpack writes\n% x", ours, theirs)
	}
	gotReplies, err := wire.DecodeBatchReplies(nil, theirs)
	replies[2].Body = []byte{0xc0}
	if err != nil || !reflect.DeepEqual(gotReplies, replies) {
		t.Fatalf("DecodeBatchReplies = %+v, %v; want %+v", gotReplies, err, replies)
	}
}

// TestBatchDecodeTolerates other key orders and keys it does not know, as a newer client could send.
func TestBatchDecodeTolerates(t *testing.T) {
	t.Parallel()
	data, err := msgpack.Marshal([]map[string]any{{"x": []int{1, 2}, "a": []any{7}, "m": "Process", "i": "c9", "r": "in.9"}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := wire.DecodeBatchCalls(nil, data)
	if err != nil || len(got) != 1 || got[0].ID != "c9" || got[0].Method != "Process" || got[0].Reply != "in.9" ||
		!bytes.Equal(got[0].Args, []byte{0x91, 0x07}) {
		t.Fatalf("DecodeBatchCalls = %+v, %v", got, err)
	}
}

func TestBatchDecodeMalformed(t *testing.T) {
	t.Parallel()
	good, err := msgpack.Marshal([]wire.BatchReply{{Token: "1", Status: wire.StatusOK, Body: []byte{0x01}}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"not an array", []byte{0xa1, 'x'}},
		{"entry not a map", []byte{0x91, 0x01}},
		{"key not a string", []byte{0x91, 0x81, 0x01, 0x01}},
		{"truncated", good[:len(good)-1]},
		{"trailing bytes", append(append([]byte(nil), good...), 0x01)},
	}
	for _, tc := range tests {
		_, err := wire.DecodeBatchReplies(nil, tc.data)
		if err == nil || !strings.Contains(err.Error(), "decode reply batch") {
			t.Errorf("%s: DecodeBatchReplies error %v", tc.name, err)
		}
		if _, err := wire.DecodeBatchCalls(nil, tc.data); err == nil {
			t.Errorf("%s: DecodeBatchCalls accepted it", tc.name)
		}
	}
	if _, err := wire.DecodeBatchReplies(nil, []byte{0x91, 0x81, 0xa1, 't', 0x01}); err == nil {
		t.Error("DecodeBatchReplies accepted a token that is not a string")
	}
	if _, err := wire.DecodeBatchCalls(nil, []byte{0x91, 0x81, 0xa1, 'i', 0x01}); err == nil {
		t.Error("DecodeBatchCalls accepted a call ID that is not a string")
	}
	if _, err := wire.DecodeBatchCalls(nil, []byte{0x91, 0x81, 0xa1, 'a', 0xc1}); !errors.As(err, new(*msgp.Error)) {
		t.Errorf("invalid code in arguments: error %v, want a *msgp.Error", err)
	}
}
