package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
)

// bench holds one run: its options, the NATS server and children it started, and the figures.
type bench struct {
	opts    options
	log     io.Writer
	machine machine
	srv     *child // the NATS server
	url     string // its client URL
	conns   []*nats.Conn
	results []*result
	procsOf map[string][]int // contender name -> its worker-side processes, whose CPU time is reported
	checks  []check
	errors  []string
	elapsed time.Duration
}

func newBench(o options, log io.Writer) *bench {
	return &bench{opts: o, log: log, machine: currentMachine(), procsOf: make(map[string][]int)}
}

// server starts, on first use, the NATS server with JetStream that every NATS row shares, and returns its URL. It
// runs in a child process, as a real deployment's server would, so that CPU profiles tell the server's work from
// the library's.
func (b *bench) server() (string, error) {
	if b.srv != nil {
		return b.url, nil
	}
	srv, err := b.startChild(roleServer, childConfig{})
	if err != nil {
		return "", err
	}
	b.srv, b.url = srv, srv.ready
	return b.url, nil
}

// connect opens a connection of its own for one contender, so that contenders share no connection's read loop or
// flusher. It is closed with the bench.
func (b *bench) connect() (*nats.Conn, error) {
	url, err := b.server()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		return nil, err
	}
	b.conns = append(b.conns, nc)
	return nc, nil
}

// close closes the connections and stops the server; it may be called more than once.
func (b *bench) close() {
	for _, nc := range b.conns {
		nc.Close()
	}
	b.conns = nil
	if b.srv != nil {
		b.srv.stop()
		b.srv = nil
	}
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "bench:   "+format+"\n", args...)
}

// unit is what a figure counts, and which way is better.
type unit struct {
	Name   string
	Higher bool // a higher figure is better
}

var (
	nsPerCall    = unit{"ns/call", false}
	nsPerOp      = unit{"ns/op", false}
	callsPerSec  = unit{"calls/s", true}
	acqPerSec    = unit{"acquisitions/s", true}
	seconds      = unit{"s", false}
	bytesPerCall = unit{"B/call", false}
	megabytes    = unit{"MB", false}
	kilobytes    = unit{"KiB", false}
)

// result is one contender's figures in one row.
type result struct {
	Row     string    `json:"row"`
	Variant string    `json:"variant"`
	Unit    string    `json:"unit"`
	Higher  bool      `json:"higher_is_better"`
	Values  []float64 `json:"values"`
	Median  float64   `json:"median"`
	Min     float64   `json:"min"`
	Max     float64   `json:"max"`
	Note    string    `json:"note,omitempty"`
	// CPU is the CPU time per call by process, medians over the runs; rows over NATS only.
	CPU *cpuSplit `json:"cpu_us_per_call,omitempty"`
	// Syscalls is the read and write syscalls per call by process, medians over the runs; rows over NATS only.
	Syscalls *cpuSplit `json:"syscalls_per_call,omitempty"`
}

// cpuSplit is CPU time per call, in µs: in this process (the caller), the NATS server and the worker-side
// processes (natsfleet workers, agents, raw responders, micro services, limits clients).
type cpuSplit struct {
	Caller  float64 `json:"caller"`
	Server  float64 `json:"server"`
	Workers float64 `json:"workers"`
}

func (c cpuSplit) total() float64 { return c.Caller + c.Server + c.Workers }

func (r *result) summarize() {
	v := slices.Clone(r.Values)
	slices.Sort(v)
	r.Min, r.Max = v[0], v[len(v)-1]
	if n := len(v); n%2 == 1 {
		r.Median = v[n/2]
	} else {
		r.Median = (v[n/2-1] + v[n/2]) / 2
	}
}

// contender is one thing measured in a row: run measures it for about d and returns the figure in the row's unit.
type contender struct {
	name string
	run  func(d time.Duration) (float64, error)
}

// measure runs each contender for the configured duration, the configured number of times, interleaved and with
// the starting contender rotating, and records the figures under row.
func (b *bench) measure(row string, u unit, cs ...contender) error {
	return b.measureFor(row, u, b.opts.duration, cs...)
}

