package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/balancer"
	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/limits"
)

// envTestClient makes the test binary a client process running one scenario (childScenario as JSON), so that a
// test can freeze it or kill it: a pool's faults seen from outside the pool's process.
const envTestClient = "NATSFLEET_TEST_CLIENT"

type childScenario struct {
	Name string // "slow", "holder" or "sharer"
	URL  string
	Dir  string // the ledger's
}

// childSummary is what the "slow" scenario reports once its calls have resolved.
type childSummary struct {
	OK, Failed, Pending int
	Reconnects          int32
	Errors              []string
}

func testClientMain() {
	var sc childScenario
	if err := json.Unmarshal([]byte(os.Getenv(envTestClient)), &sc); err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	nc, err := broker.Connect(broker.Options{URL: sc.URL})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	switch sc.Name {
	case "slow":
		slowClient(nc, sc)
	case "holder":
		holderClient(nc, sc)
	case "sharer":
		sharerClient(nc, sc)
	}
	fmt.Println("error unknown scenario", sc.Name)
	os.Exit(2)
}

// slowClient has 512 calls with 32 KiB replies in flight on 4 process workers, says "started", and prints a
// childSummary once they have all resolved (or after 90 s).
func slowClient(nc *nats.Conn, sc childScenario) {
	var reconnects atomic.Int32
	status := nc.StatusChanged(nats.RECONNECTING)
	go func() {
		for range status {
			reconnects.Add(1)
		}
	}()
	ctx := context.Background()
	p, err := client.New(ctx, ledgerKind, client.Options{Mode: client.Process, MaxWorkers: 4, MaxQueuedTasks: 128,
		Conn: nc}, sc.Dir)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	const calls, size = 512, 32 << 10
	futs := make([]*client.Future[[]byte], calls)
	for i := range futs {
		futs[i] = client.Call[[]byte](p, "Blob", size)
	}
	fmt.Println("started")
	var sum childSummary
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	for _, f := range futs {
		v, err := f.Result(wctx)
		switch {
		case errors.Is(err, context.DeadlineExceeded) && wctx.Err() != nil:
			sum.Pending++
		case err != nil:
			sum.Failed++
			sum.Errors = append(sum.Errors, err.Error())
		case len(v) != size:
			sum.Failed++
			sum.Errors = append(sum.Errors, fmt.Sprintf("%d bytes", len(v)))
		default:
			sum.OK++
		}
	}
	cancel()
	sum.Reconnects = reconnects.Load()
	b, _ := json.Marshal(sum)
	fmt.Println("summary", string(b))
	sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
	defer scancel()
	_ = p.Stop(sctx)
	os.Exit(0)
}

// holderClient starts a fleet pool of 2 whose calls hold the slots of a shared resource limit for a minute, six
// calls for two slots, says "holding" once both slots are taken, and waits to be killed.
func holderClient(nc *nats.Conn, sc childScenario) {
	ctx := context.Background()
	set, err := limits.NewSet(limits.SetOptions{Name: "held-slots", Conn: nc},
		limits.ResourceLimit{Key: "slots", Capacity: 2})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	p, err := client.New(ctx, ledgerKind, client.Options{Mode: client.Fleet, MaxWorkers: 2, Conn: nc, LimitSet: set},
		sc.Dir)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	for range 6 {
		client.Call[any](p, "Hold", time.Minute)
	}
	for {
		if n := countRuns(sc.Dir); n >= 2 {
			fmt.Println("holding")
			select {}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sharerClient attaches to the standing Ledger workers with least-active balancing, keeps four of them busy with
// calls of 2 s, says "holding" once all four run, and waits to be killed.
func sharerClient(nc *nats.Conn, sc childScenario) {
	ctx := context.Background()
	p, err := client.Attach(ctx, nc, "Ledger", client.Options{LoadBalancing: balancer.LeastActive})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	for start := time.Now(); p.Stats().TotalWorkers < 8; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 20*time.Second {
			fmt.Println("error attached to", p.Stats().TotalWorkers, "workers, want 8")
			os.Exit(1)
		}
	}
	for range 4 {
		client.Call[string](p, "Where", 2*time.Second)
	}
	for countRuns(sc.Dir) < 4 {
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Println("holding")
	select {}
}

// countRuns counts the runs the ledger under dir holds, without a test to report to.
func countRuns(dir string) int {
	n := 0
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".log") && e.Name() != "ctor.log" {
			b, _ := os.ReadFile(dir + "/" + e.Name())
			n += strings.Count(string(b), "\n")
		}
	}
	return n
}

// startTestClient runs the test binary as a client process playing sc and returns it with a scanner of its output
// once it printed want; it is killed when the test ends.
func startTestClient(t *testing.T, sc childScenario, want string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	js, err := json.Marshal(sc)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envTestClient+"="+string(js))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	sc2 := bufio.NewScanner(out)
	sc2.Buffer(make([]byte, 0, 64<<10), 1<<20)
	lines := make(chan string)
	go func() {
		for sc2.Scan() {
			if l := sc2.Text(); strings.HasPrefix(l, want) || strings.HasPrefix(l, "error") {
				lines <- l
				return
			}
		}
		close(lines)
	}()
	select {
	case l, ok := <-lines:
		if !ok || strings.HasPrefix(l, "error") {
			t.Fatalf("client process: %q", l)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("client process did not say %q within 60s", want)
	}
	return cmd, sc2
}
