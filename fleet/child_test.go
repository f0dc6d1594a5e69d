package fleet_test

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/testutil"
	"github.com/natsfleet/natsfleet/internal/wire"
)

func TestChildEnv(t *testing.T) {
	t.Parallel()
	env, err := wire.ChildEnv(wire.WorkerSpec{Kind: "DataProcessor", ID: "w1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(env) != 2 || env[0] != wire.EnvChild+"=1" || !strings.HasPrefix(env[1], wire.EnvSpec+"=") {
		t.Errorf("env %q", env)
	}
}

// child is this test binary re-executed as a process-mode worker.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *testutil.SyncBuffer // written by exec's copying goroutine, read by the test
	exited chan struct{}
	err    error // of Wait, once exited is closed
}

func startChild(t *testing.T, s *broker.Embedded, spec wire.WorkerSpec) *child {
	t.Helper()
	env, err := wire.ChildEnv(spec)
	if err != nil {
		t.Fatal(err)
	}
	// -test.run=^$: should the child not become a worker, it runs no test either.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), env...), broker.Options{URL: s.ClientURL()}.Env()...)
	c := &child{cmd: cmd, stderr: &testutil.SyncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = c.stderr
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.err = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-c.exited:
		default:
			_ = cmd.Process.Kill()
			<-c.exited
		}
	})
	return c
}

// wait waits for the child to exit and returns its exit code.
func (c *child) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-c.exited:
	case <-time.After(d):
		t.Fatalf("child still running after %v; stderr:\n%s", d, c.stderr)
	}
	var ee *exec.ExitError
	switch {
	case c.err == nil:
		return 0
	case errors.As(c.err, &ee):
		return ee.ExitCode()
	default:
		t.Fatalf("child: %v", c.err)
		return -1
	}
}

// heartbeats counts the heartbeats of worker id and keeps the last.
type heartbeats struct {
	mu   sync.Mutex
	n    int
	last wire.Heartbeat
}

func watchHeartbeats(t *testing.T, nc *nats.Conn, kind, id string) *heartbeats {
	t.Helper()
	hb := &heartbeats{}
	sub, err := nc.Subscribe(subjects.Heartbeat(kind, id), func(m *nats.Msg) {
		var b wire.Heartbeat
		if err := codec.Msgpack.Unmarshal(m.Data, &b); err != nil {
			t.Errorf("heartbeat: %v", err)
			return
		}
		hb.mu.Lock()
		hb.n++
		hb.last = b
		hb.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return hb
}

func (hb *heartbeats) count() int {
	hb.mu.Lock()
	defer hb.mu.Unlock()
	return hb.n
}

func TestChildServes(t *testing.T) {
	t.Parallel()
	const interval = 100 * time.Millisecond
	tests := []struct {
		name string
		stop func(t *testing.T, nc *nats.Conn, c *child, id string)
	}{
		{"stdin closed", func(t *testing.T, nc *nats.Conn, c *child, id string) {
			if err := c.stdin.Close(); err != nil {
				t.Fatal(err)
			}
		}},
		{"control stop", func(t *testing.T, nc *nats.Conn, c *child, id string) {
			if err := result(t, control(t, nc, id, wire.ControlStop, nil), nil); err != nil {
				t.Fatal(err)
			}
		}},
		{"SIGTERM", func(t *testing.T, nc *nats.Conn, c *child, id string) {
			if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := testutil.StartServer(t, broker.EmbeddedOptions{})
			nc := testutil.Connect(t, s.ClientURL())
			id := "child-" + strings.ReplaceAll(tt.name, " ", "-")
			hb := watchHeartbeats(t, nc, "DataProcessor", id)
			c := startChild(t, s, wire.WorkerSpec{Kind: "DataProcessor", ID: id, Index: 4, Pool: "p",
				Args: args(t, 10), HeartbeatInterval: interval})
			waitFor(t, 30*time.Second, "the child's first heartbeat", func() bool { return hb.count() > 0 })
			if got := process(t, nc, subjects.Worker(id), 42); got != 420 {
				t.Errorf("Process(42) = %d, want 420", got)
			}
			var who demo.Identity
			if err := result(t, request(t, nc, callMsg(subjects.Worker(id), "WhoAmI", "", nil)), &who); err != nil ||
				who.ID != id || who.Index != 4 {
				t.Errorf("WhoAmI() = %+v, %v", who, err)
			}
			tt.stop(t, nc, c, id)
			if code := c.wait(t, 10*time.Second); code != 0 {
				t.Errorf("exit code %d, want 0; stderr:\n%s", code, c.stderr)
			}
		})
	}
}

// TestChildSignalDrains: a child told to stop by SIGTERM lets the call it runs finish and answers it.
func TestChildSignalDrains(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	hb := watchHeartbeats(t, nc, "SlowWorker", "drained")
	c := startChild(t, s, wire.WorkerSpec{Kind: "SlowWorker", ID: "drained"})
	waitFor(t, 30*time.Second, "the child's first heartbeat", func() bool { return hb.count() > 0 })
	inbox, rs := collect(t, nc)
	m := callMsg(subjects.Worker("drained"), "Process", "", args(t, 500*time.Millisecond))
	m.Reply = inbox
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the call to run", func() bool {
		var st fleet.WorkerStats
		return result(t, control(t, nc, "drained", wire.ControlStats, nil), &st) == nil && st.InFlight == 1
	})
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := c.wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit code %d, want 0; stderr:\n%s", code, c.stderr)
	}
	waitFor(t, 5*time.Second, "the call's reply", func() bool { return rs.count() == 1 })
	var who demo.Identity
	if err := result(t, rs.snapshot()[0], &who); err != nil || who.ID != "drained" {
		t.Errorf("drained call: %+v, %v", who, err)
	}
}

func TestChildKilled(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	const interval = 50 * time.Millisecond
	hb := watchHeartbeats(t, nc, "SlowWorker", "victim")
	c := startChild(t, s, wire.WorkerSpec{Kind: "SlowWorker", ID: "victim", HeartbeatInterval: interval})
	waitFor(t, 30*time.Second, "three heartbeats", func() bool { return hb.count() >= 3 })
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := c.wait(t, 10*time.Second); code != -1 {
		t.Errorf("exit code %d after SIGKILL, want -1 (killed)", code)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	n := hb.count()
	time.Sleep(4 * interval)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := hb.count(); got != n {
		t.Errorf("%d heartbeats after the child was killed", got-n)
	}
	_, err := nc.RequestMsg(callMsg(subjects.Worker("victim"), "Process", "", args(t, time.Millisecond)), 5*time.Second)
	if !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("call to the killed child: %v, want no responders", err)
	}
}

func TestChildCannotStart(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	tests := []struct {
		name string
		spec wire.WorkerSpec
		want string
	}{
		{"unknown kind", wire.WorkerSpec{Kind: "Nope"}, "fleet: unknown kind"},
		{"bad constructor arguments", wire.WorkerSpec{Kind: "DataProcessor"}, "fleet: bad arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := startChild(t, s, tt.spec)
			if code := c.wait(t, 30*time.Second); code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			if !strings.Contains(c.stderr.String(), tt.want) {
				t.Errorf("stderr %q does not say %q", c.stderr, tt.want)
			}
		})
	}
}
