package limits

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// apiSet is a set like the seed's API worker: calls, tokens and connections.
func apiSet(t *testing.T, opts SetOptions) *Set {
	return newSet(t, opts,
		CallLimit{Window: time.Minute, Capacity: 5},
		RateLimit{Key: "tokens", Window: time.Minute, Capacity: 100, Algorithm: TokenBucket},
		ResourceLimit{Key: "connections", Capacity: 2})
}

func available(t *testing.T, p Provider, key string) float64 {
	t.Helper()
	st, ok := p.Stats()[key]
	if !ok {
		t.Fatalf("no stats for %q", key)
	}
	return st.Available
}

func TestRequestRules(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := newFakeClock()
	s := apiSet(t, SetOptions{Clock: clock.Now})
	if s.Name() != "" || s.Bucket() != "" {
		t.Fatalf("in-memory set: Name() %q Bucket() %q", s.Name(), s.Bucket())
	}
	if got := s.Limits(); len(got) != 3 || got[0].LimitKey() != "call_count" || got[1].LimitKey() != "connections" || got[2].LimitKey() != "tokens" {
		t.Fatalf("Limits() = %v, want the three limits sorted by key", got)
	}

	// An empty request takes CallLimits and ResourceLimits with 1, RateLimits not at all.
	a, err := s.Acquire(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Requested("call_count") != 1 || a.Requested("connections") != 1 || a.Requested("tokens") != 0 {
		t.Fatalf("empty request took calls %v connections %v tokens %v", a.Requested("call_count"), a.Requested("connections"), a.Requested("tokens"))
	}
	if got := available(t, s, "connections"); got != 1 {
		t.Fatalf("connections available while held = %v, want 1", got)
	}
	if err := a.Release(); err != nil {
		t.Fatalf("release without RateLimits needs no update: %v", err)
	}
	if got := available(t, s, "connections"); got != 2 {
		t.Fatalf("connections available after release = %v, want 2", got)
	}

	// Naming a RateLimit takes it and requires Update; named amounts win.
	a, err = s.Acquire(ctx, Request{"tokens": 30, "connections": 2})
	if err != nil {
		t.Fatal(err)
	}
	if a.Requested("tokens") != 30 || a.Requested("connections") != 2 || a.Requested("call_count") != 1 {
		t.Fatal("named amounts not taken as given")
	}
	if err := a.Update(Usage{"tokens": 10}); err != nil {
		t.Fatal(err)
	}
	if err := a.Update(Usage{"tokens": 12}); err != nil { // the last update wins
		t.Fatal(err)
	}
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	if got := available(t, s, "tokens"); got != 88 {
		t.Fatalf("tokens after using 12 of 30 = %v, want 88 (refund of 18)", got)
	}
	if err := a.Release(); err != nil {
		t.Fatalf("second Release: %v, want nil (idempotent)", err)
	}
	if got := available(t, s, "tokens"); got != 88 {
		t.Fatalf("second Release changed tokens to %v", got)
	}
	if err := a.Update(Usage{"tokens": 1}); !errors.Is(err, ErrReleased) {
		t.Fatalf("Update after Release: %v, want ErrReleased", err)
	}

	// Release without Update still returns the resources, then reports the keys.
	a, err = s.Acquire(ctx, Request{"tokens": 8, "connections": 2})
	if err != nil {
		t.Fatal(err)
	}
	err = a.Release()
	var nu *NotUpdatedError
	if !errors.Is(err, ErrNotUpdated) || !errors.As(err, &nu) || !reflect.DeepEqual(nu.Keys, []string{"tokens"}) {
		t.Fatalf("Release without update = %v, want *NotUpdatedError{tokens}", err)
	}
	if err.Error() != `limits: acquisition released without update of ["tokens"] (counted as fully used)` {
		t.Fatalf("message = %q", err)
	}
	if got := available(t, s, "connections"); got != 2 {
		t.Fatalf("connections after release without update = %v, want 2 (returned anyway)", got)
	}
	if got := available(t, s, "tokens"); got != 80 {
		t.Fatalf("tokens = %v, want 80 (no refund without update)", got)
	}
}

func TestRequestErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newSet(t, SetOptions{},
		CallLimit{Window: time.Minute, Capacity: 5, Algorithm: SlidingWindow},
		RateLimit{Key: "tokens", Window: time.Minute, Capacity: 20, Algorithm: GCRA},
		RateLimit{Key: "leaky", Window: time.Minute, Capacity: 20, Algorithm: LeakyBucket},
		ResourceLimit{Key: "connections", Capacity: 2})
	_, err := s.Acquire(ctx, Request{"tokens": 30})
	var ec *ExceedsCapacityError
	if !errors.Is(err, ErrExceedsCapacity) || !errors.As(err, &ec) || ec.Key != "tokens" || ec.Requested != 30 || ec.Capacity != 20 {
		t.Fatalf("over capacity: %v", err)
	}
	if err.Error() != `limits: requested amount 30 exceeds capacity 20 for limit "tokens"` {
		t.Fatalf("message = %q", err)
	}
	if a, err := s.Acquire(ctx, Request{"tokens": 20}); err != nil { // exactly capacity is fine
		t.Fatal(err)
	} else {
		a.Update(Usage{"tokens": 20})
		a.Release()
	}
	cases := []struct {
		req  Request
		want string
	}{
		{Request{"call_count": 1.5}, `fractional amount 1.5 for sliding_window limit "call_count"`},
		{Request{"leaky": 0.5}, `fractional amount 0.5 for leaky_bucket limit "leaky"`},
		{Request{"connections": 1.5}, `fractional amount 1.5 for resource limit "connections"`},
		{Request{"tokens": -1}, `requested amount must be finite and >= 0, got -1 for limit "tokens"`},
	}
	for _, tc := range cases {
		if _, err := s.Acquire(ctx, tc.req); !errors.Is(err, ErrInvalidAmount) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Acquire(%v) = %v, want ErrInvalidAmount containing %q", tc.req, err, tc.want)
		}
	}
	if got := available(t, s, "connections"); got != 2 {
		t.Fatalf("rejected requests took connections: %v available", got)
	}
	a, err := s.Acquire(ctx, Request{"tokens": 2.5})
	if err != nil {
		t.Fatalf("fractional amount on gcra: %v", err)
	}
	if err := a.Update(Usage{"tokens": -1}); !errors.Is(err, ErrInvalidAmount) {
		t.Fatalf("negative usage: %v", err)
	}
	if err := a.Update(Usage{"call_count": 0}); !errors.Is(err, ErrInvalidAmount) || !strings.Contains(err.Error(), "implicit acquisition must be 1") {
		t.Fatalf("implicit call usage 0: %v", err)
	}
	if err := a.Update(Usage{"tokens": 2}); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
}

