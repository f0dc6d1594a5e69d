package limits

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

const (
	// setupTimeout bounds NewSet's bucket and key setup: long enough to wait
	// out a stream leader election (4–9s) and a reconnection.
	setupTimeout = 30 * time.Second
	// releaseTimeout bounds Release and Close's return of leased units: calls
	// that take no context.
	releaseTimeout = 10 * time.Second
	// markerTTL is how long a bucket made by NewSet keeps the marker the server
	// leaves where a key's time to live ended, so that watchers see the key go.
	markerTTL = time.Minute
	// ttlSlack pads a partition key's time to live past the time its state is
	// at rest for sure.
	ttlSlack = time.Second
	// clusterReplicas is the default replicas on a cluster.
	clusterReplicas = 3
	// setupAttemptTimeout bounds each step of the setup: making an R3
	// bucket takes a cluster a moment.
	setupAttemptTimeout = 5 * time.Second
)

// bucketWarned holds the buckets whose settings this process reported, so
// that each gets one warning however many sets use it.
var bucketWarned sync.Map

// openBucket binds the set's bucket, creating it if missing with history 1,
// the asked replicas (default: 3 on a cluster where 3 fit, else 1) and, where
// the server has it, per-message TTL. An outage is waited out until ctx ends.
func (b *kvBackend) openBucket(ctx context.Context) error {
	o := b.s.opts
	want := o.Replicas
	if want == 0 {
		want = 1
		if o.Conn.ConnectedClusterName() != "" {
			want = clusterReplicas
		}
	}
	created := false
	err := waitOut(ctx, func(ctx context.Context) error {
		kv, err := b.js.KeyValue(ctx, o.Bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, created, err = b.createBucket(ctx, want)
		}
		b.kv = kv
		return err
	})
	if err != nil {
		return fmt.Errorf("limits: shared set %q: bucket %q: %w", o.Name, o.Bucket, err)
	}
	var cfg jetstream.StreamConfig
	err = waitOut(ctx, func(ctx context.Context) error {
		st, err := b.kv.Status(ctx)
		if err != nil {
			return err
		}
		bs, ok := st.(*jetstream.KeyValueBucketStatus)
		if !ok {
			return fmt.Errorf("unexpected bucket status %T", st)
		}
		cfg = bs.StreamInfo().Config
		return nil
	})
	if err != nil {
		return fmt.Errorf("limits: shared set %q: bucket %q: %w", o.Name, o.Bucket, err)
	}
	if !created && (cfg.Replicas != want || cfg.MaxMsgsPerSubject != 1) {
		b.warnBucket("limits: bucket exists with other settings than NewSet would make; used as it is",
			"replicas", cfg.Replicas, "want_replicas", want, "history", cfg.MaxMsgsPerSubject, "want_history", 1)
	}
	if !b.s.partitioned {
		return nil
	}
	if !cfg.AllowMsgTTL {
		b.warnBucket("limits: bucket has no per-message TTL (made without it, or by a nats-server before 2.11): the keys of idle partitions stay in it")
		return nil
	}
	// The server counts a message's time to live in whole seconds, rounding
	// down: round up.
	b.msgTTL = (b.restHorizon() + ttlSlack + time.Second - 1).Truncate(time.Second)
	return nil
}

// createBucket makes the bucket with want replicas. Where the server cannot
// place them and the caller did not ask for them, it makes an R1 bucket and
// says so.
func (b *kvBackend) createBucket(ctx context.Context, want int) (jetstream.KeyValue, bool, error) {
	o := b.s.opts
	cfg := jetstream.KeyValueConfig{Bucket: o.Bucket, History: 1, Replicas: want, LimitMarkerTTL: markerTTL,
		Description: "natsfleet shared limit sets"}
	for {
		kv, err := b.js.CreateKeyValue(ctx, cfg)
		switch {
		case err == nil:
			return kv, true, nil
		case errors.Is(err, jetstream.ErrBucketExists):
			kv, err = b.js.KeyValue(ctx, o.Bucket)
			return kv, false, err
		case errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported) && cfg.LimitMarkerTTL != 0:
			cfg.LimitMarkerTTL = 0 // a server before 2.11: no per-message TTL
		case o.Replicas == 0 && cfg.Replicas > 1 && tooFewServers(err):
			b.warnBucket("limits: the cluster cannot place the default replicas now; bucket made with 1",
				"want_replicas", cfg.Replicas, "err", err)
			cfg.Replicas = 1
		default:
			return nil, false, err
		}
	}
}

// tooFewServers reports whether err says the cluster has fewer servers
// (running) than the replicas asked.
func tooFewServers(err error) bool {
	var api *jetstream.APIError
	if !errors.As(err, &api) {
		return false
	}
	switch api.ErrorCode {
	case 10005, // no suitable peers for placement
		10023, // insufficient resources
		10074: // replicas > 1 not supported in non-clustered mode
		return true
	}
	return false
}

func (b *kvBackend) warnBucket(msg string, args ...any) {
	if _, seen := bucketWarned.LoadOrStore(b.s.opts.Bucket+"\x00"+msg, struct{}{}); seen {
		return
	}
	b.s.opts.Logger.Warn(msg, append([]any{"bucket", b.s.opts.Bucket, "set", b.name}, args...)...)
}

// restHorizon bounds how long after its last write a key of this set still
// counts something: the longest window (an emptied bucket refills in one
// too) or resource lease, and the skew margins of the writer and the reader.
func (b *kvBackend) restHorizon() time.Duration {
	var d time.Duration
	for _, def := range b.s.defs {
		d = max(d, def.window)
	}
	if b.hasRes {
		d = max(d, b.s.opts.ResourceLeaseTTL)
	}
	return d + 2*b.s.opts.MaxSkew
}

// waitOut runs op until it succeeds, fails other than by an outage, or ctx
// ends, backing off between outages.
func waitOut(ctx context.Context, op func(ctx context.Context) error) error {
	for n := 0; ; n++ {
		actx, cancel := context.WithTimeout(ctx, setupAttemptTimeout)
		err := op(actx)
		cancel()
		if err == nil || !outage(err) {
			return err
		}
		d := min(int64(outageMax), int64(outageBase)<<min(n, 16))
		t := time.NewTimer(time.Duration(d/2 + rand.Int64N(d/2+1)))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}
