package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/internal/testutil"
	"github.com/natsfleet/natsfleet/limits"
)

// TestFrozenAgentRunsNoFailedCall freezes the agent hosting a fleet pool's two workers (SIGSTOP) for 10 s with 50
// calls on them. The pool fails their calls with ErrWorkerLost within a few heartbeats and starts replacements on the
// other agent; once the frozen agent wakes (SIGCONT), its workers start none of the calls already failed, exit, and
// give the agent its capacity back.
func TestFrozenAgentRunsNoFailedCall(t *testing.T) {
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	url := srv.ClientURL()
	frozen := startTestAgent(t, url, "--capacity", "2")
	nc := testutil.Connect(t, url)
	dir := t.TempDir()
	p := newPool(t, ledgerKind, client.Options{Mode: client.Fleet, MaxWorkers: 2, Conn: nc}, dir)
	for i := range 2 {
		if ws, err := p.WorkerStats(i); err != nil || ws.PID != frozen.Process.Pid {
			t.Fatalf("worker %d: pid %d, %v; want agent A's %d", i, ws.PID, err, frozen.Process.Pid)
		}
	}
	other := startTestAgent(t, url, "--capacity", "2")
	const calls = 50
	futs := make([]*client.Future[int], calls)
	for i := range futs {
		futs[i] = client.Call[int](p, "Run", i, 100*time.Millisecond)
	}
	time.Sleep(250 * time.Millisecond)
	if err := frozen.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	ledgerA := filepath.Join(dir, strconv.Itoa(frozen.Process.Pid)+".log")
	ranBefore := lines(t, ledgerA)
	// Every call resolves while the agent is still frozen: liveness bounds the wait, not the calls' deadlines.
	got := settle(t, futs, 9*time.Second)
	resolved := time.Since(stopped)
	ok, lost := 0, 0
	for i, r := range got {
		switch {
		case r.err == nil && r.v == 2*i:
			ok++
		case errors.Is(r.err, client.ErrWorkerLost):
			lost++
		default:
			t.Errorf("call %d = %d, %v; want %d or ErrWorkerLost", i, r.v, r.err, 2*i)
		}
	}
	if ok+lost != calls || lost == 0 {
		t.Fatalf("%d calls succeeded and %d were lost; want %d in all, some lost", ok, lost, calls)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if n := p.Stats().TotalWorkers; n != 2 {
			return fmt.Errorf("pool has %d workers while agent A is frozen, want 2 (replacements on B)", n)
		}
		return nil
	})
	for i := range 2 {
		if ws, err := p.WorkerStats(i); err != nil || ws.PID != other.Process.Pid {
			t.Fatalf("replacement %d: pid %d, %v; want agent B's %d", i, ws.PID, err, other.Process.Pid)
		}
	}
	time.Sleep(time.Until(stopped.Add(10 * time.Second)))
	if err := frozen.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// The woken agent's workers learn they are lost and leave: A has its two slots free again.
	testutil.Eventually(t, 15*time.Second, func() error {
		agents, err := client.DiscoverAgents(context.Background(), nc, "")
		if err != nil {
			return err
		}
		for _, a := range agents {
			if a.Capacity == 2 && a.Free == 2 && a.Workers == 0 {
				return nil
			}
		}
		return fmt.Errorf("no agent has its capacity back: %+v", agents)
	})
	ranAfter := lines(t, ledgerA)
	t.Logf("calls resolved %s after SIGSTOP: %d ok, %d lost; agent A ran %d calls before the freeze, %d in all",
		resolved.Round(time.Millisecond), ok, lost, ranBefore, ranAfter)
	if ranAfter != ranBefore {
		t.Errorf("agent A started %d calls after it woke, want none: each had failed", ranAfter-ranBefore)
	}
	if ran := checkNoneTwice(t, dir); ran != ranAfter {
		t.Errorf("%d calls ran, want the %d agent A started before it froze", ran, ranAfter)
	}
	for i := range 10 {
		if v := result(t, client.Call[int](p, "Run", i, time.Duration(0))); v != 2*i {
			t.Fatalf("Run(%d) after the freeze = %d", i, v)
		}
	}
}

