package testutil_test

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/internal/testutil"
)

// A restarted server listens on the same port and keeps its JetStream store.
func TestRestartKeepsPortAndStore(t *testing.T) {
	opts := broker.EmbeddedOptions{StoreDir: t.TempDir()}
	srv := testutil.StartServer(t, opts)
	url := srv.ClientURL()
	nc := testutil.Connect(t, url)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	next := testutil.Restart(t, srv, opts, 100*time.Millisecond)
	if next.ClientURL() != url {
		t.Fatalf("restarted server listens on %s, want %s", next.ClientURL(), url)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		e, err := kv.Get(ctx, "k")
		if err != nil {
			return err
		}
		if string(e.Value()) != "v" {
			t.Fatalf("k = %q after the restart, want v", e.Value())
		}
		return nil
	})
}

// Every node routes to each of the others, not merely over as many connections (route pooling opens several per
// peer).
func TestStartClusterRoutesEveryNode(t *testing.T) {
	nodes := testutil.StartCluster(t, 3, broker.EmbeddedOptions{})
	for _, n := range nodes {
		if got := n.Server().NumRoutes(); got < 2 {
			t.Errorf("%s has %d route connections, want at least 2", n.Server().Name(), got)
		}
		rz, err := n.Server().Routez(nil)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, r := range rz.Routes {
			got[r.RemoteID] = true
		}
		want := map[string]bool{}
		for _, o := range nodes {
			if o != n {
				want[o.Server().ID()] = true
			}
		}
		if !maps.Equal(got, want) {
			t.Errorf("%s routes to servers %v, want %v", n.Server().Name(), slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
		}
	}
}
