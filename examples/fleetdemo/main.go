// Command fleetdemo walks through concurry's "Worker Pools" guide with natsfleet: thread, process and fleet pools,
// load balancing, shared limits (also per customer), progress bars, a three-pool pipeline, retries and on-demand workers. Every section
// checks its own results; the program exits 1 when any check failed.
//
//	fleetdemo --nats nats://127.0.0.1:4222   # use a running server and its worker agents (what `make run` does)
//	fleetdemo                                # start an embedded server and two agents inside this process
//
// The fleet sections expect worker agents with free capacity (two with --capacity 4 in `make run`) and at least one
// agent serving standing DataProcessor workers built with multiplier 10 (--serve DataProcessor=2
// --args 'DataProcessor=[10]').
//
// Process-mode pools re-execute this program as their workers, which is why main calls fleet.ServeIfChild first.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/fleet"
)

func main() {
	fleet.ServeIfChild()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// section is one part of the walkthrough.
type section struct {
	title string
	run   func(ctx context.Context, d *runner)
}

var sections = []section{
	{"Thread pool: DataProcessor (least active)", threadPool},
	{"Load balancing: round robin order, least active avoiding a busy worker", balancing},
	{"Process pool: 4 child processes, errors and panics across processes", processPool},
	{"Fleet: a pool spawned on the agents, and Attach to standing workers", fleetPools},
	{"Limits: a shared call rate and token budget, a shared connection pool", sharedLimits},
	{"Limits per customer: a budget per partition, shared by every process", partitionedLimits},
	{"Progress: bars of calls running in child processes, and a Gather bar", progress},
	{"Pipeline: Fetcher (thread) -> Processor (process) -> Storer (thread)", pipeline},
	{"Retries: FlakyWorker failing 30% of its calls", retries},
	{"On-demand pools: a fresh worker per call", onDemand},
}

// run runs every section and returns the exit code: 0 when every check passed, 1 otherwise, 2 for bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fleetdemo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("nats", "", "NATS server URL of a running fleet (default: start an embedded server and two "+
		"agents in this process)")
	timeout := fs.Duration("timeout", 90*time.Second, "deadline for the whole demo")
	sectionTimeout := fs.Duration("section-timeout", 30*time.Second, "deadline for each section")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fleetdemo: unexpected arguments %q\n", fs.Args())
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	d := &runner{out: stdout, childLog: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if *url != "" {
		nc, err := broker.Connect(broker.Options{URL: *url, Name: "fleetdemo"})
		if err != nil {
			fmt.Fprintln(stderr, "fleetdemo:", err)
			return 1
		}
		defer nc.Close()
		d.nc = nc
	} else {
		nc, shutdown, err := startLocalFleet(d.childLog)
		if err != nil {
			fmt.Fprintln(stderr, "fleetdemo:", err)
			return 1
		}
		defer shutdown()
		d.nc = nc
	}
	fmt.Fprintf(stdout, "natsfleet demo on %s\n", d.nc.ConnectedUrlRedacted())

	start := time.Now()
	for i, s := range sections {
		d.section = s.title
		if ctx.Err() != nil {
			d.failf("not run: %v", context.Cause(ctx))
			continue
		}
		fmt.Fprintf(stdout, "\n=== %d. %s ===\n", i+1, s.title)
		began := time.Now()
		sctx, scancel := context.WithTimeout(ctx, *sectionTimeout)
		s.run(sctx, d)
		scancel()
		fmt.Fprintf(stdout, "--- %d. done in %s\n", i+1, time.Since(began).Round(time.Millisecond))
	}
	fmt.Fprintf(stdout, "\n=== summary: %d sections in %s ===\n", len(sections), time.Since(start).Round(time.Millisecond))
	if len(d.failures) > 0 {
		for _, f := range d.failures {
			fmt.Fprintln(stdout, "FAILED:", f)
		}
		return 1
	}
	fmt.Fprintln(stdout, "all checks passed")
	return 0
}

// runner carries what sections share and collects their failed checks.
type runner struct {
	out      io.Writer
	nc       *nats.Conn
	childLog *slog.Logger // process-mode children's output and pool warnings
	section  string

	mu       sync.Mutex
	failures []string
}

func (d *runner) printf(format string, args ...any) { fmt.Fprintf(d.out, format+"\n", args...) }

// failf records a failed check of the current section.
func (d *runner) failf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	d.mu.Lock()
	d.failures = append(d.failures, d.section+": "+msg)
	d.mu.Unlock()
	fmt.Fprintln(d.out, "ERROR:", msg)
}

// expect records a failure unless ok; it returns ok.
func (d *runner) expect(ok bool, format string, args ...any) bool {
	if !ok {
		d.failf(format, args...)
	}
	return ok
}

// failed records err, if any, and reports whether there was one.
func (d *runner) failed(what string, err error) bool {
	if err != nil {
		d.failf("%s: %v", what, err)
		return true
	}
	return false
}

// newPool starts a pool, registering its Stop; nil (failure recorded) when it cannot start.
func (d *runner) newPool(ctx context.Context, kind *fleet.Kind, opts client.Options, args ...any) *client.Pool {
	if opts.Logger == nil {
		opts.Logger = d.childLog
	}
	p, err := client.New(ctx, kind, opts, args...)
	if d.failed(fmt.Sprintf("start %s pool of %s", opts.Mode, kind.Name()), err) {
		return nil
	}
	return p
}

// stop stops a pool with a deadline and records a failure if it does not stop cleanly.
func (d *runner) stop(p *client.Pool, name string) {
	if p == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	d.failed("stop "+name, p.Stop(ctx))
	if s := p.Stats(); !s.Stopped {
		d.failf("%s: stats say stopped=false after Stop", name)
	}
}

// stats prints a pool's Stats as JSON.
func (d *runner) stats(name string, p *client.Pool) client.PoolStats {
	s := p.Stats()
	b, err := json.MarshalIndent(s, "  ", "  ")
	if d.failed("stats of "+name, err) {
		return s
	}
	d.printf("%s stats:\n  %s", name, b)
	return s
}

// eventually polls cond every 10ms until it holds or ctx ends; it returns cond's last error.
func eventually(ctx context.Context, cond func() error) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %v)", err, ctx.Err())
		case <-t.C:
		}
	}
}