func TestUnknownKeysWarnOnce(t *testing.T) {
	t.Parallel()
	rec := &logRecorder{}
	s := newSet(t, SetOptions{Logger: slog.New(rec)}, RateLimit{Key: "tokens", Window: time.Minute, Capacity: 100, Algorithm: TokenBucket})
	for range 3 {
		a, err := s.Acquire(context.Background(), Request{"tokens": 10, "tokenz": 5})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Update(Usage{"tokens": 20, "other": 1}); err != nil { // 20 > 10: counted as 10
			t.Fatal(err)
		}
		if err := a.Release(); err != nil {
			t.Fatal(err)
		}
	}
	got := rec.messages()
	sort.Strings(got)
	want := []string{
		"limits: unknown limit key in acquisition request; ignored key=tokenz",
		"limits: update of a limit key not acquired; ignored key=other",
		"limits: usage exceeds the requested amount; counted as the requested amount key=tokens",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("warnings = %q\nwant %q", got, want)
	}
	if av := available(t, s, "tokens"); av < 70 || av > 71 {
		t.Fatalf("tokens available %v, want 70 (+ refill): overuse took more than requested", av)
	}
}

func TestAllOrNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newSet(t, SetOptions{},
		CallLimit{Window: time.Hour, Capacity: 1},
		ResourceLimit{Key: "connections", Capacity: 5},
		RateLimit{Key: "tokens", Window: time.Hour, Capacity: 10, Algorithm: TokenBucket})
	if _, err := s.Acquire(ctx, Request{"connections": 0}); err != nil { // takes the only call
		t.Fatal(err)
	}
	_, err := s.TryAcquire(ctx, Request{"tokens": 5, "connections": 3})
	if !errors.Is(err, ErrWouldWait) || !strings.Contains(err.Error(), `limit "call_count"`) {
		t.Fatalf("TryAcquire = %v, want ErrWouldWait naming call_count", err)
	}
	if c, tok := available(t, s, "connections"), available(t, s, "tokens"); c != 5 || tok != 10 {
		t.Fatalf("a refused acquisition took connections (%v left) or tokens (%v left)", c, tok)
	}
}