func (b *bench) measureFor(row string, u unit, d time.Duration, cs ...contender) error {
	if len(b.opts.only) > 0 {
		cs = slices.DeleteFunc(cs, func(c contender) bool {
			return !slices.ContainsFunc(b.opts.only, func(w string) bool { return strings.Contains(strings.ToLower(c.name), w) })
		})
		if len(cs) == 0 {
			return nil
		}
	}
	rs := make([]*result, len(cs))
	cpus, syscalls := make([][]cpuSplit, len(cs)), make([][]cpuSplit, len(cs))
	for i, c := range cs {
		rs[i] = &result{Row: row, Variant: c.name, Unit: u.Name, Higher: u.Higher}
	}
	for rep := range b.opts.repeat {
		for k := range cs {
			i := (k + rep) % len(cs)
			procs, track := b.procsOf[cs[i].name]
			var before cpuTimes
			if track {
				before = b.cpuTimes(procs)
			}
			t0 := time.Now()
			v, err := cs[i].run(d)
			if err != nil {
				return fmt.Errorf("%s, %s: %w", row, cs[i].name, err)
			}
			rs[i].Values = append(rs[i].Values, v)
			if track {
				cpu, sys := b.cpuTimes(procs).since(before).perCall(callsIn(u, v, time.Since(t0)))
				cpus[i], syscalls[i] = append(cpus[i], cpu), append(syscalls[i], sys)
			}
		}
	}
	for i, r := range rs {
		if len(cpus[i]) > 0 {
			r.CPU, r.Syscalls = medianSplit(cpus[i]), medianSplit(syscalls[i])
		}
		r.summarize()
		b.results = append(b.results, r)
		b.logf("%-40s %-34s %s", row, r.Variant, formatValue(u.Name, r.Median))
	}
	return nil
}

// record adds a figure measured once (no repetitions).
func (b *bench) record(row, variant string, u unit, v float64, note string) {
	r := &result{Row: row, Variant: variant, Unit: u.Name, Higher: u.Higher, Values: []float64{v}, Note: note}
	r.summarize()
	b.results = append(b.results, r)
	b.logf("%-40s %-34s %s", row, variant, formatValue(u.Name, v))
}

// printSplits prints, under title, the split that split returns for each result that has one, times scale.
func (b *bench) printSplits(w io.Writer, title string, scale float64, split func(*result) *cpuSplit) {
	fmt.Fprintln(w, title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "row\tcontender\tcaller\tNATS server\tworkers\ttotal\t")
	last := ""
	for _, r := range b.byRow() {
		c := split(r)
		if c == nil {
			continue
		}
		row := r.Row
		if row == last {
			row = ""
		}
		last = r.Row
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.1f\t%.1f\t%.1f\t\n", row, r.Variant, scale*c.Caller, scale*c.Server,
			scale*c.Workers, scale*c.total())
	}
	tw.Flush()
}

func (b *bench) hasCPU() bool {
	return slices.ContainsFunc(b.results, func(r *result) bool { return r.CPU != nil })
}

// byRow is the results grouped by row, rows in the order they first appear.
func (b *bench) byRow() []*result {
	var rows []string
	for _, r := range b.results {
		if !slices.Contains(rows, r.Row) {
			rows = append(rows, r.Row)
		}
	}
	var out []*result
	for _, row := range rows {
		for _, r := range b.results {
			if r.Row == row {
				out = append(out, r)
			}
		}
	}
	return out
}

func (b *bench) find(row, variant string) *result {
	for _, r := range b.results {
		if r.Row == row && r.Variant == variant {
			return r
		}
	}
	return nil
}

// check is a yes/no finding, such as "the fleet never admitted more than capacity".
type check struct {
	Name   string `json:"name"`
	Detail string `json:"detail"`
	Pass   bool   `json:"pass"`
}

func (b *bench) addCheck(name, detail string, pass bool) {
	b.checks = append(b.checks, check{name, detail, pass})
	b.logf("check %s: %s (%s)", name, detail, verdict(pass))
}

func verdict(pass bool) string {
	if pass {
		return "PASS"
	}
	return "MISS"
}

// key names one result.
type key struct{ row, variant string }

// ratioSpec is one ratio of two medians, with the target it is held to (op "" means informative only).
type ratioSpec struct {
	name     string
	num, den key // den.row == "": the numerator's median alone
	op       string
	target   float64
	source   string
}

// ratio is a computed ratioSpec.
type ratio struct {
	Name    string  `json:"name"`
	Value   float64 `json:"value"`
	Target  string  `json:"target,omitempty"`
	Verdict string  `json:"verdict"` // PASS, MISS or info
	Source  string  `json:"source,omitempty"`
}

