package limits

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/internal/testutil"
)

// TestKVPartitions: sets sharing a name share each partition's budget, and
// a partition's key leaves the bucket once its state is at rest.
func TestKVPartitions(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	window := time.Second
	sets := sharedSets(t, srv, "tenants", 2, SetOptions{MaxSkew: 10 * time.Millisecond, ResourceLeaseTTL: 2 * time.Second},
		CallLimit{Window: window, Capacity: 3, PerPartition: true},
		ResourceLimit{Key: "conns", Capacity: 1, PerPartition: true})
	for _, part := range []string{"acme", "globex"} {
		for i := range 3 {
			if _, err := sets[i%2].TryAcquireIn(ctx, part, Request{"conns": 0}); err != nil {
				t.Fatalf("%s call %d: %v", part, i, err)
			}
		}
		for _, s := range sets {
			if _, err := s.TryAcquireIn(ctx, part, Request{"conns": 0}); !errors.Is(err, ErrWouldWait) {
				t.Fatalf("%s fourth call: %v, want ErrWouldWait", part, err)
			}
		}
	}
	if st := sets[0].Stats()["call_count"]; st.Extra["partitions"] != 2 || st.Available != 3 {
		t.Fatalf("Stats() of a partitioned set: %+v, want 2 partitions, 3 available", st)
	}
	if st := sets[1].StatsIn("acme")["call_count"]; st.Available != 0 {
		t.Fatalf("StatsIn(acme) shows %v available, want 0", st.Available)
	}
	// The partition's key lives as long as its state may not be at rest: the
	// longer of the window and the resource lease, twice MaxSkew, a second of
	// slack, in whole seconds.
	b := sets[0].be.(*kvBackend)
	if want := 4 * time.Second; b.msgTTL != want {
		t.Fatalf("partition keys live %v, want %v", b.msgTTL, want)
	}
	js, err := jetstream.New(testutil.Connect(t, srv.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	key := partitionKey("tenants", "acme")
	if ttl := keyTTL(t, js, DefaultBucket, key); ttl != "4s" {
		t.Fatalf("key %s lives %q, want 4s", key, ttl)
	}
	used := time.Now()
	testutil.Eventually(t, 10*time.Second, func() error {
		if _, err := kv.Get(ctx, key); !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("key %s still there %v after its last write (err %v)", key, time.Since(used), err)
		}
		return nil
	})
	if d := time.Since(used); d < b.msgTTL {
		t.Fatalf("key %s gone %v after its last write, before its TTL %v", key, d, b.msgTTL)
	}
	// A partition whose key expired starts afresh, for both sets.
	for i := range 3 {
		if _, err := sets[i%2].TryAcquireIn(ctx, "acme", Request{"conns": 0}); err != nil {
			t.Fatalf("acme after its key expired, call %d: %v", i, err)
		}
	}
	// A slot held renews the partition's key: it outlives its TTL.
	a, err := sets[0].AcquireIn(ctx, "initech", nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(b.msgTTL + time.Second)
	if _, err := sets[1].TryAcquireIn(ctx, "initech", nil); !errors.Is(err, ErrWouldWait) {
		t.Fatalf("the slot of initech held past the key's TTL was free for another set: %v", err)
	}
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
}

// TestKVPartitionsWithoutTTL: in a bucket without per-message TTL (an older
// server's, or one made without it) partitions work, their keys stay, and
// NewSet says so once.
func TestKVPartitionsWithoutTTL(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, srv.ClientURL())
	ctx := context.Background()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "nottl", History: 1})
	if err != nil {
		t.Fatal(err)
	}
	rec := &logRecorder{}
	s := newSet(t, SetOptions{Name: "tenants", Conn: nc, Bucket: "nottl", Logger: slog.New(rec)},
		CallLimit{Window: time.Second, Capacity: 1, PerPartition: true})
	if _, err := s.TryAcquireIn(ctx, "acme", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TryAcquireIn(ctx, "acme", nil); !errors.Is(err, ErrWouldWait) {
		t.Fatalf("second call of acme: %v, want ErrWouldWait", err)
	}
	if msgs := rec.messages(); len(msgs) != 1 || !strings.Contains(msgs[0], "no per-message TTL") {
		t.Fatalf("warnings %q, want one about the missing TTL", msgs)
	}
	if ttl := keyTTL(t, js, "nottl", partitionKey("tenants", "acme")); ttl != "" {
		t.Fatalf("a key of a bucket without per-message TTL has a time to live %q", ttl)
	}
	if _, err := kv.Get(ctx, partitionKey("tenants", "acme")); err != nil {
		t.Fatal(err)
	}
}

// keyTTL is the time to live the last write of key gave it ("" for none).
func keyTTL(t *testing.T, js jetstream.JetStream, bucket, key string) string {
	t.Helper()
	st, err := js.Stream(context.Background(), "KV_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(context.Background(), "$KV."+bucket+"."+key)
	if err != nil {
		t.Fatal(err)
	}
	return m.Header.Get(jetstream.MsgTTLHeader)
}
