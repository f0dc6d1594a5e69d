package client

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/balancer"
	"github.com/natsfleet/natsfleet/limits"
)

// Mode is where a pool's workers run.
type Mode string

// The modes. Sync, Asyncio and Thread run workers in this process; Process runs each worker in a child process on
// this machine; Fleet runs them in worker agents anywhere on the NATS cluster.
const (
	Sync    Mode = "sync"
	Asyncio Mode = "asyncio"
	Thread  Mode = "thread"
	Process Mode = "process"
	Fleet   Mode = "fleet"
)

// ParseMode reads a mode name, accepting concurry's aliases (synchronous, async, threads, proc, procs, processes)
// and "ray" for Fleet, case-insensitive.
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "sync", "synchronous":
		return Sync, nil
	case "asyncio", "async", "asynchronous":
		return Asyncio, nil
	case "thread", "threads":
		return Thread, nil
	case "process", "processes", "proc", "procs":
		return Process, nil
	case "fleet", "ray":
		return Fleet, nil
	}
	return "", fmt.Errorf("%w: %q (want sync, asyncio, thread, process or fleet)", ErrInvalidOptions, s)
}

// local reports whether the mode's workers live in this process.
func (m Mode) local() bool { return m == Sync || m == Asyncio || m == Thread }

// Unwrap says whether futures passed as arguments are resolved before a call is dispatched.
type Unwrap int

const (
	// UnwrapOn (the default) resolves futures among the arguments, also inside slices and maps, before dispatch.
	UnwrapOn Unwrap = iota
	// UnwrapOff passes futures to the method as they are (in-process modes only: a future cannot cross a process).
	UnwrapOff
)

// Options configure a pool. The zero value of every field means the default its comment states.
type Options struct {
	// Mode is where workers run. Default Thread.
	Mode Mode
	// MaxWorkers is the number of workers. Default: Sync and Asyncio 1 (anything else is an error), Thread 24,
	// Process 4, Fleet 0 = all the capacity the fleet's agents offer. With OnDemand it caps the workers alive at once
	// (default NumCPU-1 for Thread and Process, unlimited for Fleet).
	MaxWorkers int
	// LoadBalancing picks the worker for each call. Default round robin; random when OnDemand.
	LoadBalancing balancer.Algorithm
	// OnDemand starts a fresh worker for every call and stops it after. Default false.
	OnDemand bool
	// MaxQueuedTasks caps the calls in flight on one worker; further calls wait in the pool's queue and are
	// dispatched, by the balancer, when a slot frees. Default: none for in-process modes, 100 for Process and Fleet.
	MaxQueuedTasks int
	// PriorityAging is how much earlier arrival one point of CallOptions.Priority is worth in the pool's queue: a call
	// of priority p overtakes calls of priority q < p that arrived up to (p-q)×PriorityAging before it. Default 100ms.
	PriorityAging time.Duration
	// HealthCheck names a method each worker is asked at an interval; a worker that fails it is taken out of
	// rotation and replaced. Default: no health checks.
	HealthCheck HealthCheck
	// Limits are built into one set shared by all the pool's workers (in memory for in-process modes, JetStream KV
	// for Process and Fleet). Default none.
	Limits []limits.Limit
	// LimitSet is a set or pool of sets made beforehand, to share with other pools and processes. Setting both
	// Limits and LimitSet is an error. Default none.
	LimitSet limits.Provider
	// LimitReplicas is how many servers keep the KV bucket of the set built from Limits in Process and Fleet modes,
	// when the bucket does not exist yet (limits.SetOptions.Replicas; a LimitSet brings its own). Default 0: 3 on a
	// JetStream cluster that can place them, else 1.
	LimitReplicas int
	// Retry retries failed calls where the worker runs. Default: no retries.
	Retry RetryConfig
	// UnwrapFutures resolves future arguments before dispatch. Default UnwrapOn.
	UnwrapFutures Unwrap
	// Conn is the NATS connection for Process and Fleet modes. Default for Process: a connection to an embedded
	// server started once per process on loopback and shared by all pools; required for Fleet.
	Conn *nats.Conn
	// Prefix is the first token of every subject the pool uses. Default "fleet".
	Prefix string
	// WorkerBinary is the program Process mode starts for each worker. Default: this program, re-executed (its main
	// must call fleet.ServeIfChild first).
	WorkerBinary string
	// ChildMaxProcs is the GOMAXPROCS of each Process-mode worker process. Default 1: a worker runs its calls one at
	// a time and shares the CPUs with its siblings, so a child with a P per CPU spends CPU looking for work that is
	// not there (Ray likewise gives a worker one CPU's threads unless told otherwise). Raise it for methods that run
	// goroutines in parallel; -1 leaves Go's default. A GOMAXPROCS in this program's environment is passed on
	// instead.
	ChildMaxProcs int
	// HeartbeatInterval is how often remote workers report; a worker silent for three intervals is lost. Default 1s.
	HeartbeatInterval time.Duration
	// StartTimeout bounds starting the pool's workers. Default 30s.
	StartTimeout time.Duration
	// Progress receives progress events of calls (fleet.Progress in methods). Default: none, unless ShowProgress.
	Progress func(ProgressEvent)
	// ShowProgress draws calls' progress on stderr: as terminal bars with their rate (items/s) and time left, or, when
	// stderr is no terminal, as lines (a start, the rate and time left every 5 s for a long bar, and the end with the
	// rate of the whole run). Default false.
	ShowProgress bool
	// Logger receives the pool's logs and process-mode children's output. Default slog.Default().
	Logger *slog.Logger
}