func TestWaitersWakeOnRelease(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A resource has no timer: only the release's broadcast can wake a waiter.
	s := newSet(t, SetOptions{}, ResourceLimit{Key: "gpu", Capacity: 1})
	held, err := s.Acquire(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	const waiters = 4
	var got atomic.Int32
	var wg sync.WaitGroup
	for range waiters {
		wg.Go(func() {
			a, err := s.Acquire(ctx, nil)
			if err != nil {
				t.Error(err)
				return
			}
			got.Add(1)
			a.Release()
		})
	}
	time.Sleep(50 * time.Millisecond) // let them block; correctness does not depend on it
	if n := got.Load(); n != 0 {
		t.Fatalf("%d waiters got a held resource", n)
	}
	start := time.Now()
	held.Release()
	wg.Wait()
	if n, d := got.Load(), time.Since(start); n != waiters || d > 2*time.Second {
		t.Fatalf("%d of %d waiters served in %v after release", n, waiters, d)
	}
}

func TestWaitUntilRefill(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := newSet(t, SetOptions{}, CallLimit{Window: 400 * time.Millisecond, Capacity: 2, Algorithm: TokenBucket})
	for range 2 {
		if _, err := s.Acquire(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	a, err := s.Acquire(ctx, nil) // one token refills in 200ms: woken by the computed time
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 190*time.Millisecond || d > 2*time.Second {
		t.Fatalf("waited %v for a token refilling in 200ms", d)
	}
	if a.Time().Before(start.Add(190 * time.Millisecond)) {
		t.Fatalf("admission time %v is before the refill", a.Time().Sub(start))
	}
}

func TestAcquireEndsWithContextOrClose(t *testing.T) {
	t.Parallel()
	s, err := NewSet(SetOptions{}, ResourceLimit{Key: "gpu", Capacity: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Acquire(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_, err = s.Acquire(ctx, nil)
	if !errors.Is(err, context.DeadlineExceeded) || err.Error() != `limits: waiting for limit "gpu": context deadline exceeded` {
		t.Fatalf("Acquire past deadline = %v", err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := s.Acquire(context.Background(), nil)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("waiter after Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake the waiter")
	}
	if _, err := s.Acquire(context.Background(), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Acquire after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestStatsJSON(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := newSet(t, SetOptions{Clock: clock.Now},
		RateLimit{Key: "tokens", Window: 2 * time.Second, Capacity: 20, Algorithm: GCRA},
		CallLimit{Window: time.Second, Capacity: 10},
		ResourceLimit{Key: "connections", Capacity: 10})
	a, err := s.Acquire(context.Background(), Request{"tokens": 5, "connections": 3})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	b, err := json.Marshal(s.Stats())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"call_count":{"algorithm":"sliding_window","available":9,"capacity":10,"current_requests":1,"key":"call_count","max_rate":10,"utilization":0.1,"window":1,"window_seconds":1},` +
		`"connections":{"available":7,"capacity":10,"current_usage":3,"key":"connections","utilization":0.3},` +
		`"tokens":{"algorithm":"gcra","available":15,"available_tokens":15,"capacity":20,"emission_interval":0.1,"key":"tokens","max_rate":10,"utilization":0.25,"window":2}}`
	if string(b) != want {
		t.Fatalf("stats JSON:\n%s\nwant\n%s", b, want)
	}
	var back map[string]Stats
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, s.Stats()) {
		t.Fatalf("stats JSON round trip differs:\n%+v\n%+v", back, s.Stats())
	}
}

func TestNoop(t *testing.T) {
	ctx := context.Background()
	req, use := Request{"tokens": 5}, Usage{"tokens": 3}
	allocs := testing.AllocsPerRun(1000, func() {
		a, err := Noop.Acquire(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		a.Update(use)
		a.Release()
	})
	if allocs != 0 {
		t.Fatalf("Noop acquisition allocates %v times", allocs)
	}
	if Noop.ForWorker(3) != Noop || len(Noop.Stats()) != 0 {
		t.Fatal("Noop is not inert")
	}
	empty := newSet(t, SetOptions{Logger: slog.New(slog.DiscardHandler)})
	if a, err := empty.TryAcquire(ctx, Request{"x": 1}); err != nil || a.Release() != nil {
		t.Fatalf("empty set: %v", err)
	}
}

// TestMemoryContention hammers an in-memory set from many goroutines and
// checks the admission log against each algorithm's promise.
func TestMemoryContention(t *testing.T) {
	t.Parallel()
	const capacity = 20
	window := 200 * time.Millisecond
	for _, alg := range []Algorithm{SlidingWindow, FixedWindow, TokenBucket, GCRA, LeakyBucket} {
		t.Run(string(alg), func(t *testing.T) {
			t.Parallel()
			s := newSet(t, SetOptions{}, CallLimit{Window: window, Capacity: capacity, Algorithm: alg},
				ResourceLimit{Key: "slots", Capacity: 3})
			h := hammer(t, []Provider{s}, []time.Duration{0}, 8, 1200*time.Millisecond, nil)
			checkLog(t, alg, h.decided, capacity, window, 0)
			if h.maxHolders > 3 {
				t.Fatalf("%d holders of 3 slots at once", h.maxHolders)
			}
		})
	}
}

// hammerLog is what hammer saw: admission times by the limiter's clock
// (Acquisition.Time, shifted back by the provider's skew) and by the real
// clock when Acquire returned, both sorted, and the most holders of "slots"
// at once.
type hammerLog struct {
	decided, returned []int64
	maxHolders        int32
}

// hammer runs goroutines per provider acquiring req in a loop for d; skews[i]
// is how far provider i's clock is ahead.
func hammer(t *testing.T, ps []Provider, skews []time.Duration, goroutines int, d time.Duration, req Request) hammerLog {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var (
		mu      sync.Mutex
		out     hammerLog
		holders atomic.Int32
		most    atomic.Int32
		wg      sync.WaitGroup
	)
	for i, p := range ps {
		for range goroutines {
			wg.Go(func() {
				for {
					a, err := p.Acquire(ctx, req)
					if err != nil {
						if !errors.Is(err, context.DeadlineExceeded) {
							t.Error(err)
						}
						return
					}
					ret := time.Now().UnixNano()
					n := holders.Add(1)
					for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
					}
					mu.Lock()
					out.decided = append(out.decided, a.at-int64(skews[i]))
					out.returned = append(out.returned, ret)
					mu.Unlock()
					holders.Add(-1)
					if err := a.Update(Usage(req)); err != nil {
						t.Error(err)
					}
					if err := a.Release(); err != nil {
						t.Error(err)
					}
				}
			})
		}
	}
	wg.Wait()
	slices.Sort(out.decided)
	slices.Sort(out.returned)
	out.maxHolders = most.Load()
	return out
}

// checkLog asserts the algorithm's promise over sorted admission times, and
// that the limit was actually exercised (at least half of what it allows).
// latency is how late the times may be relative to the limiter's decisions
// (times taken when Acquire returned): windowed admissions are recorded late
// by MaxSkew, which covers it, but buckets promise their rate at decision
// time, so they get latency×rate of slack.
func checkLog(t *testing.T, alg Algorithm, log []int64, capacity int, window time.Duration, latency time.Duration) {
	t.Helper()
	if len(log) < 2 {
		t.Fatalf("%d admissions", len(log))
	}
	// Exercised: the limit was reached (capacity admitted within two windows)
	// and a fair share of what it allows was admitted (a quarter: skew margins,
	// leases and a loaded machine take their toll).
	span := time.Duration(log[len(log)-1] - log[0])
	allowed := float64(capacity) * (1 + span.Seconds()/window.Seconds())
	if i, _ := maxInWindow(log, int64(2*window), capacity-1); i < 0 || float64(len(log)) < 0.25*allowed {
		t.Fatalf("%s: %d admissions in %v, the limit allows %.0f: not exercised", alg, len(log), span, allowed)
	}
	switch alg {
	case SlidingWindow:
		if i, j := maxInWindow(log, int64(window), capacity); i >= 0 {
			t.Fatalf("%s: %d admissions within %v: from %v to %v", alg, j-i+1, window, time.Duration(log[i]-log[0]), time.Duration(log[j]-log[0]))
		}
	case FixedWindow:
		if i, j := maxInWindow(log, int64(window), 2*capacity); i >= 0 {
			t.Fatalf("%s: %d admissions within %v", alg, j-i+1, window)
		}
	default:
		perSecond := float64(capacity) / window.Seconds()
		if excess := bucketExcess(log, perSecond); excess > float64(capacity)+perSecond*latency.Seconds()+1e-6 {
			t.Fatalf("%s: %v admissions above the rate in some interval, burst %d", alg, excess, capacity)
		}
	}
	t.Logf("%s: %d admissions in %v (limit allows %.0f)", alg, len(log), span, allowed)
}
