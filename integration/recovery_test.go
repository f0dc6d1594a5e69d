package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/internal/testutil"
	"github.com/natsfleet/natsfleet/limits"
)

// TestServerRestartLosesNoCall restarts the NATS server in place (same port, same store) with 200 calls in flight
// without a deadline, in process and fleet mode: every future resolves, with its result (the pool reconciles the
// calls whose replies or requests the outage lost), no call runs twice, the pool keeps its size and the agents get
// all their capacity back once the pool stops.
func TestServerRestartLosesNoCall(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode client.Mode
		down time.Duration
	}{
		{"process 1.5s", client.Process, 1500 * time.Millisecond},
		{"process 4s", client.Process, 4 * time.Second},
		{"fleet 1.5s", client.Fleet, 1500 * time.Millisecond},
		{"fleet 4s", client.Fleet, 4 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := broker.EmbeddedOptions{StoreDir: t.TempDir()}
			srv := testutil.StartServer(t, opts)
			url := srv.ClientURL()
			restartLosesNoCall(t, tc.mode, url, func() { testutil.Restart(t, srv, opts, tc.down) })
		})
	}
}

// restartLosesNoCall runs the restart scenario against the server at url; restart takes it down and back.
func restartLosesNoCall(t *testing.T, mode client.Mode, url string, restart func()) {
	t.Helper()
	const workers, calls = 4, 200
	var agents []*exec.Cmd
	if mode == client.Fleet {
		agents = append(agents, startTestAgent(t, url, "--capacity", "2"), startTestAgent(t, url, "--capacity", "2"))
	}
	nc := testutil.Connect(t, url)
	dir := t.TempDir()
	p := newPool(t, ledgerKind, client.Options{Mode: mode, MaxWorkers: workers, Conn: nc,
		Limits: []limits.Limit{limits.ResourceLimit{Key: "slots", Capacity: 2}}}, dir)
	futs := make([]*client.Future[int], calls)
	for i := range futs {
		// 40 ms a call, 50 calls a worker: two seconds of work, the outage in the middle of it.
		futs[i] = client.Call[int](p, "Run", i, 40*time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	restart()
	got := settle(t, futs, 60*time.Second)
	failed := 0
	for i, r := range got {
		switch {
		case r.err != nil:
			failed++
			t.Errorf("call %d: %v", i, r.err)
		case r.v != 2*i:
			t.Errorf("call %d = %d, want %d", i, r.v, 2*i)
		}
	}
	if ran := checkNoneTwice(t, dir); ran != calls-failed {
		t.Errorf("%d calls ran, want the %d that succeeded", ran, calls-failed)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if n := p.Stats().TotalWorkers; n != workers {
			return fmt.Errorf("pool has %d workers, want %d", n, workers)
		}
		return nil
	})
	// New calls work.
	for i := range 8 {
		if v := result(t, client.Call[int](p, "Run", i, time.Duration(0))); v != 2*i {
			t.Fatalf("Run(%d) after the restart = %d", i, v)
		}
	}
	// The pool's limit, in JetStream KV, survived the restart and is still exact: 24 calls on 4 workers holding one
	// of its 2 slots for 50 ms each never overlap more than 2 and take at least 12 × 50 ms. Its waiters hear of
	// releases again (the limit set watches its key anew after a reconnect): within 3 s, not the 5 s and more of
	// waiters that only the holders' keepalives wake.
	spans := make([]*client.Future[any], 24)
	began := time.Now()
	for i := range spans {
		spans[i] = client.Call[any](p, "Span", 50*time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := client.Gather(ctx, spans); err != nil {
		t.Fatalf("calls holding the limit after the restart: %v", err)
	}
	if most, n := maxOverlap(t, dir); most != 2 || n != 24 || time.Since(began) < 600*time.Millisecond ||
		time.Since(began) > 3*time.Second {
		t.Errorf("%d spans held the 2-slot limit, at most %d at once, in %s; want 24, 2, 600ms to 3s", n, most,
			time.Since(began))
	}
	st := p.Stats()
	t.Logf("reconciles %d, calls sent again %d, replacements pending %d", st.Reconciles, st.Resent, st.Replacing)
	sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer scancel()
	if err := p.Stop(sctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if mode == client.Fleet {
		testutil.Eventually(t, 20*time.Second, func() error {
			if free, capacity := freeCapacity(t, url); free != capacity {
				return fmt.Errorf("agents have %d of %d free after the pool stopped", free, capacity)
			}
			return nil
		})
	}
	// While the restarted server is still up: its cleanup comes before theirs.
	for _, a := range agents {
		stopProcess(t, a)
	}
}

// TestDebianServerRestartLosesNoCall is the restart scenario against the nats-server of Debian's package (2.9),
// when it is installed.
func TestDebianServerRestartLosesNoCall(t *testing.T) {
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		t.Skip("nats-server is not installed (apt-get install -y nats-server): the restart runs against the embedded server only")
	}
	store := t.TempDir()
	port := testutil.FreePorts(t, 1)[0]
	args := []string{"-js", "-sd", store, "-a", "127.0.0.1", "-p", strconv.Itoa(port)}
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, args...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	srv := start()
	stop := func(cmd *exec.Cmd) {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	testutil.Eventually(t, 10*time.Second, func() error {
		nc, err := nats.Connect(url)
		if err == nil {
			nc.Close()
		}
		return err
	})
	t.Cleanup(func() { stop(srv) })
	for _, mode := range []client.Mode{client.Process, client.Fleet} {
		t.Run(string(mode), func(t *testing.T) {
			restartLosesNoCall(t, mode, url, func() {
				stop(srv)
				time.Sleep(1500 * time.Millisecond)
				srv = start()
			})
		})
	}
}

// TestClusterNodeKillLosesNoCall SIGKILLs the server the pool's connection uses, in a cluster of three server
// processes; the workers' agents are on the other two. The connection moves to another server at once, and the
// calls in flight (some of whose requests or replies went down with the server) all resolve with their results.
func TestClusterNodeKillLosesNoCall(t *testing.T) {
	ports := testutil.FreePorts(t, 6)
	routes := make([]string, 3)
	for i := range routes {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3+i])
	}
	nodes := make([]*natsProc, 3)
	urls := make([]string, 3)
	for i := range nodes {
		nodes[i] = startNATSProc(t, broker.EmbeddedOptions{Port: ports[i], StoreDir: t.TempDir(),
			ServerName: fmt.Sprintf("n%d", i+1), ClusterName: "c", ClusterPort: ports[3+i], Routes: routes})
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", ports[i])
	}
	a2 := startTestAgent(t, urls[1]+","+urls[2], "--capacity", "2")
	a3 := startTestAgent(t, urls[2]+","+urls[1], "--capacity", "2")
	nc := testutil.Connect(t, strings.Join(urls, ","), nats.DontRandomize())
	testutil.Eventually(t, 10*time.Second, func() error {
		if free, _ := freeCapacity(t, urls[0]); free != 4 {
			return fmt.Errorf("%d agent slots seen from n1, want 4", free)
		}
		return nil
	})
	dir := t.TempDir()
	p := newPool(t, ledgerKind, client.Options{Mode: client.Fleet, MaxWorkers: 4, Conn: nc}, dir)
	const calls = 260
	futs := make([]*client.Future[int], calls)
	for i := range futs {
		futs[i] = client.Call[int](p, "Run", i, 30*time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if nc.ConnectedUrl() != urls[0] {
		t.Fatalf("the pool's connection is on %s, want n1 (%s)", nc.ConnectedUrl(), urls[0])
	}
	nodes[0].kill(t)
	got := settle(t, futs, 60*time.Second)
	for i, r := range got {
		if r.err != nil || r.v != 2*i {
			t.Errorf("call %d = %d, %v; want %d", i, r.v, r.err, 2*i)
		}
	}
	if ran := checkNoneTwice(t, dir); ran != calls {
		t.Errorf("%d calls ran, want %d", ran, calls)
	}
	st := p.Stats()
	t.Logf("connection now on %s; reconciles %d, calls sent again %d", nc.ConnectedUrl(), st.Reconciles, st.Resent)
	if st.TotalWorkers != 4 {
		t.Errorf("pool has %d workers after the node loss, want 4", st.TotalWorkers)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	stopProcess(t, a2)
	stopProcess(t, a3)
}

// TestSlowConsumerCutLosesNoCall has the server cut a pool's connection off as a slow consumer: a client process with
// 512 calls of 32 KiB replies in flight on 4 workers is frozen (SIGSTOP) for 3 s while the server may hold at most
// 1 MiB for it. The client comes back to a closed connection, reconnects, reconciles, and every call resolves with
// its result; none runs twice.
func TestSlowConsumerCutLosesNoCall(t *testing.T) {
	srv := testutil.StartServer(t, broker.EmbeddedOptions{MaxPending: 1 << 20})
	dir := t.TempDir()
	cmd, out := startTestClient(t, childScenario{Name: "slow", URL: srv.ClientURL(), Dir: dir}, "started")
	time.Sleep(100 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	var sum childSummary
	for out.Scan() {
		if js, ok := strings.CutPrefix(out.Text(), "summary "); ok {
			if err := json.Unmarshal([]byte(js), &sum); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	_ = cmd.Wait()
	t.Logf("slow consumers %d, client reconnects %d, summary %+v", srv.Server().NumSlowConsumers(), sum.Reconnects,
		sum)
	if srv.Server().NumSlowConsumers() == 0 || sum.Reconnects == 0 {
		t.Fatalf("slow consumers %d, reconnects %d: the server never cut the client off",
			srv.Server().NumSlowConsumers(), sum.Reconnects)
	}
	if sum.OK != 512 || sum.Failed != 0 || sum.Pending != 0 {
		t.Fatalf("%d calls succeeded, %d failed, %d pending; want 512, 0, 0; errors %q", sum.OK, sum.Failed,
			sum.Pending, sum.Errors)
	}
	if ran := checkNoneTwice(t, dir); ran != 512 {
		t.Errorf("%d calls ran, want 512", ran)
	}
}
