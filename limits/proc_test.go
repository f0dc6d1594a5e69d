package limits

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/internal/testutil"
)

// Child processes are this test binary re-executed with childEnv set: TestMain
// runs runChild instead of the tests. Their configuration travels in the
// environment, their findings on stdout, one line each.
const childEnv = "LIMITS_TEST_CHILD"

// childConfig is a child's job.
type childConfig struct {
	URL         string        `json:"url"`
	Name        string        `json:"name"`
	Limits      []byte        `json:"limits"` // MarshalLimits
	Mode        KVMode        `json:"mode"`
	Goroutines  int           `json:"goroutines"`
	Duration    time.Duration `json:"duration"`
	Hold        time.Duration `json:"hold"`
	Request     Request       `json:"request"`
	ResourceTTL time.Duration `json:"resource_ttl"`
	Raw         bool          `json:"raw"` // bench: raw KV CAS on key Name instead of a set
	Partitions  []string      `json:"partitions"`
}

const childConfigEnv = "LIMITS_TEST_CHILD_CONFIG"

func runChild(mode string) int {
	var cfg childConfig
	if err := json.Unmarshal([]byte(os.Getenv(childConfigEnv)), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "child config:", err)
		return 2
	}
	nc, err := nats.Connect(cfg.URL)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer nc.Close()
	out := &lineWriter{w: bufio.NewWriter(os.Stdout)}
	if err := runChildMode(mode, nc, cfg, out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func runChildMode(mode string, nc *nats.Conn, cfg childConfig, out *lineWriter) error {
	if cfg.Raw {
		kv, err := rawKV(nc, cfg.Name)
		if err != nil {
			return err
		}
		ctx := context.Background()
		return errors.Join(childBench(cfg, out, func() error { return rawCAS(ctx, kv, cfg.Name) }), out.flush())
	}
	ls, err := UnmarshalLimits(cfg.Limits)
	if err != nil {
		return err
	}
	s, err := NewSet(SetOptions{Name: cfg.Name, Conn: nc, Mode: cfg.Mode, ResourceLeaseTTL: cfg.ResourceTTL}, ls...)
	if err != nil {
		return err
	}
	switch mode {
	case "soak":
		err = childSoak(s, cfg, out)
	case "hold":
		err = childHold(s, cfg, out)
	case "partitions":
		err = childPartitions(s, cfg, out)
	case "bench":
		ctx := context.Background()
		err = childBench(cfg, out, func() error {
			a, err := s.Acquire(ctx, cfg.Request)
			if err != nil {
				return err
			}
			a.Update(Usage(cfg.Request))
			return a.Release()
		})
	default:
		err = fmt.Errorf("unknown child mode %q", mode)
	}
	return errors.Join(err, s.Close(), out.flush())
}

type lineWriter struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (l *lineWriter) printf(format string, args ...any) {
	l.mu.Lock()
	fmt.Fprintf(l.w, format+"\n", args...)
	l.mu.Unlock()
}

func (l *lineWriter) flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Flush()
}

