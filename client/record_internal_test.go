package client

import (
	"testing"
	"unsafe"
)

// TestCallRecordSize keeps a call's one allocation in the 256-byte size class: a pipeline of 100k calls holds 100k
// records, and each byte more is garbage the collector scans.
func TestCallRecordSize(t *testing.T) {
	if got := unsafe.Sizeof(Future[int]{}); got > 256 {
		t.Fatalf("Future[int] is %d bytes, want at most 256", got)
	}
}