// ratios computes every ratio whose rows ran.
func (b *bench) ratios() []ratio {
	var out []ratio
	for _, s := range ratioSpecs {
		n := b.find(s.num.row, s.num.variant)
		if n == nil {
			continue
		}
		v := n.Median
		if s.den.row != "" {
			d := b.find(s.den.row, s.den.variant)
			if d == nil || d.Median == 0 {
				continue
			}
			v = n.Median / d.Median
		}
		r := ratio{Name: s.name, Value: v, Source: s.source, Verdict: "info"}
		if s.op != "" {
			r.Target = fmt.Sprintf("%s %s", s.op, trimFloat(s.target))
			pass := false
			switch s.op {
			case "<=":
				pass = v <= s.target
			case "<":
				pass = v < s.target
			case ">=":
				pass = v >= s.target
			case ">":
				pass = v > s.target
			}
			r.Verdict = verdict(pass)
		}
		out = append(out, r)
	}
	return out
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

// report prints the table of figures, the ratios against their targets, and the checks.
func (b *bench) report(w io.Writer) {
	fmt.Fprintf(w, "natsfleet benchmarks: %s\n", b.machine.summary())
	fmt.Fprintf(w, "date %s; each figure: median of %d runs of %s (min–max); took %.0fs\n", b.machine.Date,
		b.opts.repeat, b.opts.duration, b.elapsed.Seconds())
	fmt.Fprintf(w, "load average before %s, after %s; other processes kept %.2f of %d CPUs busy meanwhile\n\n",
		b.machine.LoadBefore, b.machine.LoadAfter, b.machine.OtherCPUs, b.machine.CPUs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "row\tcontender\tmedian\tmin – max\t")
	last := ""
	for _, r := range b.byRow() {
		row := r.Row
		if row == last {
			row = ""
		}
		last = r.Row
		rng := "–"
		if len(r.Values) > 1 {
			rng = formatRange(r.Unit, r.Median, r.Min, r.Max)
		}
		variant := r.Variant
		if r.Note != "" {
			variant += " (" + r.Note + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", row, variant, formatValue(r.Unit, r.Median), rng)
	}
	tw.Flush()

	if b.hasCPU() {
		b.printSplits(w, "\nCPU time per call by process, µs (medians; workers: natsfleet workers or agents, responders, micro services, limits clients)",
			1, func(r *result) *cpuSplit { return r.CPU })
		b.printSplits(w, "\nread and write syscalls per 100 calls by process (medians; from /proc/PID/io)",
			100, func(r *result) *cpuSplit { return r.Syscalls })
	}
	if rs := b.ratios(); len(rs) > 0 {
		fmt.Fprintln(w, "\nratios of medians")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ratio\tvalue\ttarget\tverdict\tsource\t")
		for _, r := range rs {
			t := r.Target
			if t == "" {
				t = "–"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", r.Name, formatRatio(r.Value), t, r.Verdict, r.Source)
		}
		tw.Flush()
	}
	if len(b.checks) > 0 {
		fmt.Fprintln(w, "\nchecks")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, c := range b.checks {
			fmt.Fprintf(tw, "%s\t%s\t%s\t\n", c.Name, c.Detail, verdict(c.Pass))
		}
		tw.Flush()
	}
	if len(b.errors) > 0 {
		fmt.Fprintln(w, "\nerrors")
		for _, e := range b.errors {
			fmt.Fprintln(w, "  "+e)
		}
	}
}

func formatRatio(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// formatValue prints a figure in its unit, scaled for reading.
func formatValue(u string, v float64) string {
	div, label, prec := scaleFor(u, v)
	return fmt.Sprintf("%.*f %s", prec, v/div, label)
}

// formatRange prints min – max on the scale of the median.
func formatRange(u string, median, lo, hi float64) string {
	div, _, prec := scaleFor(u, median)
	return fmt.Sprintf("%.*f – %.*f", prec, lo/div, prec, hi/div)
}

// scaleFor picks the divisor, unit label and decimals that print v of unit u readably.
func scaleFor(u string, v float64) (div float64, label string, prec int) {
	switch u {
	case nsPerCall.Name, nsPerOp.Name:
		per := strings.TrimPrefix(u, "ns")
		switch {
		case v < 1e3:
			return 1, "ns" + per, 0
		case v < 1e6:
			return 1e3, "µs" + per, 2
		default:
			return 1e6, "ms" + per, 2
		}
	case callsPerSec.Name, acqPerSec.Name:
		switch {
		case v >= 1e6:
			return 1e6, "M " + u, 2
		case v >= 1e3:
			return 1e3, "k " + u, 1
		default:
			return 1, u, 0
		}
	case seconds.Name:
		return 1, "s", 3
	case bytesPerCall.Name:
		return 1, u, 0
	case megabytes.Name, kilobytes.Name:
		return 1, u, 1
	}
	if math.Abs(v) >= 100 {
		return 1, u, 0
	}
	return 1, u, 2
}

// timed calls op(i) with i = 0, 1, 2, ... until d has passed, reading the clock every `every` calls, and returns
// the calls made and the time they took.
func timed(d time.Duration, every int, op func(i int) error) (int, time.Duration, error) {
	start := time.Now()
	end := start.Add(d)
	i := 0
	for {
		for range every {
			if err := op(i); err != nil {
				return i, time.Since(start), err
			}
			i++
		}
		if now := time.Now(); now.After(end) {
			return i, now.Sub(start), nil
		}
	}
}

func perCall(n int, el time.Duration) float64 { return float64(el.Nanoseconds()) / float64(n) }
func perSec(n int, el time.Duration) float64  { return float64(n) / el.Seconds() }
