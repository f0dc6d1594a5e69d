package integration

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/natsfleet/natsfleet/agent"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/testutil"
)

// Ledger is a worker that writes down every call it starts (its method and call ID), in a file per process under its
// directory, so that a test can count the runs of each call across processes: no call of a fault test may run twice.
type Ledger struct{ dir string }

func NewLedger(dir string) *Ledger { return &Ledger{dir: dir} }

// Run records the call, waits hold (or until the call is cancelled) and returns 2n.
func (l *Ledger) Run(ctx context.Context, n int, hold time.Duration) (int, error) {
	if err := l.record(ctx); err != nil {
		return 0, err
	}
	select {
	case <-time.After(hold):
		return 2 * n, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Again is Run for a method marked idempotent: it fails over to another worker when its worker is lost.
func (l *Ledger) Again(ctx context.Context, n int, hold time.Duration) (int, error) {
	return l.Run(ctx, n, hold)
}

// Where records the call, waits hold and returns the ID of the worker that ran it.
func (l *Ledger) Where(ctx context.Context, hold time.Duration) (string, error) {
	if _, err := l.Run(ctx, 0, hold); err != nil {
		return "", err
	}
	info, _ := fleet.CallInfo(ctx)
	return info.WorkerID, nil
}

// Hold takes the pool's resource limit, records the call, and holds the resource for hold or until cancelled.
func (l *Ledger) Hold(ctx context.Context, hold time.Duration) error {
	acq, err := fleet.Limits(ctx).Acquire(ctx, nil)
	if err != nil {
		return err
	}
	defer acq.Release()
	if err := l.record(ctx); err != nil {
		return err
	}
	select {
	case <-time.After(hold):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Span takes one unit of the pool's resource limit and holds it for hold, writing down when it held it, so that a test
// can check that the limit's holders never overlapped more than its capacity (maxOverlap).
func (l *Ledger) Span(ctx context.Context, hold time.Duration) error {
	acq, err := fleet.Limits(ctx).Acquire(ctx, nil)
	if err != nil {
		return err
	}
	defer acq.Release()
	start := time.Now()
	select {
	case <-time.After(hold):
	case <-ctx.Done():
		return ctx.Err()
	}
	f, err := os.OpenFile(filepath.Join(l.dir, fmt.Sprintf("%d.spans", os.Getpid())),
		os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintln(f, start.UnixNano(), time.Now().UnixNano())
	return err
}

// maxOverlap returns how many of the spans written under dir were ever held at once, and how many there are.
func maxOverlap(t *testing.T, dir string) (most, spans int) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.spans"))
	if err != nil {
		t.Fatal(err)
	}
	type edge struct {
		at    int64
		delta int
	}
	var edges []edge
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var from, to int64
			if _, err := fmt.Sscan(line, &from, &to); err != nil {
				t.Fatalf("%s: %q: %v", name, line, err)
			}
			edges = append(edges, edge{from, 1}, edge{to, -1})
			spans++
		}
	}
	// Ends before starts at the same instant: a span that ends as another starts did not overlap it.
	slices.SortFunc(edges, func(a, b edge) int { return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.delta, b.delta)) })
	n := 0
	for _, e := range edges {
		n += e.delta
		most = max(most, n)
	}
	return most, spans
}

func (l *Ledger) record(ctx context.Context) error {
	info, _ := fleet.CallInfo(ctx)
	f, err := os.OpenFile(filepath.Join(l.dir, fmt.Sprintf("%d.log", os.Getpid())), os.O_APPEND|os.O_CREATE|os.O_WRONLY,
		0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintln(f, info.Method, info.CallID)
	return err
}

var ledgerKind = fleet.Register("Ledger", NewLedger).Idempotent("Again")

// Broken is a kind whose constructor writes down that it ran and fails unless dir holds a file named "ok".
type Broken struct{}

func NewBroken(dir string) (*Broken, error) {
	f, err := os.OpenFile(filepath.Join(dir, "ctor.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err == nil {
		fmt.Fprintln(f, os.Getpid())
		f.Close()
	}
	if _, err := os.Stat(filepath.Join(dir, "ok")); err != nil {
		return nil, errors.New("broken on purpose")
	}
	return &Broken{}, nil
}

func (*Broken) Nothing() {}

var brokenKind = fleet.Register("Broken", NewBroken)

// runs counts the runs of each call written down under dir.
func runs(t *testing.T, dir string) map[string]int {
	t.Helper()
	out := map[string]int{}
	files, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if filepath.Base(name) == "ctor.log" {
			continue
		}
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			out[sc.Text()]++
		}
		f.Close()
	}
	return out
}

// lines counts the lines of a file, 0 when it does not exist.
func lines(t *testing.T, name string) int {
	t.Helper()
	b, err := os.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

// envTestAgent makes the test binary an agent (package agent's command line, as JSON) hosting the kinds this
// package and examples/demo register.
const envTestAgent = "NATSFLEET_TEST_AGENT"

func testAgentMain() {
	var args []string
	if err := json.Unmarshal([]byte(os.Getenv(envTestAgent)), &args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := agent.Run(ctx, args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// startTestAgent runs the test binary as an agent on url with args, waits until it serves, and stops it when the
// test ends.
func startTestAgent(t *testing.T, url string, args ...string) *exec.Cmd {
	t.Helper()
	js, err := json.Marshal(append([]string{"--nats", url}, args...))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envTestAgent+"="+string(js))
	return runAgent(t, cmd)
}

// callRecord is the outcome of one call of a fault test.
type callRecord struct {
	id  string
	v   int
	err error
}

// settle waits for every future, at most within, and fails the test if one is still pending then: no future may
// wait forever.
func settle(t *testing.T, futs []*client.Future[int], within time.Duration) []callRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	out := make([]callRecord, len(futs))
	pending := 0
	for i, f := range futs {
		v, err := f.Result(ctx)
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			pending++
			continue
		}
		out[i] = callRecord{v: v, err: err}
	}
	if pending > 0 {
		t.Fatalf("%d of %d futures unresolved %s after the fault", pending, len(futs), within)
	}
	return out
}

// checkNoneTwice fails the test if the ledger shows a call that ran more than once, and returns the number of
// calls that ran.
func checkNoneTwice(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	for id, k := range runs(t, dir) {
		if k > 1 {
			t.Errorf("call %s ran %d times", id, k)
		}
		n++
	}
	return n
}

// freeCapacity returns the agents' free and total capacity as they report it.
func freeCapacity(t *testing.T, url string) (free, capacity int) {
	t.Helper()
	agents, err := client.DiscoverAgents(context.Background(), testutil.Connect(t, url), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range agents {
		free += a.Free
		capacity += a.Capacity
	}
	return free, capacity
}

// Blob returns n bytes: big replies for the slow-consumer test.
func (l *Ledger) Blob(ctx context.Context, n int) ([]byte, error) {
	if err := l.record(ctx); err != nil {
		return nil, err
	}
	return make([]byte, n), nil
}
