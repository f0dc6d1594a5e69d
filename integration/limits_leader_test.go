package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/internal/testutil"
	"github.com/natsfleet/natsfleet/limits"
)

// envNATSChild, when set, makes the test binary a NATS server of a cluster
// (its EmbeddedOptions as JSON) until its stdin closes: a separate process,
// so that the test can SIGKILL it. It runs from init, before TestMain.
const envNATSChild = "NATSFLEET_TEST_NATS_SERVER"

func init() {
	if cfg := os.Getenv(envNATSChild); cfg != "" {
		os.Exit(natsChild(cfg))
	}
}

func natsChild(cfg string) int {
	var opts broker.EmbeddedOptions
	if err := json.Unmarshal([]byte(cfg), &opts); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	srv, err := broker.StartEmbedded(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer srv.Shutdown()
	fmt.Println("READY", srv.ClientURL())
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// natsProc is a cluster node running in a child process.
type natsProc struct {
	opts broker.EmbeddedOptions
	cmd  *exec.Cmd
	in   io.WriteCloser
	done chan struct{}
}

// startNATSProc starts a node and waits until it accepts clients; it is
// stopped when the test ends.
func startNATSProc(t *testing.T, opts broker.EmbeddedOptions) *natsProc {
	t.Helper()
	cfg, err := json.Marshal(opts)
	if err != nil {
		t.Fatal(err)
	}
	p := &natsProc{opts: opts, cmd: exec.Command(os.Args[0], "-test.run=^$"), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), envNATSChild+"="+string(cfg))
	p.cmd.Stderr = os.Stderr
	if p.in, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ready <- sc.Scan() && strings.HasPrefix(sc.Text(), "READY")
		_, _ = io.Copy(io.Discard, out)
		_ = p.cmd.Wait()
		close(p.done)
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("NATS node %s did not start", opts.ServerName)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("NATS node %s not ready within 30s", opts.ServerName)
	}
	t.Cleanup(p.stop)
	return p
}

func (p *natsProc) stop() {
	_ = p.in.Close()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *natsProc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

// admission is one acquisition as the load saw it.
type admission struct{ decided, returned time.Time }

// TestLimitsSurviveLeaderLoss: a shared set on a 3-node cluster of
// separate server processes gets a bucket of 3 replicas. Under load from
// three connections, one per server, the server leading the bucket's stream
// is SIGKILLed: admissions pause while the others elect a leader (4–9s),
// then go on; no acquisition fails, no window holds more than the capacity.
// The killed server comes back, catches up, and the set goes on.
func TestLimitsSurviveLeaderLoss(t *testing.T) {
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
	const capacity, slots = 100, 4
	window := time.Second
	ls := []limits.Limit{limits.CallLimit{Window: window, Capacity: capacity},
		limits.ResourceLimit{Key: "slots", Capacity: slots}}
	// One connection per server, each able to fail over to the others.
	var sets []*limits.Set
	for i := range nodes {
		order := append([]string{urls[i]}, slices.Delete(slices.Clone(urls), i, i+1)...)
		nc := testutil.Connect(t, strings.Join(order, ","))
		s, err := limits.NewSet(limits.SetOptions{Name: "ha", Conn: nc}, ls...)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}()
		sets = append(sets, s)
	}
	ctx := context.Background()
	js, err := jetstream.New(testutil.Connect(t, strings.Join(urls, ",")))
	if err != nil {
		t.Fatal(err)
	}
	info := func() (*jetstream.StreamInfo, error) {
		st, err := js.Stream(ctx, "KV_"+limits.DefaultBucket)
		if err != nil {
			return nil, err
		}
		return st.Info(ctx)
	}
	si, err := info()
	if err != nil {
		t.Fatal(err)
	}
	if si.Config.Replicas != 3 {
		t.Fatalf("the default bucket on a 3-node cluster has %d replicas, want 3", si.Config.Replicas)
	}
	t.Logf("bucket %s: %d replicas, stream leader %s", limits.DefaultBucket, si.Config.Replicas, si.Cluster.Leader)

	// The load: 4 goroutines per set, each acquisition holding a slot for
	// a millisecond, every acquisition allowed 30s.
	var (
		mu   sync.Mutex
		log  []admission
		errs []error
		wg   sync.WaitGroup
	)
	stop := make(chan struct{})
	for _, s := range sets {
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					actx, cancel := context.WithTimeout(ctx, 30*time.Second)
					a, err := s.Acquire(actx, nil)
					cancel()
					now := time.Now()
					if err == nil {
						time.Sleep(time.Millisecond)
						err = a.Release()
					}
					mu.Lock()
					if err != nil {
						errs = append(errs, err)
					} else {
						log = append(log, admission{a.Time(), now})
					}
					mu.Unlock()
					if err != nil {
						return
					}
				}
			})
		}
	}
	admitted := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(log)
	}
	time.Sleep(3 * time.Second)
	before := admitted()
	leader := slices.IndexFunc(nodes, func(n *natsProc) bool { return n.opts.ServerName == si.Cluster.Leader })
	if leader < 0 {
		t.Fatalf("stream leader %q is none of the nodes", si.Cluster.Leader)
	}
	nodes[leader].kill(t)
	killed := time.Now()
	time.Sleep(12 * time.Second)
	during := admitted() - before

	// The killed server comes back with its store and catches up.
	nodes[leader] = startNATSProc(t, nodes[leader].opts)
	restarted := time.Now()
	testutil.Eventually(t, 30*time.Second, func() error {
		si, err := info()
		if err != nil {
			return err
		}
		if len(si.Cluster.Replicas) != 2 {
			return fmt.Errorf("%d followers", len(si.Cluster.Replicas))
		}
		for _, r := range si.Cluster.Replicas {
			if !r.Current || r.Offline {
				return fmt.Errorf("replica %s current %v offline %v", r.Name, r.Current, r.Offline)
			}
		}
		return nil
	})
	caughtUp := admitted()
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	after := admitted() - caughtUp

	if len(errs) > 0 {
		t.Fatalf("%d acquisitions or releases failed, the first: %v", len(errs), errs[0])
	}
	if before == 0 || during == 0 || after == 0 {
		t.Fatalf("admissions: %d before the kill, %d in the 12s after, %d once the server was back; want some in each", before, during, after)
	}
	// The pause: the longest time without an admission returned, around the kill.
	slices.SortFunc(log, func(a, b admission) int { return a.returned.Compare(b.returned) })
	var pause time.Duration
	for i := 1; i < len(log); i++ {
		if log[i].returned.After(killed) && log[i-1].returned.Before(restarted) {
			pause = max(pause, log[i].returned.Sub(log[i-1].returned))
		}
	}
	if pause > 10*time.Second {
		t.Fatalf("admissions paused %v when the stream leader was killed, want at most 10s", pause)
	}
	// Never over capacity in any window of the limiter's decisions.
	decided := make([]time.Time, len(log))
	for i, a := range log {
		decided[i] = a.decided
	}
	slices.SortFunc(decided, time.Time.Compare)
	most := 0
	for i, j := 0, 0; j < len(decided); j++ {
		for decided[j].Sub(decided[i]) >= window {
			i++
		}
		most = max(most, j-i+1)
	}
	if most > capacity {
		t.Fatalf("%d admissions within %v, capacity %d", most, window, capacity)
	}
	t.Logf("%d admissions: %d before the kill, %d in the 12s after, %d in 3s once the server was back; "+
		"pause %v after SIGKILL of the stream leader %s; at most %d in any %v (capacity %d)",
		len(log), before, during, after, pause.Round(time.Millisecond), si.Cluster.Leader, most, window, capacity)
}
