package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/codec"
	_ "github.com/natsfleet/natsfleet/examples/demo" // the kinds the tests serve, as cmd/worker does
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/testutil"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// envRunMain makes the re-executed test binary run Main, so tests can drive the real command in a process.
const envRunMain = "NATSFLEET_TEST_AGENT_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envRunMain) == "1" {
		Main() // serves as a process-mode child too (fleet.ServeIfChild), and exits
	}
	goleak.VerifyTestMain(m)
}

var subjects = broker.Subjects{}

// gather sends one request to subject and decodes every reply that arrives until want have.
func gather[T any](t *testing.T, nc *nats.Conn, subject string, want int) []T {
	t.Helper()
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		t.Fatal(err)
	}
	var out []T
	for len(out) < want {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("%d of %d replies on %s: %v", len(out), want, subject, err)
		}
		var v T
		if err := codec.Msgpack.Unmarshal(m.Data, &v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func call(t *testing.T, nc *nats.Conn, worker, method string, body []byte) *nats.Msg {
	t.Helper()
	m := nats.NewMsg(subjects.Worker(worker))
	m.Header.Set(wire.HeaderMethod, method)
	m.Data = body
	r, err := nc.RequestMsg(m, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st := r.Header.Get(wire.HeaderStatus); st != wire.StatusOK {
		t.Fatalf("%s.%s: status %s, body %q", worker, method, st, r.Data)
	}
	return r
}

var readyLine = regexp.MustCompile(`^worker: agent (\S+) serving on nats://127\.0\.0\.1:\d+\n`)

func TestRun(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout, stderr := &testutil.SyncBuffer{}, &testutil.SyncBuffer{}
	exit := make(chan int, 1)
	go func() {
		exit <- Run(ctx, []string{"--nats", s.ClientURL(), "--id", "a1", "--capacity", "3", "--heartbeat", "100ms",
			"--serve", "DataProcessor=2,SlowWorker=1", "--args", "DataProcessor=[10]"}, stdout, stderr)
	}()
	testutil.Eventually(t, 10*time.Second, func() error {
		if !readyLine.MatchString(stdout.String()) {
			return fmt.Errorf("no ready line in stdout %q; stderr:\n%s", stdout, stderr)
		}
		return nil
	})
	if id := readyLine.FindStringSubmatch(stdout.String())[1]; id != "a1" {
		t.Errorf("ready line names agent %q", id)
	}

	infos := gather[fleet.AgentInfo](t, nc, subjects.AgentDiscover(), 1)
	if infos[0].ID != "a1" || infos[0].Capacity != 3 || infos[0].Free != 3 || infos[0].Workers != 3 {
		t.Errorf("agent info %+v", infos[0])
	}
	var workers []string
	for _, hb := range gather[wire.Heartbeat](t, nc, subjects.KindDiscover("DataProcessor"), 2) {
		if hb.Agent != "a1" || hb.Interval != 100*time.Millisecond {
			t.Errorf("heartbeat %+v", hb)
		}
		workers = append(workers, hb.WorkerID)
	}
	slow := gather[wire.Heartbeat](t, nc, subjects.KindDiscover("SlowWorker"), 1)[0].WorkerID
	for _, w := range workers {
		var out int
		if err := codec.Msgpack.Unmarshal(call(t, nc, w, "Process", mustArgs(t, 42)).Data, &out); err != nil ||
			out != 420 {
			t.Errorf("worker %s: Process(42) = %d, %v", w, out, err)
		}
	}

	// A call still running when the agent is told to stop is answered before Run returns.
	m := nats.NewMsg(subjects.Worker(slow))
	m.Header.Set(wire.HeaderMethod, "Process")
	m.Data = mustArgs(t, 300*time.Millisecond)
	inbox := nc.NewRespInbox()
	replies, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer replies.Unsubscribe()
	m.Reply = inbox
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if hb := gather[wire.Heartbeat](t, nc, subjects.KindDiscover("SlowWorker"), 1)[0]; hb.InFlight != 1 {
			return fmt.Errorf("slow call not running: worker has %d in flight, want 1", hb.InFlight)
		}
		return nil
	})
	cancel()
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit code %d; stderr:\n%s", code, stderr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	r, err := replies.NextMsg(time.Second)
	if err != nil || r.Header.Get(wire.HeaderStatus) != wire.StatusOK {
		t.Fatalf("slow call: %v %v", r, err)
	}
	if _, err := nc.Request(subjects.Worker(workers[0]), nil, 5*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("call after the agent stopped: %v, want no responders", err)
	}
}

