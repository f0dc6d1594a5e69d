package client

import "testing"

func TestBatchRunsSize(t *testing.T) {
	t.Parallel()
	type step struct {
		replies   int // reply messages answered before the pick, each of perReply calls
		perReply  int
		pending   int64
		workers   int
		wantRun   int
		wantWhole bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"new pool spreads calls one at a time", []step{{pending: 1, workers: 4, wantRun: 1, wantWhole: true},
			{pending: 100, workers: 4, wantRun: 1}}},
		{"short calls answered in batches go in whole runs", []step{{replies: 40, perReply: 64, pending: 256, workers: 4, wantRun: 64, wantWhole: true}}},
		{"the peak sizes the runs of a refilling pipeline", []step{{replies: 40, perReply: 64, pending: 256, workers: 4, wantRun: 64, wantWhole: true},
			{pending: 192, workers: 4, wantRun: 64, wantWhole: true}}},
		{"runs are at most a batch", []step{{replies: 40, perReply: 100, pending: 1000, workers: 4, wantRun: maxBatch, wantWhole: true}}},
		{"slow calls answered one by one go one by one", []step{{replies: 40, perReply: 1, pending: 256, workers: 4, wantRun: 1}}},
		{"runs grow with the replies", []step{{replies: 40, perReply: 20, pending: 256, workers: 4, wantRun: 39}}},
		{"replies of two calls", []step{{replies: 40, perReply: 2, pending: 256, workers: 4, wantRun: 3}}},
		{"a peak is forgotten two spans after it", []step{{replies: 40, perReply: 64, pending: 256, workers: 4, wantRun: 64, wantWhole: true},
			{replies: peakSpan, perReply: 64, pending: 8, workers: 4, wantRun: 64, wantWhole: true},
			{replies: 2 * peakSpan, perReply: 64, pending: 8, workers: 4, wantRun: 2, wantWhole: true}}},
		{"no live worker", []step{{pending: 10, workers: 0, wantRun: 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newBatchRuns()
			const now = int64(1e18)
			for i, s := range tt.steps {
				for range s.replies {
					r.replied(s.perReply, now)
				}
				run, whole := r.size(s.pending, s.workers)
				if run != s.wantRun || whole != s.wantWhole {
					t.Fatalf("step %d: size(%d, %d) = %d, %t; want %d, %t", i, s.pending, s.workers, run, whole, s.wantRun, s.wantWhole)
				}
			}
		})
	}
}

// A pool whose calls all came back and that sends more at once goes on with the same runs; one that paused starts
// over, as a new pool does.
func TestBatchRunsWake(t *testing.T) {
	t.Parallel()
	const now = int64(1e18)
	r := newBatchRuns()
	for range 40 {
		r.replied(64, now)
	}
	if run, whole := r.size(256, 4); run != 64 || !whole {
		t.Fatalf("size(256, 4) = %d, %t; want 64, true", run, whole)
	}
	r.wake(now + int64(runIdle) - 1)
	if run, whole := r.size(1, 4); run != 64 || !whole {
		t.Fatalf("after a wake within runIdle: size(1, 4) = %d, %t; want 64, true", run, whole)
	}
	r.wake(now + int64(runIdle))
	if run, whole := r.size(1, 4); run != 1 || !whole {
		t.Fatalf("after a wake past runIdle: size(1, 4) = %d, %t; want 1, true", run, whole)
	}
	if run, whole := r.size(100, 4); run != 1 || whole {
		t.Fatalf("after a wake past runIdle: size(100, 4) = %d, %t; want 1, false", run, whole)
	}
}
