// Package integration runs natsfleet end to end: real embedded NATS servers, real worker processes (the test binary
// re-executed, and the cmd/worker binary built for the run), killed processes and restarted servers.
package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/natsfleet/natsfleet/client"
	_ "github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/fleet"
)

// workerBin is cmd/worker built once for the run.
var workerBin string

func TestMain(m *testing.M) {
	fleet.ServeIfChild()
	if os.Getenv(envTestAgent) != "" {
		testAgentMain()
	}
	if os.Getenv(envTestClient) != "" {
		testClientMain()
	}
	if os.Getenv(envOrphanParent) != "" {
		orphanParent()
	}
	dir, err := os.MkdirTemp("", "natsfleet-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workerBin = filepath.Join(dir, "worker")
	if out, err := exec.Command("go", "build", "-o", workerBin, "../cmd/worker").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build cmd/worker: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func newPool(t *testing.T, kind *fleet.Kind, opts client.Options, args ...any) *client.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := client.New(ctx, kind, opts, args...)
	if err != nil {
		t.Fatalf("New %s: %v", opts.Mode, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.Stop(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Stop: %v", err)
		}
	})
	return p
}

// submitProcess calls Process(0), …, Process(n-1) on p, a pool of DataProcessor, without waiting.
func submitProcess(p *client.Pool, n int) []*client.Future[int] {
	futs := make([]*client.Future[int], n)
	for i := range futs {
		futs[i] = client.Call[int](p, "Process", i)
	}
	return futs
}

// checkProcessed waits for the calls submitProcess made, to workers built with factor, and checks each result.
func checkProcessed(t *testing.T, futs []*client.Future[int], factor int) {
	t.Helper()
	got, err := client.Gather(context.Background(), futs)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		if v != factor*i {
			t.Fatalf("Process(%d) = %d, want %d", i, v, factor*i)
		}
	}
}

func result[T any](t *testing.T, f *client.Future[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := f.Result(ctx)
	if err != nil {
		t.Fatalf("Result: %v", err)
	}
	return v
}

// startAgent runs cmd/worker as a process with args and waits until it serves.
func startAgent(t *testing.T, url string, args ...string) *exec.Cmd {
	t.Helper()
	return runAgent(t, exec.Command(workerBin, append([]string{"--nats", url}, args...)...))
}

// runAgent starts an agent's command and waits until it serves (its first line of output); it is stopped when the
// test ends.
func runAgent(t *testing.T, cmd *exec.Cmd) *exec.Cmd {
	t.Helper()
	cmd.Stderr = os.Stderr
	ready := &readyWriter{ch: make(chan struct{})}
	cmd.Stdout = ready
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ready.ch:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("worker agent did not start within 30s")
	}
	t.Cleanup(func() { stopProcess(t, cmd) })
	return cmd
}

// stopProcess sends SIGTERM and waits; it kills after 10 s.
func stopProcess(t *testing.T, cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		time.Sleep(time.Second)
		_ = cmd.Process.Kill()
		<-done
		t.Errorf("process %d did not exit on SIGINT; killed", cmd.Process.Pid)
	}
}

// readyWriter closes ch at the first line a process prints.
type readyWriter struct {
	once sync.Once
	ch   chan struct{}
}

func (w *readyWriter) Write(p []byte) (int, error) {
	if bytes.IndexByte(p, '\n') >= 0 {
		w.once.Do(func() { close(w.ch) })
	}
	return len(p), nil
}
