package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/testutil"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// keepalive publishes pool's keepalive every interval until the returned stop is called.
func keepalive(t *testing.T, nc *nats.Conn, pool string, interval time.Duration) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				_ = nc.Publish(subjects.PoolKeepalive(pool), nil)
			}
		}
	}()
	var once atomic.Bool
	stop = func() {
		if once.CompareAndSwap(false, true) {
			close(done)
			<-finished
		}
	}
	t.Cleanup(stop)
	return stop
}

// A worker started for a pool serves while the pool's keepalives come, and once they stop for its lease it stops:
// the call it runs is cancelled, the one queued never runs.
func TestLeaseExpires(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, srv.ClientURL())
	const iv, lease = 50 * time.Millisecond, 400 * time.Millisecond
	stop := keepalive(t, nc, "P1", iv)
	h := serve(t, nc, wire.WorkerSpec{Kind: "Kit", Pool: "P1", HeartbeatInterval: iv, Lease: lease},
		fleet.ServeOptions{})
	replies := collectAll(t, nc, "leased.>")
	sendCall(t, nc, h.ID(), "cL-1", "leased.1", "Block", nil, false)
	sendCall(t, nc, h.ID(), "cL-2", "leased.2", "Mark", args(t, time.Duration(0)), false)
	waitFor(t, 5*time.Second, "both calls to reach the worker", func() bool { return h.Stats().InFlight == 2 })
	time.Sleep(3 * lease)
	select {
	case <-h.Done():
		t.Fatal("the worker stopped while its pool's keepalives came")
	default:
	}
	stop()
	silent := time.Now()
	select {
	case <-h.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the worker still serves 5s after its pool fell silent")
	}
	// The last keepalive came up to an interval before the publisher stopped.
	if d := time.Since(silent); d < lease-iv || d > lease+time.Second {
		t.Errorf("stopped %v after the pool fell silent, want its lease (%v, less the interval since the last "+
			"keepalive) and at most a second more", d, lease)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if len(replies.of("leased.1")) != 1 || len(replies.of("leased.2")) != 1 {
			return fmt.Errorf("replies: running call %d, queued call %d; want one each",
				len(replies.of("leased.1")), len(replies.of("leased.2")))
		}
		return nil
	})
	for _, subj := range []string{"leased.1", "leased.2"} {
		var id string
		if err := result(t, replies.of(subj)[0], &id); err == nil {
			t.Errorf("%s: the call ran (%q) after the worker's pool fell silent", subj, id)
		}
	}
}

// A worker that was frozen (SIGSTOP) past two heartbeat intervals asks its caller, before it starts a call it holds,
// whether the caller still counts on it; the caller, which declared it lost meanwhile, answers with its fence, and
// the worker starts none of the calls numbered below it, stops, and its process exits.
func TestFrozenWorkerStartsNoFencedCall(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, srv.ClientURL())
	const iv = 100 * time.Millisecond
	keepalive(t, nc, "PF", iv)
	var asked atomic.Int32
	fence, err := nc.Subscribe("frozen."+wire.FenceToken, func(m *nats.Msg) {
		if string(m.Data) != "fw" {
			t.Errorf("fence asked for %q, want fw", m.Data)
		}
		asked.Add(1)
		b, _ := codec.Msgpack.Marshal(uint64(3)) // calls cF-1 to cF-3 are void
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer fence.Unsubscribe()
	replies := collectAll(t, nc, "frozen.>")
	hb := watchHeartbeats(t, nc, "Kit", "fw")
	c := startChild(t, srv, wire.WorkerSpec{Kind: "Kit", ID: "fw", Pool: "PF", HeartbeatInterval: iv})
	waitFor(t, 30*time.Second, "the child's first heartbeat", func() bool { return hb.count() > 0 })
	sendCall(t, nc, "fw", "cF-1", "frozen.1", "Mark", args(t, 300*time.Millisecond), false)
	sendCall(t, nc, "fw", "cF-2", "frozen.2", "Mark", args(t, time.Duration(0)), false)
	sendCall(t, nc, "fw", "cF-3", "frozen.3", "Mark", args(t, time.Duration(0)), false)
	waitFor(t, 5*time.Second, "the calls to reach the worker", func() bool {
		hb.mu.Lock()
		defer hb.mu.Unlock()
		return hb.last.InFlight == 3
	})
	if err := c.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(6 * iv) // past the three intervals after which a caller declares it lost
	if err := c.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if code := c.wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit code %d, want 0; stderr:\n%s", code, c.stderr)
	}
	if asked.Load() == 0 {
		t.Fatal("the worker never asked its caller for its fence")
	}
	// cF-1 may have started before the freeze; the calls queued behind it must not start.
	for _, subj := range []string{"frozen.2", "frozen.3"} {
		for _, r := range replies.of(subj) {
			var id string
			if err := result(t, r, &id); err == nil {
				t.Errorf("%s: the fenced call ran (%q)", subj, id)
			} else if !strings.Contains(err.Error(), "declared this worker lost") && !errors.Is(err, context.Canceled) {
				t.Errorf("%s: %v, want the fence's error or a cancel", subj, err)
			}
		}
	}
}
