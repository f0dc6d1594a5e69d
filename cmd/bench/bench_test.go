package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/natsfleet/natsfleet/fleet"
)

// TestMain lets the test binary serve as the bench's children, as the bench binary does.
func TestMain(m *testing.M) {
	fleet.ServeIfChild()
	if role := os.Getenv(envChild); role != "" {
		os.Exit(runChild(role))
	}
	// ants starts a default pool when its package initialises, and never stops it.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"))
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		values         []float64
		median, lo, hi float64
	}{
		{[]float64{3}, 3, 3, 3},
		{[]float64{5, 1, 3}, 3, 1, 5},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4},
	} {
		r := &result{Values: tc.values}
		r.summarize()
		if r.Median != tc.median || r.Min != tc.lo || r.Max != tc.hi {
			t.Errorf("%v: median %v min %v max %v, want %v %v %v", tc.values, r.Median, r.Min, r.Max, tc.median, tc.lo, tc.hi)
		}
	}
}

func TestFormatValue(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		unit string
		v    float64
		want string
	}{
		{nsPerCall.Name, 470, "470 ns/call"},
		{nsPerCall.Name, 1490, "1.49 µs/call"},
		{nsPerOp.Name, 2.5e6, "2.50 ms/op"},
		{callsPerSec.Name, 63_300, "63.3 k calls/s"},
		{acqPerSec.Name, 1.18e6, "1.18 M acquisitions/s"},
		{acqPerSec.Name, 775, "775 acquisitions/s"},
		{seconds.Name, 0.6714, "0.671 s"},
		{bytesPerCall.Name, 524.4, "524 B/call"},
		{megabytes.Name, 15.24, "15.2 MB"},
	} {
		if got := formatValue(tc.unit, tc.v); got != tc.want {
			t.Errorf("formatValue(%q, %v) = %q, want %q", tc.unit, tc.v, got, tc.want)
		}
	}
	if got := formatRange(nsPerCall.Name, 1490, 1460, 1560); got != "1.46 – 1.56" {
		t.Errorf("formatRange = %q", got)
	}
}

func TestRatiosVerdicts(t *testing.T) {
	t.Parallel()
	b := newBench(options{repeat: 1}, nil)
	add := func(row, variant string, v float64) {
		r := &result{Row: row, Variant: variant, Values: []float64{v}}
		r.summarize()
		b.results = append(b.results, r)
	}
	add(rowThreadSeq, cNatsfleet, 1500)
	add(rowThreadSeq, cRawPool, 500) // 3.0: at the target, which passes
	add(rowThreadSeq, cPond, 1500)   // 1.0: not faster than pond
	add(rowMemLimit, cMemSet, 400)   // an absolute target
	got := make(map[string]ratio)
	for _, r := range b.ratios() {
		got[r.Name] = r
	}
	for name, want := range map[string]struct {
		value   float64
		verdict string
	}{
		"thread seq: natsfleet time / raw pool time":                {3, "PASS"},
		"thread seq: natsfleet time / pond time (faster than pond)": {1, "MISS"},
		"in-memory acquire+release, ns per op (wall, 8 goroutines)": {400, "PASS"},
	} {
		r, ok := got[name]
		if !ok || r.Value != want.value || r.Verdict != want.verdict {
			t.Errorf("%s: %+v, want value %v verdict %s", name, r, want.value, want.verdict)
		}
	}
	if _, ok := got["thread seq: natsfleet time / ants time"]; ok {
		t.Error("a ratio whose contender did not run was reported")
	}
	if n := len(got); n != 3 {
		t.Errorf("%d ratios, want 3", n)
	}
}

func TestUnevenWorkload(t *testing.T) {
	t.Parallel()
	w := unevenWorkload()
	slow := 0
	for _, d := range w {
		switch d {
		case slowFactor * unevenBase:
			slow++
		case unevenBase:
		default:
			t.Fatalf("call of %v", d)
		}
	}
	if len(w) != unevenCalls || slow != unevenCalls/10 {
		t.Fatalf("%d calls, %d slow; want %d and %d", len(w), slow, unevenCalls, unevenCalls/10)
	}
	if !slices.Equal(w, unevenWorkload()) {
		t.Fatal("the workload differs between contenders")
	}
}

func TestBadFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-rows", "nope"}, {"-repeat", "0"}, {"-duration", "-1s"}} {
		var out, errs strings.Builder
		if code := run(args, &out, &errs); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errs.String())
		}
	}
}

// TestRunSmoke runs most rows very briefly, those over NATS with their child processes, and checks the table, the
// CPU split, the ratios and the JSON file.
func TestRunSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a NATS server and child processes")
	}
	jsonFile := filepath.Join(t.TempDir(), "bench.json")
	var out, errs strings.Builder
	start := time.Now()
	code := run([]string{"-rows", "thread-seq,balancer,memlimit,process-seq,process-pipe,fleet-pipe", "-duration", "50ms", "-repeat", "1",
		"-json", jsonFile}, &out, &errs)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out.String(), errs.String())
	}
	t.Logf("took %v", time.Since(start))
	text := out.String()
	for _, want := range []string{rowThreadSeq, cAnts, rowBalancer("least_active"), rowMemLimit, rowProcSeq, cMicro1,
		"CPU time per call by process", "read and write syscalls per 100 calls by process",
		"thread seq: natsfleet time / raw pool time",
		"process seq: natsfleet time / micro time", "balancer random: 4,096 / 4 workers time",
		"process pipelined 1024: natsfleet / micro throughput", "fleet pipelined 256: natsfleet fleet / raw throughput"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	data, err := os.ReadFile(jsonFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Machine machine   `json:"machine"`
		Results []*result `json:"results"`
		Ratios  []ratio   `json:"ratios"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	// 4 thread contenders, 4 algorithms × 2 balancer sizes, 2 limiters, 3 process contenders sequential and 3 at
	// each of 2 depths, 1 fleet contender at 2 depths.
	if n := len(doc.Results); n != 4+8+2+3+6+2 {
		t.Errorf("%d results in the JSON, want 25", n)
	}
	for _, r := range doc.Results {
		if r.Median <= 0 || len(r.Values) != 1 {
			t.Errorf("result %+v", r)
		}
		overNATS := strings.HasPrefix(r.Row, "process") || strings.HasPrefix(r.Row, "fleet")
		if overNATS != (r.CPU != nil) || overNATS != (r.Syscalls != nil) {
			t.Errorf("%s / %s: CPU split %v, syscalls split %v", r.Row, r.Variant, r.CPU, r.Syscalls)
		}
		// Every call over NATS costs its caller a write and a read at least once per batch.
		if overNATS && r.Syscalls != nil && (r.Syscalls.Caller <= 0 || r.Syscalls.Server <= 0) {
			t.Errorf("%s / %s: syscalls per call %+v", r.Row, r.Variant, *r.Syscalls)
		}
	}
	if doc.Machine.CPUs < 1 || doc.Machine.GoVersion == "" || len(doc.Ratios) == 0 {
		t.Errorf("machine %+v, %d ratios", doc.Machine, len(doc.Ratios))
	}
}
