package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/alitto/pond/v2"

	"github.com/natsfleet/natsfleet/balancer"
	"github.com/natsfleet/natsfleet/client"
)

// The balancer rows: one dispatch (Pick and the Done of the picked slot) over a background load of 0-2 calls in
// flight per slot, as balancer's own BenchmarkPick measures it.
var algorithms = []balancer.Algorithm{balancer.RoundRobin, balancer.LeastActive, balancer.LeastTotal, balancer.Random}

const (
	cBal4    = "4 workers"
	cBal4096 = "4,096 workers"
)

func rowBalancer(alg balancer.Algorithm) string { return "balancer " + string(alg) + ", Pick+Done" }

func (b *bench) balancerRows() error {
	pick := func(alg balancer.Algorithm, n int) func(time.Duration) (float64, error) {
		return func(d time.Duration) (float64, error) {
			bal, err := balancer.New(alg, n, balancer.Options{Seed: 1})
			if err != nil {
				return 0, err
			}
			for range 2 * n {
				bal.Pick(0)
			}
			for s := range n {
				for bal.Active(s) > s%3 {
					bal.Done(s)
				}
			}
			calls, el, err := timed(d, 1024, func(int) error {
				s, ok := bal.Pick(0)
				if !ok {
					return errors.New("no slot")
				}
				bal.Done(s)
				return nil
			})
			return perCall(calls, el), err
		}
	}
	// A selection takes nanoseconds: a quarter of the duration gives millions of them.
	d := max(b.opts.duration/4, 50*time.Millisecond)
	for _, alg := range algorithms {
		if err := b.measureFor(rowBalancer(alg), nsPerOp, d,
			contender{cBal4, pick(alg, 4)}, contender{cBal4096, pick(alg, 4096)}); err != nil {
			return err
		}
	}
	return nil
}

// The memory rows.
const (
	rowMemInFlight = "memory per in-flight call, 100k in flight"
	cMemThread     = "natsfleet thread pool, 4 workers"
	cMemProcess    = "natsfleet process pool, 4 workers (caller side)"
	cMemPond       = "pond v2 result pool, 4 workers"
	rowRSS         = "RSS of an idle child process"
	cRSSWorker     = "natsfleet worker process"
	cRSSRaw        = "raw responder child"
	cRSSMicro      = "nats.go micro child"
	memCalls       = 100_000
)

// heapGrowth is how much the live heap grew over fn, measured after full collections.
func heapGrowth(fn func()) int64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.GC()
	runtime.ReadMemStats(&after)
	return int64(after.HeapAlloc) - int64(before.HeapAlloc)
}

func (b *bench) memory() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Thread mode: every call waits on a gate, so all 100k stay in flight while the heap is measured.
	gate := make(chan struct{})
	holdGate.Store(&gate)
	tp, err := client.New(bg, benchKind, client.Options{Mode: client.Thread, MaxWorkers: 4})
	if err != nil {
		return err
	}
	defer tp.Close()
	futs := make([]*client.Future[int], memCalls)
	grew := heapGrowth(func() {
		for i := range futs {
			futs[i] = client.Call[int](tp, "Hold")
		}
	})
	b.record(rowMemInFlight, cMemThread, bytesPerCall, float64(grew)/memCalls, "")
	close(gate)
	for _, f := range futs {
		if _, err := f.Result(ctx); err != nil {
			return err
		}
	}

	gate2 := make(chan struct{})
	pp := pond.NewResultPool[int](4)
	defer pp.StopAndWait()
	tasks := make([]pond.ResultTask[int], memCalls)
	grew = heapGrowth(func() {
		for i := range tasks {
			tasks[i] = pp.Submit(func() int { <-gate2; return 1 })
		}
	})
	b.record(rowMemInFlight, cMemPond, bytesPerCall, float64(grew)/memCalls, "")
	close(gate2)
	for _, t := range tasks {
		if _, err := t.Wait(); err != nil {
			return err
		}
	}

	// Idle RSS: a fresh natsfleet worker process, a raw responder and a micro service, all this same binary.
	url, err := b.server()
	if err != nil {
		return err
	}
	pp4, workers, err := b.processPool(benchKind, client.Options{Mode: client.Process, MaxWorkers: 4})
	if err != nil {
		return err
	}
	defer pp4.Close()
	workerPID := 0
	if len(workers) > 0 {
		workerPID = workers[0]
	}
	raw, err := b.startChild(roleRaw, childConfig{URL: url, Subject: rawSubject})
	if err != nil {
		return err
	}
	defer raw.stop()
	mc, err := b.startChild(roleMicro, childConfig{URL: url, Subject: microSubject})
	if err != nil {
		return err
	}
	defer mc.stop()
	time.Sleep(time.Second) // let them settle
	for _, c := range []struct {
		name string
		pid  int
	}{{cRSSWorker, workerPID}, {cRSSRaw, raw.pid()}, {cRSSMicro, mc.pid()}} {
		kb, err := rssKB(c.pid)
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		b.record(rowRSS, c.name, megabytes, float64(kb)/1024, "")
	}

	// Process mode: each worker first sleeps, so the 100k calls wait in the pool's queue, on the wire (the
	// per-worker cap) and in the workers while the caller's heap is measured.
	sleepers := make([]*client.Future[int], 4)
	for i := range sleepers {
		sleepers[i] = client.Call[int](pp4, "Work", 3*time.Second)
	}
	echoes := make([]*client.Future[int], memCalls)
	t0 := time.Now()
	grew = heapGrowth(func() {
		for i := range echoes {
			echoes[i] = client.Call[int](pp4, "Echo", i)
		}
	})
	note := ""
	if time.Since(t0) > 3*time.Second {
		note = "calls completed while measuring: figure too low"
	}
	b.record(rowMemInFlight, cMemProcess, bytesPerCall, float64(grew)/memCalls, note)
	for i, f := range echoes {
		if v, err := f.Result(ctx); err != nil || v != i {
			return fmt.Errorf("echo %d: %d, %v", i, v, err)
		}
	}
	for _, f := range sleepers {
		if _, err := f.Result(ctx); err != nil {
			return err
		}
	}
	return nil
}

// childPIDs lists the running children of this process.
func childPIDs() map[int]bool {
	out := make(map[int]bool)
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	me := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so read after its closing parenthesis.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) > 1 {
			if ppid, err := strconv.Atoi(f[1]); err == nil && ppid == me {
				out[pid] = true
			}
		}
	}
	return out
}

// rssKB reads a process's resident set size from /proc/PID/status.
func rssKB(pid int) (int, error) {
	if pid == 0 {
		return 0, errors.New("process not found")
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for l := range strings.SplitSeq(string(st), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, errors.New("no VmRSS")
}