// Errors of the client package.
var (
	// ErrInvalidOptions: Options or call arguments that can never work.
	ErrInvalidOptions = errors.New("client: invalid options")
	// ErrPoolStopped: a call made after Stop began.
	ErrPoolStopped = errors.New("client: pool stopped")
	// ErrNoWorkers: the pool has no live worker to send the call to.
	ErrNoWorkers = errors.New("client: pool has no workers")
	// ErrWorkerLost: the worker died with the call in flight.
	ErrWorkerLost = errors.New("client: worker lost")
	// ErrConnectionLost: the pool's connection to NATS stayed down too long, or came back but the worker no longer
	// knew the call's outcome; the call may have run.
	ErrConnectionLost = errors.New("client: connection lost")
	// ErrResultType: the method's result cannot be read as the future's type.
	ErrResultType = errors.New("client: result type mismatch")
)

func (o Options) withDefaults() (Options, error) {
	if o.Mode == "" {
		o.Mode = Thread
	}
	m, err := ParseMode(string(o.Mode))
	if err != nil {
		return o, err
	}
	o.Mode = m
	if o.MaxWorkers < 0 {
		return o, fmt.Errorf("%w: MaxWorkers %d is negative", ErrInvalidOptions, o.MaxWorkers)
	}
	if o.ChildMaxProcs < -1 {
		return o, fmt.Errorf("%w: ChildMaxProcs %d is below -1", ErrInvalidOptions, o.ChildMaxProcs)
	}
	if o.ChildMaxProcs == 0 {
		o.ChildMaxProcs = 1
	}
	if o.MaxQueuedTasks < 0 {
		return o, fmt.Errorf("%w: MaxQueuedTasks %d is negative", ErrInvalidOptions, o.MaxQueuedTasks)
	}
	switch o.Mode {
	case Sync, Asyncio:
		if o.MaxWorkers > 1 {
			return o, fmt.Errorf("%w: MaxWorkers must be 1 for %s mode, got %d", ErrInvalidOptions, o.Mode, o.MaxWorkers)
		}
		if o.OnDemand {
			return o, fmt.Errorf("%w: OnDemand is not supported in %s mode", ErrInvalidOptions, o.Mode)
		}
		o.MaxWorkers = 1
	case Thread, Process:
		if o.MaxWorkers == 0 {
			switch {
			case o.OnDemand:
				o.MaxWorkers = max(1, runtime.NumCPU()-1)
			case o.Mode == Thread:
				o.MaxWorkers = 24
			default:
				o.MaxWorkers = 4
			}
		}
	}
	if o.MaxQueuedTasks == 0 && !o.Mode.local() {
		o.MaxQueuedTasks = 100
	}
	if o.LoadBalancing == "" {
		o.LoadBalancing = balancer.RoundRobin
		if o.OnDemand {
			o.LoadBalancing = balancer.Random
		}
	}
	alg, err := balancer.ParseAlgorithm(string(o.LoadBalancing))
	if err != nil {
		return o, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	o.LoadBalancing = alg
	if len(o.Limits) > 0 && o.LimitSet != nil {
		return o, fmt.Errorf("%w: set Limits or LimitSet, not both", ErrInvalidOptions)
	}
	if o.LimitReplicas != 0 && (len(o.Limits) == 0 || o.Mode.local()) {
		return o, fmt.Errorf("%w: LimitReplicas applies to the Limits of a Process or Fleet pool", ErrInvalidOptions)
	}
	if o.LimitReplicas < 0 || o.LimitReplicas > 5 {
		return o, fmt.Errorf("%w: LimitReplicas must be 0 (the default) to 5, got %d", ErrInvalidOptions, o.LimitReplicas)
	}
	if o.UnwrapFutures == UnwrapOff && !o.Mode.local() {
		return o, fmt.Errorf("%w: UnwrapOff needs an in-process mode: a future cannot be sent to another process", ErrInvalidOptions)
	}
	if err := o.Retry.validate(); err != nil {
		return o, err
	}
	if o.Prefix == "" {
		o.Prefix = "fleet"
	}
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = time.Second
	}
	if o.PriorityAging == 0 {
		o.PriorityAging = 100 * time.Millisecond
	}
	if err := o.HealthCheck.validate(o.Mode); err != nil {
		return o, err
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}
