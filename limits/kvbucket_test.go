package limits

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/internal/testutil"
)

// bucketConfig reads the stream behind a KV bucket.
func bucketConfig(t *testing.T, nc *nats.Conn, bucket string) jetstream.StreamConfig {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var cfg jetstream.StreamConfig
	testutil.Eventually(t, 10*time.Second, func() error {
		st, err := js.Stream(context.Background(), "KV_"+bucket)
		if err != nil {
			return err
		}
		cfg = st.CachedInfo().Config
		return nil
	})
	return cfg
}

// TestKVReplicas: NewSet makes an R3 bucket on a 3-node cluster and an R1
// bucket on a lone server unless told otherwise; it uses a bucket that
// exists as it is, with one warning per process however many sets use it.
func TestKVReplicas(t *testing.T) {
	t.Parallel()
	calls := CallLimit{Window: time.Minute, Capacity: 10}
	open := func(t *testing.T, nc *nats.Conn, opts SetOptions) *Set {
		t.Helper()
		opts.Conn = nc
		return newSet(t, opts, calls)
	}
	t.Run("server", func(t *testing.T) {
		t.Parallel()
		nc := testutil.Connect(t, testutil.StartServer(t, broker.EmbeddedOptions{}).ClientURL())
		open(t, nc, SetOptions{Name: "lone"})
		if cfg := bucketConfig(t, nc, DefaultBucket); cfg.Replicas != 1 || cfg.MaxMsgsPerSubject != 1 || !cfg.AllowMsgTTL {
			t.Fatalf("bucket on a lone server: replicas %d history %d per-message TTL %v; want 1, 1, true",
				cfg.Replicas, cfg.MaxMsgsPerSubject, cfg.AllowMsgTTL)
		}
	})
	t.Run("two-node cluster", func(t *testing.T) {
		t.Parallel()
		nodes := testutil.StartCluster(t, 2, broker.EmbeddedOptions{})
		nc := testutil.Connect(t, nodes[0].ClientURL())
		rec := &logRecorder{}
		open(t, nc, SetOptions{Name: "pair", Logger: slog.New(rec)})
		if cfg := bucketConfig(t, nc, DefaultBucket); cfg.Replicas != 1 {
			t.Fatalf("bucket on a 2-node cluster: %d replicas, want 1 (3 do not fit)", cfg.Replicas)
		}
		if msgs := rec.messages(); len(msgs) != 1 || !strings.Contains(msgs[0], "cannot place the default replicas now; bucket made with 1") {
			t.Fatalf("warnings %q, want one saying the bucket has 1 replica", msgs)
		}
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		nodes := testutil.StartCluster(t, 3, broker.EmbeddedOptions{})
		nc := testutil.Connect(t, nodes[1].ClientURL())
		rec := &logRecorder{}
		logger := slog.New(rec)
		open(t, nc, SetOptions{Name: "ha", Logger: logger})
		open(t, nc, SetOptions{Name: "two", Bucket: "r2", Replicas: 2, Logger: logger})
		for bucket, want := range map[string]int{DefaultBucket: 3, "r2": 2} {
			if cfg := bucketConfig(t, nc, bucket); cfg.Replicas != want {
				t.Fatalf("bucket %s on a 3-node cluster: %d replicas, want %d", bucket, cfg.Replicas, want)
			}
		}
		// A bucket made by hand with one replica and more history: used as
		// it is, with one warning for both sets.
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: "byhand", History: 5}); err != nil {
			t.Fatal(err)
		}
		s1 := open(t, nc, SetOptions{Name: "a", Bucket: "byhand", Logger: logger})
		open(t, testutil.Connect(t, nodes[2].ClientURL()), SetOptions{Name: "b", Bucket: "byhand", Logger: logger})
		if cfg := bucketConfig(t, nc, "byhand"); cfg.Replicas != 1 || cfg.MaxMsgsPerSubject != 5 {
			t.Fatalf("the bucket made by hand was changed: replicas %d history %d", cfg.Replicas, cfg.MaxMsgsPerSubject)
		}
		if _, err := s1.Acquire(context.Background(), nil); err != nil {
			t.Fatalf("acquire in a bucket made by hand: %v", err)
		}
		var warnings []string
		for _, m := range rec.messages() {
			if strings.Contains(m, "bucket exists with other settings") {
				warnings = append(warnings, m)
			}
		}
		if len(warnings) != 1 {
			t.Fatalf("warnings about the bucket made by hand: %q, want one (all: %q)", warnings, rec.messages())
		}
	})
}