func mustArgs(t *testing.T, args ...any) []byte {
	t.Helper()
	b, err := codec.Msgpack.AppendArgs(nil, args)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRunUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		argv []string
		code int
		want string // in stderr
	}{
		{"help", []string{"-h"}, 0, "-serve"},
		{"unknown flag", []string{"--nope"}, 2, "flag provided but not defined"},
		{"stray argument", []string{"extra"}, 2, "unexpected arguments"},
		{"serve without count", []string{"--serve", "DataProcessor"}, 2, "want Kind=N"},
		{"serve zero", []string{"--serve", "DataProcessor=0"}, 2, "positive"},
		{"unknown kind", []string{"--serve", "Nope=1"}, 2, "fleet: unknown kind"},
		{"missing arguments", []string{"--serve", "DataProcessor=1"}, 2, "constructor takes (int)"},
		{"arguments of the wrong type", []string{"--serve", "DataProcessor=1", "--args", `["x"]`}, 2, "bad argument 0"},
		{"arguments for a kind without them", []string{"--serve", "SlowWorker=1", "--args", "[1]"}, 2,
			"constructor takes no arguments"},
		{"arguments without serve", []string{"--args", "[1]"}, 2, "no --serve given"},
		{"arguments for a kind not served", []string{"--serve", "SlowWorker=1", "--args", "Kit=[1]"}, 2,
			"--serve does not name"},
		{"bad arguments flag", []string{"--args", "x"}, 2, "want a JSON array"},
		{"bad heartbeat", []string{"--heartbeat", "0s"}, 2, "must be positive"},
		{"cannot connect", []string{"--nats", "nats://127.0.0.1:1"}, 1, "broker: connect"},
		{"bad credentials option", []string{"--nats", "nats://127.0.0.1:1", "--user", "u", "--token", "t"}, 1,
			"at most one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stdout, stderr := &testutil.SyncBuffer{}, &testutil.SyncBuffer{}
			if code := Run(context.Background(), tt.argv, stdout, stderr); code != tt.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tt.code, stderr)
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr %q does not say %q", stderr, tt.want)
			}
			if stdout.String() != "" {
				t.Errorf("stdout %q", stdout)
			}
		})
	}
}

// process runs the real command, as a process, with argv and extra environment.
func process(t *testing.T, env []string, argv ...string) (*exec.Cmd, *bufio.Reader, io.WriteCloser, chan error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], argv...) // Main runs before the test flags are parsed
	cmd.Env = append(append(os.Environ(), envRunMain+"=1"), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	return cmd, bufio.NewReader(out), in, exited
}

func waitExit(t *testing.T, exited chan error) {
	t.Helper()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("worker exited: %v", err)
		}
		exited <- nil // for the cleanup
	case <-time.After(15 * time.Second):
		t.Fatal("worker still running")
	}
}

func TestBinaryStopsOnSignal(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			s := testutil.StartServer(t, broker.EmbeddedOptions{})
			nc := testutil.Connect(t, s.ClientURL())
			cmd, stdout, _, exited := process(t, nil, "--nats", s.ClientURL(), "--serve", "DataProcessor=1",
				"--args", "[3]")
			line, err := stdout.ReadString('\n')
			if err != nil || !readyLine.MatchString(line) {
				t.Fatalf("first line %q, %v", line, err)
			}
			w := gather[wire.Heartbeat](t, nc, subjects.KindDiscover("DataProcessor"), 1)[0].WorkerID
			var out int
			if err := codec.Msgpack.Unmarshal(call(t, nc, w, "Process", mustArgs(t, 5)).Data, &out); err != nil ||
				out != 15 {
				t.Errorf("Process(5) = %d, %v", out, err)
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			waitExit(t, exited)
		})
	}
}

// TestBinaryAsChild: the command is also a process-mode worker binary.
func TestBinaryAsChild(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	hbs, err := nc.SubscribeSync(subjects.Heartbeat("DataProcessor", "child1"))
	if err != nil {
		t.Fatal(err)
	}
	defer hbs.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	env, err := wire.ChildEnv(wire.WorkerSpec{Kind: "DataProcessor", ID: "child1", Args: mustArgs(t, 7)})
	if err != nil {
		t.Fatal(err)
	}
	_, _, stdin, exited := process(t, append(env, broker.Options{URL: s.ClientURL()}.Env()...))
	if _, err := hbs.NextMsg(30 * time.Second); err != nil {
		t.Fatalf("no heartbeat from the child: %v", err)
	}
	var out int
	if err := codec.Msgpack.Unmarshal(call(t, nc, "child1", "Process", mustArgs(t, 6)).Data, &out); err != nil ||
		out != 42 {
		t.Errorf("Process(6) = %d, %v", out, err)
	}
	if err := stdin.Close(); err != nil {
		t.Fatal(err)
	}
	waitExit(t, exited)
}
