package limits

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/internal/testutil"
)

// Run with: go test -run '^$' -bench . -benchtime 3s ./limits/
// The KV benchmarks compare, in the same run against the same server: a raw
// single-key get+update CAS loop; Exact mode (one CAS per Acquire); Lease
// mode. procs=4 runs four child processes of 8 goroutines on one set.

// unbound limits never make a benchmark wait: they measure overhead.
func unbound(alg Algorithm) Limit {
	return CallLimit{Window: time.Second, Capacity: 1e12, Algorithm: alg}
}

func BenchmarkMemoryAcquireRelease(b *testing.B) {
	ctx := context.Background()
	for _, alg := range []Algorithm{SlidingWindow, FixedWindow, TokenBucket, GCRA, LeakyBucket} {
		s := newSet(b, SetOptions{}, unbound(alg))
		b.Run(string(alg), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				a, err := s.Acquire(ctx, nil)
				if err != nil {
					b.Fatal(err)
				}
				a.Release()
			}
		})
	}
	// A set like the seed's API worker: calls, tokens with refunds, connections.
	s := newSet(b, SetOptions{}, unbound(SlidingWindow),
		RateLimit{Key: "tokens", Window: time.Minute, Capacity: 1e12, Algorithm: TokenBucket},
		ResourceLimit{Key: "connections", Capacity: 1 << 30})
	req, use := Request{"tokens": 100}, Usage{"tokens": 80}
	b.Run("call+tokens+resource", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			a, err := s.Acquire(ctx, req)
			if err != nil {
				b.Fatal(err)
			}
			a.Update(use)
			a.Release()
		}
	})
	b.Run("call+tokens+resource/parallel8", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(max(1, 8/runtime.GOMAXPROCS(0))) // 8 goroutines (more on a machine of more than 8 CPUs)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				a, err := s.Acquire(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				a.Update(use)
				a.Release()
			}
		})
	})
}

func BenchmarkRawKVCAS(b *testing.B) {
	srv := testutil.StartServer(b, broker.EmbeddedOptions{})
	b.Run("goroutines=1", func(b *testing.B) {
		kv, err := rawKV(testutil.Connect(b, srv.ClientURL()), "raw1")
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		for b.Loop() {
			if err := rawCAS(ctx, kv, "raw1"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("procs=4", func(b *testing.B) {
		benchProcs(b, 4, childConfig{URL: srv.ClientURL(), Name: "raw4", Raw: true, Goroutines: 8})
	})
}

// rawKV binds (or creates) the raw benchmark's bucket and key.
func rawKV(nc *nats.Conn, key string) (jetstream.KeyValue, error) {
	ctx := context.Background()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "raw", History: 1})
	if err != nil {
		return nil, err
	}
	if _, err := kv.Create(ctx, key, rawPayload); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, err
	}
	return kv, nil
}

// rawPayload is about the size of a one-limit set's state.
var rawPayload = make([]byte, 64)

// rawCAS is one read-modify-write of key, retried until it wins, as a set's
// transaction is.
func rawCAS(ctx context.Context, kv jetstream.KeyValue, key string) error {
	for {
		e, err := kv.Get(ctx, key)
		if err != nil {
			return err
		}
		_, err = kv.Update(ctx, key, rawPayload, e.Revision())
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return err
		}
	}
}

func BenchmarkKVExact(b *testing.B) { benchKV(b, Exact) }

func BenchmarkKVLease(b *testing.B) { benchKV(b, Lease) }

func benchKV(b *testing.B, mode KVMode) {
	srv := testutil.StartServer(b, broker.EmbeddedOptions{})
	ctx := context.Background()
	b.Run("goroutines=1", func(b *testing.B) {
		s := newSet(b, SetOptions{Name: "bench1", Conn: testutil.Connect(b, srv.ClientURL()), Mode: mode}, unbound(SlidingWindow))
		for b.Loop() {
			a, err := s.Acquire(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			a.Release()
		}
	})
	b.Run("procs=4", func(b *testing.B) {
		benchProcs(b, 4, childConfig{URL: srv.ClientURL(), Name: fmt.Sprintf("bench4-%v", mode), Mode: mode,
			Limits: marshalLimits(b, unbound(SlidingWindow)), Goroutines: 8})
	})
}