// childSoak acquires in a loop on every goroutine for the duration, printing
// "A <decided> <returned> <released>" (Unix ns) per admission.
func childSoak(s *Set, cfg childConfig, out *lineWriter) error {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Duration)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, cfg.Goroutines)
	for range cfg.Goroutines {
		wg.Go(func() {
			for {
				a, err := s.Acquire(ctx, cfg.Request)
				if err != nil {
					if !errors.Is(err, context.DeadlineExceeded) {
						errs <- err
					}
					return
				}
				ret := time.Now().UnixNano()
				time.Sleep(cfg.Hold)
				rel := time.Now().UnixNano()
				a.Update(Usage(cfg.Request))
				if err := a.Release(); err != nil {
					errs <- err
					return
				}
				out.printf("A %d %d %d", a.Time().UnixNano(), ret, rel)
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// childPartitions prints "READY" and, at the first line on stdin, takes
// from every partition in turn on every goroutine, without waiting, for the
// duration, then prints "P <partition> <admitted>" per partition.
func childPartitions(s *Set, cfg childConfig, out *lineWriter) error {
	out.printf("READY")
	if err := out.flush(); err != nil {
		return err
	}
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Duration)
	defer cancel()
	counts := make([]atomic.Int64, len(cfg.Partitions))
	var wg sync.WaitGroup
	errs := make(chan error, cfg.Goroutines)
	for g := range cfg.Goroutines {
		wg.Go(func() {
			for i := g; ctx.Err() == nil; i++ {
				p := i % len(cfg.Partitions)
				_, err := s.TryAcquireIn(ctx, cfg.Partitions[p], cfg.Request)
				switch {
				case err == nil:
					counts[p].Add(1)
				case errors.Is(err, ErrWouldWait):
				case ctx.Err() != nil: // the run ended while it was queued
					return
				default:
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for i, p := range cfg.Partitions {
		out.printf("P %s %d", p, counts[i].Load())
	}
	return <-errs
}

// childHold acquires the request, prints "HELD", and holds it until stdin
// closes (or a minute passes: a safety net against orphans).
func childHold(s *Set, cfg childConfig, out *lineWriter) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, err := s.Acquire(ctx, cfg.Request)
	if err != nil {
		return err
	}
	out.printf("HELD")
	if err := out.flush(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return a.Release()
}

// childBench prints "READY", then for each "GO <n>" line on stdin runs op n
// times over its goroutines and prints "DONE".
func childBench(cfg childConfig, out *lineWriter, op func() error) error {
	out.printf("READY")
	if err := out.flush(); err != nil {
		return err
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		n, err := strconv.Atoi(strings.TrimPrefix(in.Text(), "GO "))
		if err != nil {
			return err
		}
		if err := runN(cfg.Goroutines, n, op); err != nil {
			return err
		}
		out.printf("DONE")
		if err := out.flush(); err != nil {
			return err
		}
	}
	return in.Err()
}

// runN runs op n times over g goroutines.
func runN(g, n int, op func() error) error {
	var left atomic.Int64
	left.Store(int64(n))
	var wg sync.WaitGroup
	errs := make(chan error, g)
	for range g {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				if err := op(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// child is a running child process.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // stdout, closed at EOF
	done  chan struct{}
	err   error // the process's exit, after done
}

func startChild(t testing.TB, mode string, cfg childConfig) *child {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, childConfigEnv+"="+string(b))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	c := &child{cmd: cmd, lines: make(chan string, 1024), done: make(chan struct{})}
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		c.err = cmd.Wait()
		if c.err != nil && stderr.Len() > 0 {
			c.err = fmt.Errorf("%w: %s", c.err, stderr.String())
		}
		close(c.done)
	}()
	t.Cleanup(func() {
		c.stdin.Close()
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

// expect waits for the next line to start with prefix.
func (c *child) expect(t testing.TB, prefix string, d time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			<-c.done
			t.Fatalf("child ended (%v) before %q", c.err, prefix)
		}
		if !strings.HasPrefix(l, prefix) {
			t.Fatalf("child said %q, want %q", l, prefix)
		}
		return l
	case <-time.After(d):
		t.Fatalf("no %q from child within %v", prefix, d)
	}
	return ""
}

func marshalLimits(t testing.TB, ls ...Limit) []byte {
	t.Helper()
	b, err := MarshalLimits(ls)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKVSoakProcesses: 4 processes × 8 goroutines on one shared set for 10s
// (LIMITS_SOAK sets another duration), two processes in Exact mode and two
// in Lease mode. The merged admission log must keep the sliding window in
// every window, the resource must never have more than its capacity of
// holders, and a ledger limit whose window outlasts the test must count
// exactly the admissions made: none lost, none counted twice.
func TestKVSoakProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: 4 processes for 10s")
	}
	// Not parallel: it runs alone, before the parallel tests, so that its 32
	// goroutines do not starve theirs of the machine's CPUs (and vice versa).
	d := 10 * time.Second
	if v := os.Getenv("LIMITS_SOAK"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	const capacity, slots = 100, 5
	window := 500 * time.Millisecond
	ls := []Limit{
		CallLimit{Window: window, Capacity: capacity},
		ResourceLimit{Key: "slots", Capacity: slots},
		RateLimit{Key: "ledger", Window: 24 * time.Hour, Capacity: 1e9},
	}
	cfg := childConfig{URL: srv.ClientURL(), Name: "soak", Limits: marshalLimits(t, ls...), Goroutines: 8,
		Duration: d, Hold: time.Millisecond, Request: Request{"ledger": 1}}
	var children []*child
	for i := range 4 {
		c := cfg
		if i >= 2 {
			c.Mode = Lease
		}
		children = append(children, startChild(t, "soak", c))
	}
	var decided, returned []int64
	var holds [][2]int64
	for _, c := range children {
		for l := range c.lines {
			var dec, ret, rel int64
			if _, err := fmt.Sscanf(l, "A %d %d %d", &dec, &ret, &rel); err != nil {
				t.Fatalf("child line %q: %v", l, err)
			}
			decided, returned = append(decided, dec), append(returned, ret)
			holds = append(holds, [2]int64{ret, rel})
		}
		<-c.done
		if c.err != nil {
			t.Fatalf("child: %v", c.err)
		}
	}
	slices.Sort(decided)
	slices.Sort(returned)
	checkLog(t, SlidingWindow, decided, capacity, window, 0)
	checkLog(t, SlidingWindow, returned, capacity, window, returnLatency)
	if most := maxOverlap(holds); most > slots {
		t.Fatalf("%d holders of %d slots at once", most, slots)
	}
	check := sharedSets(t, srv, "soak", 1, SetOptions{}, ls...)[0]
	if got := check.Stats()["ledger"].Extra["current_requests"]; got != float64(len(decided)) {
		t.Fatalf("ledger counts %v, children admitted %d", got, len(decided))
	}
	t.Logf("%d admissions by 4 processes × 8 goroutines in %v", len(decided), d)
}

// TestKVPartitionsAcrossProcesses: two processes take from two partitions
// of one shared set as fast as they can: each partition admits exactly its
// own capacity, fleet-wide.
func TestKVPartitionsAcrossProcesses(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	const capacity = 200
	ls := []Limit{CallLimit{Window: time.Hour, Capacity: capacity, PerPartition: true}}
	cfg := childConfig{URL: srv.ClientURL(), Name: "tenants", Limits: marshalLimits(t, ls...), Goroutines: 4,
		Duration: 2 * time.Second, Partitions: []string{"acme", "globex"}}
	children := []*child{startChild(t, "partitions", cfg), startChild(t, "partitions", cfg)}
	for _, c := range children {
		c.expect(t, "READY", 30*time.Second)
	}
	for _, c := range children {
		fmt.Fprintln(c.stdin, "GO")
	}
	admitted := map[string][]int{}
	for _, c := range children {
		for l := range c.lines {
			var p string
			var n int
			if _, err := fmt.Sscanf(l, "P %s %d", &p, &n); err != nil {
				t.Fatalf("child line %q: %v", l, err)
			}
			admitted[p] = append(admitted[p], n)
		}
		<-c.done
		if c.err != nil {
			t.Fatalf("child: %v", c.err)
		}
	}
	for _, p := range cfg.Partitions {
		ns := admitted[p]
		if len(ns) != 2 || ns[0]+ns[1] != capacity || ns[0] == 0 || ns[1] == 0 {
			t.Fatalf("partition %s: the processes admitted %v, want %d in all, by both", p, ns, capacity)
		}
		t.Logf("partition %s: the two processes admitted %d and %d of %d", p, ns[0], ns[1], capacity)
	}
}

// maxOverlap is the most intervals that overlap at one instant.
func maxOverlap(iv [][2]int64) int {
	type edge struct {
		at    int64
		delta int
	}
	var es []edge
	for _, v := range iv {
		es = append(es, edge{v[0], 1}, edge{v[1], -1})
	}
	slices.SortFunc(es, func(a, b edge) int {
		if a.at != b.at {
			return int(a.at - b.at)
		}
		return a.delta - b.delta // an end before a start at the same instant
	})
	most, n := 0, 0
	for _, e := range es {
		n += e.delta
		most = max(most, n)
	}
	return most
}

// TestKVSigkillReturnsSlots kills a process holding every slot of a shared
// ResourceLimit: the slots stay held while it lives (past several lease
// TTLs), and come back within ResourceLeaseTTL+MaxSkew of its death without
// anyone's help.
func TestKVSigkillReturnsSlots(t *testing.T) {
	t.Parallel()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	ttl := time.Second
	ls := []Limit{ResourceLimit{Key: "gpu", Capacity: 2}}
	c := startChild(t, "hold", childConfig{URL: srv.ClientURL(), Name: "gpus", Limits: marshalLimits(t, ls...),
		Request: Request{"gpu": 2}, ResourceTTL: ttl})
	c.expect(t, "HELD", 30*time.Second)
	s := sharedSets(t, srv, "gpus", 1, SetOptions{ResourceLeaseTTL: ttl}, ls...)[0]
	ctx := context.Background()
	for range 8 { // 2s: twice the TTL, so the keepalive must have renewed
		if _, err := s.TryAcquire(ctx, nil); !errors.Is(err, ErrWouldWait) {
			t.Fatalf("slot of a live holder taken: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.done
	killed := time.Now()
	if _, err := s.TryAcquire(ctx, nil); !errors.Is(err, ErrWouldWait) {
		t.Fatalf("slot free right after the kill (%v): the lease should outlive the holder by up to its TTL", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	a, err := s.Acquire(wctx, Request{"gpu": 2})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	bound := ttl + defaultMaxSkew
	if d := time.Since(killed); d > bound+time.Second {
		t.Fatalf("slots came back %v after SIGKILL; bound %v", d, bound)
	} else {
		t.Logf("slots came back %v after SIGKILL (bound %v)", d, bound)
	}
}

// benchProcs runs b.N acquisitions spread over procs child processes sharing
// set name, after they are connected and ready.
func benchProcs(b *testing.B, procs int, cfg childConfig) {
	var children []*child
	for range procs {
		c := startChild(b, "bench", cfg)
		c.expect(b, "READY", 30*time.Second)
		children = append(children, c)
	}
	b.ResetTimer()
	for i, c := range children {
		n := b.N / procs
		if i < b.N%procs {
			n++
		}
		fmt.Fprintf(c.stdin, "GO %d\n", n)
	}
	for _, c := range children {
		c.expect(b, "DONE", 5*time.Minute)
	}
	b.StopTimer()
}
