package limits

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/internal/testutil"
)

// inQueue is how many acquisitions wait in the queue of s's own key.
func inQueue(s *Set) int {
	sh := s.be.(*kvBackend).main
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n := 0
	for _, w := range sh.queue {
		if w.state != finished {
			n++
		}
	}
	return n
}

// TestKVCoalesces: concurrent acquisitions of one set share compare-and-sets,
// and the shared count is still exactly what was admitted.
func TestKVCoalesces(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	s := sharedSets(t, srv, "coalesce", 1, SetOptions{}, CallLimit{Window: time.Hour, Capacity: 1e9})[0]
	sh := s.be.(*kvBackend).main
	before := sh.cur.rev
	const goroutines, each = 16, 50
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := runN(goroutines, goroutines*each, func() error {
		a, err := s.Acquire(ctx, nil)
		if err != nil {
			return err
		}
		return a.Release()
	})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := sh.latest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	writes := snap.rev - before
	if got := s.Stats()["call_count"].Extra["current_requests"]; got != goroutines*each {
		t.Fatalf("the shared count is %v after %d admissions", got, goroutines*each)
	}
	// 16 goroutines queue while a write is in flight: batches of several.
	if writes > goroutines*each/4 {
		t.Fatalf("%d writes for %d acquisitions: not coalesced", writes, goroutines*each)
	}
	t.Logf("%d acquisitions in %d writes", goroutines*each, writes)
}

// TestKVArrivalOrder: a large request at the head of the queue is served
// before a small one behind it that would fit; TryAcquire behind it is
// refused; when the head gives up, the next is served.
func TestKVArrivalOrder(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	clock := newFakeClock() // frozen: tokens come back only by refunds
	tokens := RateLimit{Key: "tokens", Window: time.Hour, Capacity: 10, Algorithm: TokenBucket}
	s := sharedSets(t, srv, "fifo", 1, SetOptions{Clock: clock.Now}, tokens)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	take := func(n float64) *Acquisition {
		t.Helper()
		a, err := s.Acquire(ctx, Request{"tokens": n})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	giveBack := func(a *Acquisition, used float64) {
		t.Helper()
		if err := a.Update(Usage{"tokens": used}); err != nil {
			t.Fatal(err)
		}
		if err := a.Release(); err != nil {
			t.Fatal(err)
		}
	}
	type result struct {
		a   *Acquisition
		err error
	}
	wait := func(wctx context.Context, n float64, queuedBefore int) chan result {
		t.Helper()
		ch := make(chan result, 1)
		go func() {
			a, err := s.Acquire(wctx, Request{"tokens": n})
			ch <- result{a, err}
		}()
		testutil.Eventually(t, 5*time.Second, func() error {
			if q := inQueue(s); q != queuedBefore+1 {
				return errors.New("not queued yet")
			}
			return nil
		})
		return ch
	}
	pending := func(ch chan result, what string) {
		t.Helper()
		select {
		case r := <-ch:
			t.Fatalf("%s served out of turn (err %v)", what, r.err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	served := func(ch chan result, what string) *Acquisition {
		t.Helper()
		select {
		case r := <-ch:
			if r.err != nil {
				t.Fatalf("%s: %v", what, r.err)
			}
			return r.a
		case <-time.After(10 * time.Second):
			t.Fatalf("%s not served", what)
		}
		return nil
	}

	x, y := take(5), take(5)
	giveBack(x, 4) // 1 token free
	head := wait(ctx, 5, 0)
	small := wait(ctx, 1, 1)
	pending(small, "the 1-token request behind a 5-token head")
	if _, err := s.TryAcquire(ctx, Request{"tokens": 1}); !errors.Is(err, ErrWouldWait) {
		t.Fatalf("TryAcquire behind the head: %v, want ErrWouldWait", err)
	}
	giveBack(y, 1) // 5 free: the head's turn
	h := served(head, "the head")
	pending(small, "the 1-token request after the head took the 5")
	giveBack(h, 4) // 4 free
	giveBack(served(small, "the 1-token request"), 1)

	// A head that gives up lets the next one in.
	s = sharedSets(t, srv, "fifo-cancel", 1, SetOptions{Clock: clock.Now}, tokens)[0]
	all := take(7) // 3 free
	hctx, hcancel := context.WithCancel(ctx)
	head = wait(hctx, 5, 0)
	next := wait(ctx, 2, 1)
	pending(next, "the 2-token request behind a 5-token head")
	hcancel()
	if r := <-head; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("the canceled head: %v", r.err)
	}
	giveBack(served(next, "the request behind a canceled head"), 2)
	giveBack(all, 7)
}

// TestKVCloseEndsQueue: Close fails every queued acquisition with ErrClosed.
func TestKVCloseEndsQueue(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	o := SetOptions{Name: "close-queue", Conn: testutil.Connect(t, srv.ClientURL())}
	s, err := NewSet(o, ResourceLimit{Key: "slot", Capacity: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Acquire(ctx, nil); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		wg.Go(func() {
			_, err := s.Acquire(ctx, nil)
			errs <- err
		})
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if inQueue(s) != 3 {
			return errors.New("not all queued")
		}
		return nil
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("a queued acquisition at Close: %v, want ErrClosed", err)
		}
	}
}