// TestKVWaitsOutServerRestart: with the server down, acquisitions wait, and
// are served once it is back; none fails.
func TestKVWaitsOutServerRestart(t *testing.T) {
	t.Parallel()
	opts := broker.EmbeddedOptions{StoreDir: t.TempDir()}
	srv := testutil.StartServer(t, opts)
	nc := testutil.Connect(t, srv.ClientURL())
	// Closed before the test's cleanups stop the restarted server.
	s, err := NewSet(SetOptions{Name: "restart", Conn: nc, Logger: slog.New(slog.DiscardHandler)},
		CallLimit{Window: time.Hour, Capacity: 100}, ResourceLimit{Key: "slot", Capacity: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Acquire(ctx, Request{"slot": 0}); err != nil {
		t.Fatal(err)
	}
	const waiters = 4
	errs := make(chan error, waiters)
	var down time.Time
	go func() { // acquire once the connection sees the server gone
		for nc.IsConnected() {
			time.Sleep(time.Millisecond)
		}
		down = time.Now()
		for range waiters {
			go func() {
				a, err := s.Acquire(ctx, nil)
				if err == nil {
					err = a.Release()
				}
				errs <- err
			}()
		}
	}()
	testutil.Restart(t, srv, opts, 2*time.Second)
	for range waiters {
		if err := <-errs; err != nil {
			t.Fatalf("an acquisition while the server was down: %v", err)
		}
	}
	t.Logf("served %v after the server went down for 2s", time.Since(down).Round(time.Millisecond))
	// Each admission counted once, or twice where a write's answer was lost
	// with the connection (counting twice is under-admission, never over).
	testutil.Eventually(t, 10*time.Second, func() error {
		got := s.Stats()["call_count"].Extra["current_requests"]
		if got < 1+waiters || got > 1+2*waiters {
			return fmt.Errorf("%v calls counted, want %d to %d", got, 1+waiters, 1+2*waiters)
		}
		if slots := s.Stats()["slot"].Available; slots != 3 {
			return fmt.Errorf("%v of 3 slots free after every release", slots)
		}
		return nil
	})
}

// TestKVWaitersHearReleasesAfterRestart: after a server restart, a waiter in
// one process hears at once of a release in another. The restart took the
// sets' watches with it, and each starts a new one when its connection is back.
func TestKVWaitersHearReleasesAfterRestart(t *testing.T) {
	t.Parallel()
	opts := broker.EmbeddedOptions{StoreDir: t.TempDir()}
	srv := testutil.StartServer(t, opts)
	open := func() *Set {
		s, err := NewSet(SetOptions{Name: "rewatch", Conn: testutil.Connect(t, srv.ClientURL()),
			Logger: slog.New(slog.DiscardHandler)}, ResourceLimit{Key: "slot", Capacity: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() }) // before the connections' and the server's cleanups
		return s
	}
	holder, waiter := open(), open()
	testutil.Restart(t, srv, opts, time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := holder.Acquire(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan time.Time, 1)
	go func() {
		b, err := waiter.Acquire(ctx, nil)
		if err != nil {
			t.Error(err)
		} else {
			_ = b.Release()
		}
		got <- time.Now()
	}()
	time.Sleep(200 * time.Millisecond)
	released := time.Now()
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	// Without a watch the waiter would wait for the holder's lease to run out (ResourceLeaseTTL, 10 s).
	if d := (<-got).Sub(released); d > 2*time.Second {
		t.Fatalf("the waiter got the slot %s after its release, want within 2s", d)
	} else {
		t.Logf("the waiter got the slot %s after its release", d.Round(time.Millisecond))
	}
}
