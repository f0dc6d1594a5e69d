package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuTimes are CPU times (user + system) of the processes behind one contender, and their read and write syscalls.
type cpuTimes struct {
	caller, server, workers          time.Duration
	callerSys, serverSys, workersSys int64
}

// clockTick is the unit of /proc/PID/stat's CPU times: USER_HZ, 100 on every Linux this runs on.
const clockTick = 10 * time.Millisecond

func (b *bench) cpuTimes(workers []int) cpuTimes {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	t := cpuTimes{caller: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), callerSys: procSyscalls(os.Getpid())}
	if b.srv != nil {
		t.server, t.serverSys = procCPU(b.srv.pid()), procSyscalls(b.srv.pid())
	}
	for _, pid := range workers {
		t.workers += procCPU(pid)
		t.workersSys += procSyscalls(pid)
	}
	return t
}

func (t cpuTimes) since(u cpuTimes) cpuTimes {
	return cpuTimes{t.caller - u.caller, t.server - u.server, t.workers - u.workers,
		t.callerSys - u.callerSys, t.serverSys - u.serverSys, t.workersSys - u.workersSys}
}

// perCall is CPU time per call, in µs, and syscalls per call.
func (t cpuTimes) perCall(calls float64) (cpu, sys cpuSplit) {
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / calls }
	per := func(n int64) float64 { return float64(n) / calls }
	return cpuSplit{Caller: us(t.caller), Server: us(t.server), Workers: us(t.workers)},
		cpuSplit{Caller: per(t.callerSys), Server: per(t.serverSys), Workers: per(t.workersSys)}
}

// procSyscalls is the number of read and write syscalls a process made (syscr + syscw in /proc/PID/io; 0 when it is
// gone): each message a process sends or receives costs it some, and a wake-up each.
func procSyscalls(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0
	}
	var n int64
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		if k == "syscr" || k == "syscw" {
			c, _ := strconv.ParseInt(v, 10, 64)
			n += c
		}
	}
	return n
}

// callsIn is how many calls a run with figure v in unit u made in el.
func callsIn(u unit, v float64, el time.Duration) float64 {
	switch {
	case u == seconds:
		return unevenCalls
	case u.Higher:
		return v * el.Seconds()
	default:
		return float64(el.Nanoseconds()) / v
	}
}

func medianSplit(cs []cpuSplit) *cpuSplit {
	med := func(f func(cpuSplit) float64) float64 {
		v := make([]float64, len(cs))
		for i, c := range cs {
			v[i] = f(c)
		}
		slices.Sort(v)
		if n := len(v); n%2 == 0 {
			return (v[n/2-1] + v[n/2]) / 2
		}
		return v[len(v)/2]
	}
	return &cpuSplit{Caller: med(func(c cpuSplit) float64 { return c.Caller }),
		Server:  med(func(c cpuSplit) float64 { return c.Server }),
		Workers: med(func(c cpuSplit) float64 { return c.Workers })}
}

// procCPU reads a process's user + system CPU time from /proc/PID/stat (0 when it is gone).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after "(comm)": state is the first, utime the 12th, stime the 13th.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * clockTick
}

// busyTicks is the CPU time, in clock ticks, that all CPUs of the machine spent busy since boot (/proc/stat).
func busyTicks() int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest time is counted in user already
			break
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return busy
}

// ownCPU is the CPU time of this process and of its children that have ended (the bench ends all of its own).
func ownCPU() time.Duration {
	var self, kids syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	return time.Duration(self.Utime.Nano() + self.Stime.Nano() + kids.Utime.Nano() + kids.Stime.Nano())
}

// otherLoad measures how busy the rest of the machine keeps its CPUs while the bench runs: start it before, call
// the function it returns after, and get the average number of CPUs others used.
func otherLoad() func() float64 {
	t0, busy0, own0 := time.Now(), busyTicks(), ownCPU()
	return func() float64 {
		busy := time.Duration(busyTicks()-busy0) * clockTick
		others := busy - (ownCPU() - own0)
		return max(0, others.Seconds()/time.Since(t0).Seconds())
	}
}
