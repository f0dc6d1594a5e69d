// Command bench measures natsfleet against the raw baselines a Go programmer would write by hand and against peer
// libraries, side by side in one run, and prints a table of medians, min–max and the ratios the project's targets
// are stated in, each with PASS or MISS.
//
//	cd cmd/bench && go run .                       # every row, 5 × 1s each
//	go run . -rows thread-seq,kv -repeat 3         # some rows
//	go run . -json bench.json -cpuprofile cpu.out  # figures as JSON; CPU profiles of this process and its children
//
// Each row runs each of its contenders for -duration, -repeat times, interleaved (contender A, B, C, then B, C, A
// and so on), so that noise from the machine hits all of them alike; a row reports the median and the range. Rows
// over NATS also report the CPU time each call cost in the caller, the NATS server (a child process) and the
// worker side, which tells where a contender's time goes; -cpuprofile writes a profile per process to find out why.
//
// The command is its own module so that the peer libraries it measures (alitto/pond, panjf2000/ants) never become
// dependencies of natsfleet. It re-executes itself for the child processes it needs: natsfleet process-mode workers
// (fleet.ServeIfChild), fleet agents, raw NATS responders, nats.go micro services and KV limit clients.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/natsfleet/natsfleet/fleet"
)

func main() {
	fleet.ServeIfChild()
	if mode := os.Getenv(envChild); mode != "" {
		os.Exit(runChild(mode))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command line's settings.
type options struct {
	duration   time.Duration
	repeat     int
	rows       []string
	jsonFile   string
	cpuProfile string
	memProfile string
	leaseSize  float64
	only       []string // contenders to run, by name substring; empty: all
}

// group is a set of rows that share their setup (servers, child processes).
type group struct {
	name, about string
	run         func(*bench) error
}

// groups are the rows the command can run, in the order it runs them; -rows selects by name.
var groups = []group{
	{"thread-seq", "thread mode, one caller: Call+Result vs raw pool, pond, ants", (*bench).threadSequential},
	{"thread-pipe", "thread mode, 100k calls in flight on 4 workers vs raw pool, pond, ants", (*bench).threadPipelined},
	{"process-seq", "1 worker process vs raw nc.Request and a nats.go micro endpoint in a child", (*bench).processSequential},
	{"process-pipe", "4 worker processes at 256 and 1024 in flight vs raw pipelined and micro ×4", (*bench).processPipelined},
	{"fleet-pipe", "4 workers in 2 agent processes at 256 and 1024 in flight", (*bench).fleetPipelined},
	{"restart", "process, 256 in flight on 4 workers for 4 s, steady vs through a 1.5 s server restart in place", (*bench).restart},
	{"uneven", "10% of calls 50x slower: least-active and round robin vs micro's random queue group", (*bench).uneven},
	{"balancer", "balancer Pick+Done at 4 and 4,096 workers per algorithm", (*bench).balancerRows},
	{"kv", "shared CallLimit over JetStream KV, 4 processes × 8 goroutines: exact, lease, raw CAS, 1,000 partitions; over-admission checks", (*bench).kvLimits},
	{"memlimit", "in-memory limit acquire+release, 8 goroutines, vs rate.Limiter.Allow", (*bench).memLimits},
	{"scale", "fleet pools of 1,024 and 16,384 workers made and stopped, a thread pool of 65,536; calls at 256 in flight on 4 vs 4,096 workers; two clients on 8 standing workers", (*bench).scale},
	{"memory", "bytes per in-flight call at 100k in flight; RSS of idle children", (*bench).memory},
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var rows string
	fs.DurationVar(&o.duration, "duration", time.Second, "how long each contender runs per repetition")
	fs.IntVar(&o.repeat, "repeat", 5, "repetitions of each row; the table shows their median and range")
	fs.StringVar(&rows, "rows", "", "comma-separated rows to run (default all): "+groupNames())
	fs.StringVar(&o.jsonFile, "json", "", "also write the figures as JSON to this file")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write this process's CPU profile here, and each child's to FILE.<role>-<pid>")
	fs.StringVar(&o.memProfile, "memprofile", "", "write this process's allocation profile here at the end")
	fs.Float64Var(&o.leaseSize, "lease-size", 1000, "units per lease of the KV lease row (limits.SetOptions.LeaseSize)")
	only := fs.String("contenders", "", "run only the contenders whose names contain one of these comma-separated words (for profiling one of them)")
	list := fs.Bool("list", false, "list the rows and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: bench [flags]\n\nMeasures natsfleet against raw baselines and peer libraries.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *list {
		for _, g := range groups {
			fmt.Fprintf(stdout, "%-13s %s\n", g.name, g.about)
		}
		return 0
	}
	if o.duration <= 0 || o.repeat < 1 || o.leaseSize <= 0 {
		fmt.Fprintln(stderr, "bench: -duration and -lease-size must be positive and -repeat at least 1")
		return 2
	}
	if rows != "" {
		for r := range strings.SplitSeq(rows, ",") {
			r = strings.TrimSpace(r)
			if !slices.ContainsFunc(groups, func(g group) bool { return g.name == r }) {
				fmt.Fprintf(stderr, "bench: unknown row %q (want %s)\n", r, groupNames())
				return 2
			}
			o.rows = append(o.rows, r)
		}
	}
	for w := range strings.SplitSeq(*only, ",") {
		if w = strings.TrimSpace(w); w != "" {
			o.only = append(o.only, strings.ToLower(w))
		}
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}

	b := newBench(o, stderr)
	defer b.close()
	start := time.Now()
	others := otherLoad()
	fmt.Fprintf(stderr, "bench: %s; load average before: %s\n", b.machine.summary(), loadAverage())
	failed := false
	for _, g := range groups {
		if len(o.rows) > 0 && !slices.Contains(o.rows, g.name) {
			continue
		}
		t0 := time.Now()
		fmt.Fprintf(stderr, "bench: %s ...\n", g.name)
		if err := g.run(b); err != nil {
			fmt.Fprintf(stderr, "bench: %s: %v\n", g.name, err)
			b.errors = append(b.errors, fmt.Sprintf("%s: %v", g.name, err))
			failed = true
		}
		fmt.Fprintf(stderr, "bench: %s done in %.1fs\n", g.name, time.Since(t0).Seconds())
	}
	b.close() // ends every child, so that their CPU time is counted as the bench's own
	b.machine.LoadAfter = loadAverage()
	b.machine.OtherCPUs = others()
	b.elapsed = time.Since(start)
	b.report(stdout)
	if o.memProfile != "" {
		if err := writeAllocs(o.memProfile); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
	}
	if o.jsonFile != "" {
		if err := b.writeJSON(o.jsonFile); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
	}
	if failed {
		return 1
	}
	return 0
}

func writeAllocs(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func groupNames() string {
	var ns []string
	for _, g := range groups {
		ns = append(ns, g.name)
	}
	return strings.Join(ns, ",")
}

// machine describes where the figures were taken.
type machine struct {
	CPUs       int    `json:"cpus"`
	CPUModel   string `json:"cpu_model"`
	GoVersion  string `json:"go_version"`
	OS         string `json:"os"`
	Date       string `json:"date"`
	LoadBefore string `json:"load_before"`
	LoadAfter  string `json:"load_after"`
	// OtherCPUs is how many CPUs other processes kept busy, on average, while the bench ran.
	OtherCPUs float64 `json:"other_cpus"`
}

func currentMachine() machine {
	return machine{CPUs: runtime.NumCPU(), CPUModel: cpuModel(), GoVersion: runtime.Version(),
		OS: runtime.GOOS + "/" + runtime.GOARCH, Date: time.Now().UTC().Format(time.RFC3339), LoadBefore: loadAverage()}
}

func (m machine) summary() string {
	return fmt.Sprintf("%d CPUs, %s, %s, %s", m.CPUs, m.CPUModel, m.GoVersion, m.OS)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// loadAverage is the 1, 5 and 15 minute load averages, as /proc/loadavg says.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func (b *bench) writeJSON(path string) error {
	out := struct {
		Machine  machine   `json:"machine"`
		Duration string    `json:"duration"`
		Repeat   int       `json:"repeat"`
		Elapsed  float64   `json:"elapsed_seconds"`
		Results  []*result `json:"results"`
		Ratios   []ratio   `json:"ratios"`
		Checks   []check   `json:"checks"`
		Errors   []string  `json:"errors,omitempty"`
	}{b.machine, b.opts.duration.String(), b.opts.repeat, b.elapsed.Seconds(), b.results, b.ratios(), b.checks, b.errors}
	data, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// bg is the context of the command's own waits; every one of them also has its own deadline.
var bg = context.Background()
