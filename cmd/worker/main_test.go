package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/internal/testutil"
)

// envRunMain makes the re-executed test binary run main. The test itself imports no kinds, so what the command
// serves comes from main.go's imports alone.
const envRunMain = "NATSFLEET_TEST_WORKER_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envRunMain) == "1" {
		main()
	}
	goleak.VerifyTestMain(m)
}

// The command is package agent's Main with the demo kinds: it serves one of them, from another process, and exits 0
// on SIGTERM. Package agent's tests cover the flags, the run loop and the metrics.
func TestServesDemoKinds(t *testing.T) {
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	cmd := exec.Command(os.Args[0], "--nats", s.ClientURL(), "--serve", "DataProcessor=1", "--args", "[3]")
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
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
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "worker: agent ") || !strings.Contains(line, " serving on nats://") {
		t.Fatalf("first line %q, %v", line, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := client.Attach(ctx, nc, "DataProcessor", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n := pool.Stats().TotalWorkers; n != 1 {
		t.Errorf("attached to %d DataProcessor workers, want 1", n)
	}
	if v, err := client.Call[int](pool, "Process", 5).Result(ctx); err != nil || v != 15 {
		t.Errorf("Process(5) = %d, %v; want 15", v, err)
	}
	if err := pool.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("worker exited: %v", err)
		}
		exited <- nil // for the cleanup
	case <-time.After(15 * time.Second):
		t.Fatal("worker still running 15s after SIGTERM")
	}
}
