package testutil

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/broker"
)

// StartServer starts an embedded nats-server with JetStream on a free loopback port, its store in t.TempDir()
// unless opts names one, and shuts it down (waiting for it) when the test ends.
func StartServer(t testing.TB, opts broker.EmbeddedOptions) *broker.Embedded {
	t.Helper()
	if opts.StoreDir == "" {
		opts.StoreDir = t.TempDir()
	}
	srv, err := broker.StartEmbedded(opts)
	if err != nil {
		t.Fatalf("start NATS server: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// Restart shuts srv down and starts a server in its place: the same options, the same client port and the same
// JetStream store, after down has passed. The new server is shut down when the test ends.
func Restart(t testing.TB, srv *broker.Embedded, opts broker.EmbeddedOptions, down time.Duration) *broker.Embedded {
	t.Helper()
	if opts.StoreDir == "" {
		t.Fatal("testutil.Restart: opts.StoreDir must name the store the server used")
	}
	addr, ok := srv.Server().Addr().(*net.TCPAddr)
	if !ok {
		t.Fatal("testutil.Restart: the server has no client listener")
	}
	opts.Port = addr.Port
	srv.Shutdown()
	time.Sleep(down)
	// The port was just freed; another process may briefly hold it.
	var next *broker.Embedded
	Eventually(t, 10*time.Second, func() error {
		var err error
		next, err = broker.StartEmbedded(opts)
		return err
	})
	t.Cleanup(next.Shutdown)
	return next
}

// StartCluster starts n servers that form one JetStream cluster on loopback, named n1…nN, and waits until every
// server routes to all the others. JetStream in a cluster needs its routes from the start, so the route ports are
// picked beforehand and every node gets the full list, its own included. base is applied to every node (its
// cluster and name fields are set here); a non-empty base.StoreDir is ignored.
func StartCluster(t testing.TB, n int, base broker.EmbeddedOptions) []*broker.Embedded {
	t.Helper()
	ports := FreePorts(t, n)
	routes := make([]string, n)
	for i, p := range ports {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", p)
	}
	nodes := make([]*broker.Embedded, n)
	for i, p := range ports {
		opts := base
		opts.StoreDir = ""
		opts.ServerName = fmt.Sprintf("n%d", i+1)
		opts.ClusterName = "c"
		opts.ClusterPort = p
		opts.Routes = routes
		nodes[i] = StartServer(t, opts)
	}
	Eventually(t, 30*time.Second, func() error {
		for _, s := range nodes {
			got, err := peers(s.Server())
			if err != nil {
				return err
			}
			if got != n-1 {
				return fmt.Errorf("%s routes to %d servers, want %d (%d route connections)", s.Server().Name(), got, n-1, s.Server().NumRoutes())
			}
		}
		return nil
	})
	return nodes
}

// peers counts the distinct servers s has routes to. NumRoutes counts route connections instead, several per peer
// with route pooling, so it can reach n-1 before every peer is connected.
func peers(s *server.Server) (int, error) {
	rz, err := s.Routez(nil)
	if err != nil {
		return 0, err
	}
	ids := map[string]bool{}
	for _, r := range rz.Routes {
		ids[r.RemoteID] = true
	}
	return len(ids), nil
}

// FreePorts returns n distinct TCP ports free on loopback at the time of the call.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// Connect connects to url with broker's defaults (reconnecting forever) and the extra options, and closes the
// connection when the test ends.
func Connect(t testing.TB, url string, extra ...nats.Option) *nats.Conn {
	t.Helper()
	opts, err := broker.Options{URL: url}.NATSOptions()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, append(opts, extra...)...)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}
