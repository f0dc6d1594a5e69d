package broker_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/internal/testutil"
)

// useKV proves JetStream works through nc: it creates a bucket, writes a key and reads it back.
func useKV(t *testing.T, nc *nats.Conn, bucket string, replicas int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, Replicas: replicas})
	if err != nil {
		t.Fatalf("create bucket %s: %v", bucket, err)
	}
	if _, err := kv.Put(ctx, "k", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "k")
	if err != nil || string(e.Value()) != "v1" {
		t.Fatalf("Get(k) = %v, %v; want v1", e, err)
	}
}

func TestStartEmbedded(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		port int
	}{{"free port", 0}, {"in-process only", -1}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := testutil.StartServer(t, broker.EmbeddedOptions{Port: tc.port, ServerName: "s-" + strings.ReplaceAll(tc.name, " ", "-")})
			if !e.Server().JetStreamEnabled() {
				t.Fatal("JetStream is not enabled")
			}
			nc, err := e.Connect()
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if got := nc.Opts.Name; got != "natsfleet" {
				t.Fatalf("connection name %q, want natsfleet", got)
			}
			useKV(t, nc, "inproc", 1)

			url := e.ClientURL()
			if tc.port == -1 {
				if url != "" || e.Server().Addr() != nil {
					t.Fatalf("Port -1: ClientURL %q, listener %v; want none", url, e.Server().Addr())
				}
				return
			}
			if !strings.HasPrefix(url, "nats://127.0.0.1:") || strings.HasSuffix(url, ":0") || strings.HasSuffix(url, ":4222") {
				t.Fatalf("ClientURL = %q, want nats://127.0.0.1:<random port>", url)
			}
			tcp, err := broker.Connect(broker.Options{URL: url})
			if err != nil {
				t.Fatal(err)
			}
			defer tcp.Close()
			if tcp.ConnectedUrl() != url {
				t.Fatalf("connected to %q, want %q", tcp.ConnectedUrl(), url)
			}
			useKV(t, tcp, "tcp", 1)
		})
	}
}

func TestEmbeddedFixedPort(t *testing.T) {
	t.Parallel()
	port := testutil.FreePorts(t, 1)[0]
	e := testutil.StartServer(t, broker.EmbeddedOptions{Port: port})
	if want := fmt.Sprintf("nats://127.0.0.1:%d", port); e.ClientURL() != want {
		t.Fatalf("ClientURL = %q, want %q", e.ClientURL(), want)
	}
	nc, err := broker.Connect(broker.Options{URL: e.ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
}

func TestEmbeddedPortInUse(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	start := time.Now()
	e, err := broker.StartEmbedded(broker.EmbeddedOptions{Port: l.Addr().(*net.TCPAddr).Port, StoreDir: t.TempDir(), ReadyTimeout: 30 * time.Second})
	if err == nil {
		e.Shutdown()
		t.Fatal("StartEmbedded on a port in use succeeded")
	}
	if !strings.HasPrefix(err.Error(), "broker: embedded server: ") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("error %q does not report the port in use", err)
	}
	// The failure comes from the server's log, not from waiting out ReadyTimeout.
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("StartEmbedded took %v to fail", d)
	}
}

func TestShutdown(t *testing.T) {
	t.Parallel()
	e, err := broker.StartEmbedded(broker.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	store := e.Server().StoreDir()
	if !strings.Contains(store, "natsfleet-jetstream-") {
		t.Fatalf("StoreDir %q is not a temp dir of ours", store)
	}
	if _, err := os.Stat(store); err != nil {
		t.Fatal(err)
	}
	addr := e.Server().Addr().String()
	nc, err := e.Connect(nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })

	var wg sync.WaitGroup
	for range 3 { // concurrent calls are safe; all return once the server is down
		wg.Go(func() {
			e.Shutdown()
			if e.Server().Running() {
				t.Error("Shutdown returned while the server is running")
			}
		})
	}
	wg.Wait()
	e.Shutdown()
	if _, err := os.Stat(store); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temp store %s still there after Shutdown: %v", store, err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("client port %s still accepts after Shutdown", addr)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("client connection not closed after Shutdown")
	}
}

func TestShutdownKeepsGivenStoreDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e, err := broker.StartEmbedded(broker.EmbeddedOptions{StoreDir: dir, Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	useKV(t, nc, "kept", 1)
	nc.Close()
	e.Shutdown()
	if entries, err := os.ReadDir(dir); err != nil || len(entries) == 0 {
		t.Fatalf("given StoreDir emptied by Shutdown: %v, %v", entries, err)
	}
}

func TestStartEmbeddedBadOptions(t *testing.T) {
	t.Parallel()
	cases := []struct {
		opts broker.EmbeddedOptions
		want string
	}{
		{broker.EmbeddedOptions{Port: -2}, "broker: bad port -2"},
		{broker.EmbeddedOptions{Port: 70000}, "broker: bad port 70000"},
		{broker.EmbeddedOptions{ClusterPort: -5, ClusterName: "c"}, "broker: bad cluster port -5"},
		{broker.EmbeddedOptions{ClusterPort: -1}, "broker: a cluster port needs a cluster name"},
		{broker.EmbeddedOptions{Routes: []string{"nats-route://127.0.0.1:6222"}}, "broker: routes need a cluster port"},
		{broker.EmbeddedOptions{ClusterName: "a.b", ClusterPort: -1}, `broker: bad cluster name "a.b"`},
		{broker.EmbeddedOptions{ClusterName: "c", ClusterPort: -1, Routes: []string{"127.0.0.1:6222"}}, `broker: bad route URL "127.0.0.1:6222": want nats-route://host:port`},
		{broker.EmbeddedOptions{Token: "t", User: "u"}, "broker: token authentication excludes users and nkeys"},
		{broker.EmbeddedOptions{Password: "p"}, "broker: password set without user"},
		{broker.EmbeddedOptions{ReadyTimeout: -time.Second}, "broker: negative ready timeout"},
	}
	for _, tc := range cases {
		e, err := broker.StartEmbedded(tc.opts)
		if err == nil {
			e.Shutdown()
			t.Errorf("StartEmbedded(%+v) succeeded, want %q", tc.opts, tc.want)
			continue
		}
		if err.Error() != tc.want {
			t.Errorf("StartEmbedded(%+v) = %q, want %q", tc.opts, err, tc.want)
		}
	}
}

func TestCluster(t *testing.T) {
	t.Parallel()
	nodes := testutil.StartCluster(t, 3, broker.EmbeddedOptions{})
	conns := make([]*nats.Conn, len(nodes))
	for i, n := range nodes {
		// ClusterURL is the URL the other servers list in their routes: its own route port, on loopback.
		vz, err := n.Server().Varz(nil)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("nats-route://127.0.0.1:%d", vz.Cluster.Port)
		if n.ClusterURL() != want || !slices.Contains(vz.Cluster.URLs, strings.TrimPrefix(want, "nats-route://")) {
			t.Fatalf("ClusterURL = %q, want %q, one of the routes %v", n.ClusterURL(), want, vz.Cluster.URLs)
		}
		nc, err := broker.Connect(broker.Options{URL: n.ClientURL()})
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		conns[i] = nc
	}

	sub, err := conns[2].SubscribeSync("cross.node")
	if err != nil {
		t.Fatal(err)
	}
	if err := conns[2].Flush(); err != nil {
		t.Fatal(err)
	}
	// Interest reaches node 1 over the route asynchronously: publish until node 3's subscriber gets a message.
	testutil.Eventually(t, 10*time.Second, func() error {
		if err := conns[0].Publish("cross.node", []byte("from n1")); err != nil {
			return err
		}
		m, err := sub.NextMsg(100 * time.Millisecond)
		if err != nil {
			return fmt.Errorf("no message on n3: %w", err)
		}
		if string(m.Data) != "from n1" {
			t.Fatalf("n3 got %q", m.Data)
		}
		return nil
	})

	// A bucket with three replicas needs a JetStream meta leader, elected after the routes form; a request sent
	// before that gets no answer, so each attempt has its own timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js1, err := jetstream.New(conns[0])
	if err != nil {
		t.Fatal(err)
	}
	var kv jetstream.KeyValue
	testutil.Eventually(t, 30*time.Second, func() error {
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		defer acancel()
		kv, err = js1.CreateKeyValue(actx, jetstream.KeyValueConfig{Bucket: "replicated", Replicas: 3})
		return err
	})
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	info, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	si := info.(*jetstream.KeyValueBucketStatus).StreamInfo()
	if si.Config.Replicas != 3 || si.Cluster == nil || len(si.Cluster.Replicas) != 2 {
		t.Fatalf("bucket stream: %d replicas configured, cluster %+v; want 3 (a leader and 2 followers)", si.Config.Replicas, si.Cluster)
	}
	js3, err := jetstream.New(conns[2])
	if err != nil {
		t.Fatal(err)
	}
	kv3, err := js3.KeyValue(ctx, "replicated")
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kv3.Get(ctx, "k"); err != nil || string(e.Value()) != "v" {
		t.Fatalf("Get on n3 = %v, %v; want v", e, err)
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile := writeFile(t, "user.nk", seed)
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	otherFile := writeFile(t, "other.nk", otherSeed)

	cases := []struct {
		name   string
		server broker.EmbeddedOptions
		good   broker.Options
		bad    []broker.Options
	}{
		{
			name:   "user",
			server: broker.EmbeddedOptions{User: "alice", Password: "s3cret"},
			good:   broker.Options{User: "alice", Password: "s3cret"},
			bad:    []broker.Options{{}, {User: "alice", Password: "wrong"}, {Token: "s3cret"}},
		},
		{
			name:   "token",
			server: broker.EmbeddedOptions{Token: "tok"},
			good:   broker.Options{Token: "tok"},
			bad:    []broker.Options{{}, {Token: "other"}, {User: "tok", Password: "tok"}},
		},
		{
			name:   "nkey",
			server: broker.EmbeddedOptions{NKeys: []string{pub}, User: "bob", Password: "pw"},
			good:   broker.Options{NKeySeedFile: seedFile},
			bad:    []broker.Options{{}, {NKeySeedFile: otherFile}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := testutil.StartServer(t, tc.server)
			tc.good.URL = e.ClientURL()
			nc, err := broker.Connect(tc.good)
			if err != nil {
				t.Fatalf("Connect with good credentials: %v", err)
			}
			nc.Close()
			for _, bad := range tc.bad {
				bad.URL = e.ClientURL()
				nc, err := broker.Connect(bad, nats.NoReconnect())
				if err == nil {
					nc.Close()
					t.Fatalf("Connect(%+v) succeeded against %s auth", bad, tc.name)
				}
				if !errors.Is(err, nats.ErrAuthorization) || !strings.HasPrefix(err.Error(), "broker: connect to "+e.ClientURL()+": ") {
					t.Fatalf("Connect(%+v) error %q, want an authorization violation", bad, err)
				}
			}
			// In-process connections authenticate themselves with the server's user or token.
			if tc.server.User != "" || tc.server.Token != "" {
				inproc, err := e.Connect()
				if err != nil {
					t.Fatalf("in-process Connect: %v", err)
				}
				useKV(t, inproc, "auth", 1)
				inproc.Close()
			}
		})
	}
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := t.TempDir() + "/" + name
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestTLS(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	e := testutil.StartServer(t, broker.EmbeddedOptions{TLSConfig: pki.serverConfig(t)})
	url := e.ClientURL()
	if !strings.HasPrefix(url, "tls://127.0.0.1:") {
		t.Fatalf("ClientURL = %q, want tls://127.0.0.1:<port>", url)
	}
	clientCert, err := tls.LoadX509KeyPair(pki.clientCert, pki.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	good := []broker.Options{
		{URL: url, TLSCertFile: pki.clientCert, TLSKeyFile: pki.clientKey, TLSCAFile: pki.caFile},
		// nats:// works too: the files alone turn TLS on.
		{URL: strings.Replace(url, "tls://", "nats://", 1), TLSCertFile: pki.clientCert, TLSKeyFile: pki.clientKey, TLSCAFile: pki.caFile},
		{URL: url, TLSConfig: tlsClientConfig(pki, clientCert)},
	}
	for _, o := range good {
		nc, err := broker.Connect(o)
		if err != nil {
			t.Fatalf("Connect(%+v): %v", o, err)
		}
		if !nc.TLSRequired() {
			t.Fatalf("connection via %s is not TLS", o.URL)
		}
		if _, err := nc.TLSConnectionState(); err != nil {
			t.Fatalf("TLS state: %v", err)
		}
		nc.Close()
	}
	bad := []broker.Options{
		{URL: url, TLSCAFile: pki.caFile},                                                     // no client certificate
		{URL: url, TLSCertFile: pki.clientCert, TLSKeyFile: pki.clientKey},                    // server not verifiable
		{URL: url, TLSCertFile: pki.caFile, TLSKeyFile: pki.clientKey, TLSCAFile: pki.caFile}, // key does not match
	}
	for _, o := range bad {
		nc, err := broker.Connect(o, nats.NoReconnect())
		if err == nil {
			nc.Close()
			t.Fatalf("Connect(%+v) succeeded", o)
		}
	}
	inproc, err := e.Connect()
	if err != nil {
		t.Fatalf("in-process Connect to a TLS server: %v", err)
	}
	inproc.Close()
}

func TestStartEmbeddedJetStreamFailure(t *testing.T) {
	t.Parallel()
	notADir := writeFile(t, "store", []byte("x"))
	e, err := broker.StartEmbedded(broker.EmbeddedOptions{StoreDir: notADir})
	if err == nil {
		e.Shutdown()
		t.Fatal("StartEmbedded with a file as store succeeded")
	}
	if want := "broker: embedded server: Can't start JetStream: storage directory is not a directory"; err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
}
