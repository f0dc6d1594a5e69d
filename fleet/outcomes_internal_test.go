package fleet

import (
	"fmt"
	"testing"
	"time"

	"github.com/natsfleet/natsfleet/internal/wire"
)

// The outcomes a worker keeps are bounded by count, bytes and age, and what it drops it remembers as a watermark of
// call numbers, per caller.
func TestOutcomesBounds(t *testing.T) {
	t.Parallel()
	var o outcomes
	t0 := time.Unix(1_700_000_000, 0).UnixNano()
	id := func(caller string, n int) string { return fmt.Sprintf("%s-%s", caller, fmt.Sprint(n)) }
	for n := 1; n <= maxOutcomes+chunkOutcomes; n++ {
		o.add(t0, id("A", n), "r."+fmt.Sprint(n), "", wire.StatusOK, "application/msgpack", []byte{byte(n)})
	}
	if o.n > maxOutcomes {
		t.Fatalf("keeps %d outcomes, want at most %d", o.n, maxOutcomes)
	}
	last := maxOutcomes + chunkOutcomes
	if e, ok := o.find(id("A", last)); !ok || e.body[0] != byte(last) || e.reply != "r."+fmt.Sprint(last) ||
		e.status != wire.StatusOK || e.ctype != "application/msgpack" {
		t.Fatalf("newest outcome not kept as sent: %+v %v", e, ok)
	}
	if _, ok := o.find(id("A", 1)); ok {
		t.Fatal("the oldest outcome is still kept")
	}
	// Call numbers are base 36: "A-1" dropped, so "A-1" is forgotten, and so is any lower number.
	if !o.forgot(id("A", 1)) {
		t.Error("a dropped outcome is not reported forgotten")
	}
	if o.forgot(id("A", 999999)) || o.forgot(id("B", 1)) {
		t.Error("a call numbered above the watermark, or of another caller, is reported forgotten")
	}
	if !o.forgot("no-number-here-!") || !o.forgot("plain") {
		t.Error("a call ID without a natsfleet number must count as forgotten: it cannot be proven unseen")
	}

	// Age: a chunk whose newest entry is older than outcomeAge goes when time moves on.
	var aged outcomes
	aged.add(t0, "C-1", "r.1", "", wire.StatusOK, "", []byte{1})
	aged.prune(time.Unix(0, t0).Add(outcomeAge - time.Second))
	if _, ok := aged.find("C-1"); !ok {
		t.Fatal("an outcome younger than outcomeAge was dropped")
	}
	aged.prune(time.Unix(0, t0).Add(outcomeAge + time.Second))
	if _, ok := aged.find("C-1"); ok || !aged.forgot("C-1") {
		t.Fatal("an outcome older than outcomeAge is still kept")
	}

	// Bytes: large bodies push out the old ones.
	var big outcomes
	body := make([]byte, maxOutcomeBytes/4)
	for n := 1; n <= chunkOutcomes*6; n++ {
		big.add(t0, id("D", n), "r", "", wire.StatusOK, "", body)
	}
	if big.bytes > maxOutcomeBytes+chunkOutcomes*len(body) {
		t.Fatalf("keeps %d bytes of outcomes, want about %d at most", big.bytes, maxOutcomeBytes)
	}
}

func TestCallNumber(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		id     string
		prefix string
		n      uint64
		ok     bool
	}{
		{"Xy7-1a", "Xy7-", 46, true},
		{"abc-0", "abc-", 0, true},
		{"a-b-zz", "a-b-", 36*35 + 35, true},
		{"nodash", "", 0, false},
		{"bad-!!", "", 0, false},
	} {
		prefix, n, ok := callNumber(tc.id)
		if ok != tc.ok || ok && (prefix != tc.prefix || n != tc.n) {
			t.Errorf("callNumber(%q) = %q, %d, %t; want %q, %d, %t", tc.id, prefix, n, ok, tc.prefix, tc.n, tc.ok)
		}
	}
}