// TestKilledClientFreesAgentsAndSlots SIGKILLs a client process whose two fleet workers each hold a slot of a shared
// resource limit for a minute, with four more calls queued behind them. The workers' lease runs out: they cancel
// their calls, start none of those queued and exit, so the agent has its capacity back and the limit its slots.
func TestKilledClientFreesAgentsAndSlots(t *testing.T) {
	srv := testutil.StartServer(t, broker.EmbeddedOptions{StoreDir: t.TempDir()})
	url := srv.ClientURL()
	agentCmd := startTestAgent(t, url, "--capacity", "2")
	dir := t.TempDir()
	holder, _ := startTestClient(t, childScenario{Name: "holder", URL: url, Dir: dir}, "holding")
	if free, capacity := freeCapacity(t, url); free != 0 || capacity != 2 {
		t.Fatalf("agent has %d of %d slots free while the client holds them, want 0 of 2", free, capacity)
	}
	if err := holder.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = holder.Wait()
	killed := time.Now()
	testutil.Eventually(t, 30*time.Second, func() error {
		if free, capacity := freeCapacity(t, url); free != capacity {
			return fmt.Errorf("agent has %d of %d slots free", free, capacity)
		}
		return nil
	})
	back := time.Since(killed)
	nc := testutil.Connect(t, url)
	set, err := limits.NewSet(limits.SetOptions{Name: "held-slots", Conn: nc},
		limits.ResourceLimit{Key: "slots", Capacity: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var held []*limits.Acquisition
	for range 2 {
		acq, err := set.Acquire(ctx, limits.Request{"slots": 1})
		if err != nil {
			t.Fatalf("slot of the killed client's limit not released: %v", err)
		}
		held = append(held, acq)
	}
	slotsBack := time.Since(killed)
	for _, acq := range held {
		acq.Release()
	}
	t.Logf("agent capacity back %s after SIGKILL, both slots acquired %s after", back.Round(time.Millisecond),
		slotsBack.Round(time.Millisecond))
	// The lease is ten heartbeats (10 s); the agent notices within a few more seconds.
	if back > 20*time.Second {
		t.Errorf("agent capacity back after %s, want within the 10 s lease and a few heartbeats", back)
	}
	if ran := checkNoneTwice(t, dir); ran != 2 {
		t.Errorf("%d calls ran, want the 2 holding the slots: the queued ones must never start", ran)
	}
	stopProcess(t, agentCmd)
}

// TestFailingConstructor has every worker's constructor fail: New returns the constructor's error after a few
// attempts per worker, with no spawn storm, and leaves nothing running, in process and fleet mode.
func TestFailingConstructor(t *testing.T) {
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	url := srv.ClientURL()
	for _, mode := range []client.Mode{client.Process, client.Fleet} {
		t.Run(string(mode), func(t *testing.T) {
			if mode == client.Fleet {
				a := startTestAgent(t, url, "--capacity", "2")
				defer stopProcess(t, a)
			}
			dir := t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			start := time.Now()
			p, err := client.New(ctx, brokenKind, client.Options{Mode: mode, MaxWorkers: 2,
				Conn: testutil.Connect(t, url)}, dir)
			took := time.Since(start)
			if err == nil {
				_ = p.Stop(ctx)
				t.Fatal("New of a kind whose constructor fails succeeded")
			}
			if !strings.Contains(err.Error(), "broken on purpose") {
				t.Errorf("New = %v, want the constructor's error", err)
			}
			tries := lines(t, filepath.Join(dir, "ctor.log"))
			t.Logf("New failed after %s and %d constructor runs: %v", took.Round(time.Millisecond), tries, err)
			if tries < 1 || tries > 6 {
				t.Errorf("the constructor ran %d times, want 1 to 6 (3 attempts for each of 2 workers)", tries)
			}
			if mode == client.Process {
				pids := pidsIn(t, filepath.Join(dir, "ctor.log"))
				testutil.Eventually(t, 10*time.Second, func() error {
					for _, pid := range pids {
						if err := syscall.Kill(pid, 0); err == nil && !zombie(pid) {
							return fmt.Errorf("worker process %d still runs", pid)
						}
					}
					return nil
				})
				return
			}
			testutil.Eventually(t, 10*time.Second, func() error {
				if free, capacity := freeCapacity(t, url); free != capacity || capacity != 2 {
					return fmt.Errorf("agent has %d of %d slots free", free, capacity)
				}
				return nil
			})
		})
	}
}

// TestReplacementThatKeepsFailing kills a worker whose replacements then fail to construct: the pool backs off
// between attempts (no spawn storm), says why in its stats, and restores its size once the constructor works again.
func TestReplacementThatKeepsFailing(t *testing.T) {
	dir := t.TempDir()
	okFile := filepath.Join(dir, "ok")
	if err := os.WriteFile(okFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p := newPool(t, brokenKind, client.Options{Mode: client.Process, MaxWorkers: 2}, dir)
	if err := os.Remove(okFile); err != nil {
		t.Fatal(err)
	}
	ws, err := p.WorkerStats(0)
	if err != nil {
		t.Fatal(err)
	}
	ctorLog := filepath.Join(dir, "ctor.log")
	before := lines(t, ctorLog)
	if err := syscall.Kill(ws.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		st := p.Stats()
		if st.Replacing != 1 || !strings.Contains(st.StartError, "broken on purpose") {
			return fmt.Errorf("stats say replacing %d, start error %q", st.Replacing, st.StartError)
		}
		return nil
	})
	time.Sleep(6 * time.Second)
	tries := lines(t, ctorLog) - before
	st := p.Stats()
	if st.TotalWorkers != 1 {
		t.Errorf("pool has %d workers while the replacement fails, want 1", st.TotalWorkers)
	}
	// Backing off from 100 ms and doubling, 6 s hold 6 or 7 attempts.
	t.Logf("%d constructor runs in the 6 s after the kill; stats %d workers, replacing %d: %s", tries,
		st.TotalWorkers, st.Replacing, st.StartError)
	if tries < 3 || tries > 10 {
		t.Errorf("%d replacement attempts in 6 s, want 3 to 10", tries)
	}
	if err := os.WriteFile(okFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// The next attempt is at most the longest backoff (10 s) away.
	testutil.Eventually(t, 15*time.Second, func() error {
		if st := p.Stats(); st.TotalWorkers != 2 || st.Replacing != 0 || st.StartError != "" {
			return fmt.Errorf("%d workers, replacing %d, start error %q", st.TotalWorkers, st.Replacing,
				st.StartError)
		}
		return nil
	})
	for range 4 {
		result(t, client.Call[any](p, "Nothing"))
	}
}

// TestAttachHonoursAdvertisedHeartbeat attaches to standing workers that report every 5 s, five times the pool's own
// default interval: the pool waits for their heartbeats and never drops them.
func TestAttachHonoursAdvertisedHeartbeat(t *testing.T) {
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	url := srv.ClientURL()
	startAgent(t, url, "--capacity", "-1", "--serve", "DataProcessor=2", "--args", "[10]", "--heartbeat", "5s")
	nc := testutil.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := client.Attach(ctx, nc, "DataProcessor", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Stop(ctx) }()
	testutil.Eventually(t, 10*time.Second, func() error {
		if n := p.Stats().TotalWorkers; n != 2 {
			return fmt.Errorf("%d workers attached, want 2", n)
		}
		return nil
	})
	low, failed := 2, 0
	for i := range 60 {
		if n := p.Stats().TotalWorkers; n < low {
			low = n
		}
		if v, err := client.Call[int](p, "Process", i).Result(ctx); err != nil || v != 10*i {
			failed++
			t.Errorf("Process(%d) = %d, %v", i, v, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("over 12 s and 60 calls: fewest workers attached %d, calls failed %d", low, failed)
	if low != 2 {
		t.Errorf("the pool dropped workers that report every 5 s: %d attached at the lowest, want 2", low)
	}
}

// TestIdempotentCallsFailOver SIGKILLs the agent of a fleet worker holding 80 calls, half of a method marked
// idempotent, while the pool has a second worker: the idempotent calls are sent to the live worker and succeed; the
// others fail with ErrWorkerLost unless they had finished. A call of Run runs at most once, one of Again at most twice
// (once on the lost worker).
func TestIdempotentCallsFailOver(t *testing.T) {
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	url := srv.ClientURL()
	victim := startTestAgent(t, url, "--capacity", "1")
	nc := testutil.Connect(t, url)
	dir := t.TempDir()
	p := newPool(t, ledgerKind, client.Options{Mode: client.Fleet, MaxWorkers: 1, Conn: nc}, dir)
	// Every call goes to the first worker, on the victim; the second worker joins once they are there.
	const calls = 40
	again := make([]*client.Future[int], calls)
	run := make([]*client.Future[int], calls)
	for i := range calls {
		again[i] = client.Call[int](p, "Again", i, 100*time.Millisecond)
		run[i] = client.Call[int](p, "Run", i, 100*time.Millisecond)
	}
	startTestAgent(t, url, "--capacity", "1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Resize(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if ws, err := p.WorkerStats(1); err != nil || ws.PID == victim.Process.Pid {
		t.Fatalf("second worker: pid %d, %v; want it on the second agent", ws.PID, err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := victim.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = victim.Wait()
	gotAgain := settle(t, again, 30*time.Second)
	gotRun := settle(t, run, 30*time.Second)
	lost := 0
	for i := range calls {
		if r := gotAgain[i]; r.err != nil || r.v != 2*i {
			t.Errorf("Again(%d) = %d, %v; want %d after failover", i, r.v, r.err, 2*i)
		}
		switch r := gotRun[i]; {
		case errors.Is(r.err, client.ErrWorkerLost):
			lost++
		case r.err != nil || r.v != 2*i:
			t.Errorf("Run(%d) = %d, %v; want %d or ErrWorkerLost", i, r.v, r.err, 2*i)
		}
	}
	st := p.Stats()
	t.Logf("failovers %d, Run calls lost %d", st.Failovers, lost)
	if st.Failovers == 0 || lost == 0 {
		t.Fatalf("failovers %d, lost Run calls %d: the killed worker had calls of both methods", st.Failovers, lost)
	}
	// A call of Again may have started on the killed worker before it ran again on the live one; Run never twice.
	ranRun := 0
	for key, n := range runs(t, dir) {
		method, _, _ := strings.Cut(key, " ")
		if method == "Run" {
			ranRun++
		}
		if max := map[string]int{"Run": 1, "Again": 2}[method]; n > max {
			t.Errorf("%s ran %d times, want at most %d", key, n, max)
		}
	}
	if ranRun < calls-lost || ranRun > calls {
		t.Errorf("%d Run calls ran, want %d to %d", ranRun, calls-lost, calls)
	}
	_ = p.Stop(ctx)
}

// pidsIn reads the PIDs a Broken constructor wrote down.
func pidsIn(t *testing.T, name string) []int {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	return pids
}
