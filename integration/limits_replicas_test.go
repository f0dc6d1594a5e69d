package integration

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/internal/testutil"
	"github.com/natsfleet/natsfleet/limits"
)

// TestPoolLimitReplicas: a process pool's Limits on a 3-node cluster live in
// a bucket with the replicas the pool asks for, and its workers share them.
func TestPoolLimitReplicas(t *testing.T) {
	nodes := testutil.StartCluster(t, 3, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, nodes[0].ClientURL())
	p := newPool(t, demo.APIWorkerKind, client.Options{Mode: client.Process, MaxWorkers: 2, Conn: nc, LimitReplicas: 2,
		Limits: []limits.Limit{limits.CallLimit{Window: time.Hour, Capacity: 4}}}, "key")
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(context.Background(), "KV_"+limits.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.Replicas; got != 2 {
		t.Fatalf("the pool's limits bucket has %d replicas, want 2", got)
	}
	// Four calls in the hour for the pool's two workers together: the fifth waits.
	futs := make([]*client.Future[string], 4)
	for i := range futs {
		futs[i] = client.Call[string](p, "CallAPI", fmt.Sprint(i))
	}
	if _, err := client.Gather(context.Background(), futs); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	fifth := client.Call[string](p, "CallAPI", "fifth")
	if _, err := fifth.Result(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a fifth call of a pool limited to 4: %v, want it to wait", err)
	}
	fifth.Cancel()
	if _, err := fifth.Result(context.Background()); !errors.Is(err, context.Canceled) {
		t.Fatalf("the fifth call, canceled: %v", err)
	}
}
