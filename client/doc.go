// Package client is the caller's side of natsfleet: pools of workers behind one handle, futures, and the tools to
// compose them.
//
// # Pools
//
// A pool runs workers of one registered kind (see package fleet) and sends each call to one of them:
//
//	pool, err := client.New(ctx, DataProcessorKind, client.Options{Mode: client.Thread, MaxWorkers: 5}, 10)
//	fut := client.Call[int](pool, "Process", 42) // never blocks
//	n, err := fut.Result(ctx)                    // 420
//	err = pool.Stop(ctx)
//
// Options.Mode says where the workers run, with concurry's names:
//
//   - Sync: one worker that runs each call in the caller; the future is done when Call returns.
//   - Asyncio: one worker whose calls run concurrently.
//   - Thread: MaxWorkers workers (default 24) in this process, one goroutine each, one call at a time each.
//   - Process: MaxWorkers child processes on this machine (default 4), each one worker. The child is this program
//     re-executed, so main must call fleet.ServeIfChild first; Options.WorkerBinary names another program. Without
//     Options.Conn the pools of a process share an embedded NATS server on loopback.
//   - Fleet: workers started by worker agents (cmd/worker, or a binary of your own built with package agent)
//     anywhere on the NATS cluster, placed by the capacity each agent offers; MaxWorkers 0 takes all of it. Attach
//     joins standing workers of a kind instead.
//
// Calls to one worker run one at a time in arrival order (actor semantics), except in Asyncio mode. A single worker
// is a pool of one.
//
// # Dispatch
//
// The pool's balancer (package balancer: round robin by default, least active, least total, random) picks the worker
// for each call when the call is dispatched. Options.MaxQueuedTasks caps the calls in flight on one worker (default
// none in-process, 100 for Process and Fleet); calls beyond it wait in the pool's own queue, never in the caller, and
// are dispatched when a slot frees, so the balancer decides with current load. CallWith gives a call a priority in
// that queue; aging (Options.PriorityAging) bounds how long later high-priority calls can delay it.
//
// # Remote calls
//
// A call to a process or fleet worker is a NATS message on that worker's own subject, with the method and call ID in
// headers and msgpack arguments in the body; the replies of every pool on a connection come back through one
// subscription, so thousands of calls can be in flight without a subscription each. Any NATS client can call a
// worker the same way, in JSON too (see the README).
//
// Under load, calls to one worker travel together in one message, and its replies likewise: a call to a worker that
// still has calls to answer waits at most 50 µs for company, and the first calls of a burst to idle workers wait
// until a caller of the pool waits for a result (Result, Done, OnDone, Gather, Wait, AsCompleted), at most 500 µs.
// A caller making one call at a time sends every call at once, alone. Round-robin and random pools hand calls out in
// runs, a stretch of consecutive calls to each worker in turn, so that a caller waiting for its calls in order does
// not wait for the slowest worker each time; over many runs every worker gets its share. BENCHMARKS.md measures what
// batching and runs change.
//
// # Faults
//
// A fleet loses connections, servers and processes as a matter of course; a pool holds its calls to these promises,
// where HB is the heartbeat interval (Options.HeartbeatInterval, default 1 s; a standing worker that advertises a
// longer one is given that):
//
//   - No future waits forever. Every call in flight resolves, with its result or a typed error, within a bound set
//     by HB whatever the call's own deadline: a worker silent for 3 HB while the pool's connection is up, or a child
//     process that exits, is lost and its calls fail with ErrWorkerLost; a pool whose own connection stays down for
//     the lease (10 HB) fails its calls with ErrConnectionLost.
//   - A connection loss loses no call and runs none twice. A worker keeps the outcomes of its recent calls (the
//     last 1,024, up to 16 MiB, for 30 s) and the IDs of those it accepted. After the pool's connection comes back,
//     after the worker's does, and when a reply is 3 HB overdue from a worker that is alive, the pool reconciles:
//     the worker sends its kept outcomes again, calls it is running are awaited, and calls it never received are sent
//     again, which is safe for any method because they never started. A reply that arrives twice is dropped.
//   - Liveness runs both ways. The pool sends a keepalive every HB; a worker it started that hears none for the
//     lease stops taking calls, starts none of those queued, cancels those running and exits, so agent capacity and
//     limit slots come back when a client dies (standing workers stay: they outlive clients by design). A worker
//     declared lost is told so, and it asks the pool before it starts a call sent before the loss (a fence): a frozen
//     worker that wakes starts none of the calls already failed.
//   - The pool restores its size. A lost worker's replacement is tried again with backoff (100 ms doubling to 10 s)
//     until it serves or the pool stops; PoolStats.Replacing and StartError say what is pending and why. A worker
//     that cannot start fails New after three attempts with its constructor's error, leaving nothing running.
//
// A call to a lost worker fails rather than moves, because the method may have run partly: sending a charge or an
// append again is the caller's decision. Methods that are safe to run twice opt in, with fleet.Kind.Idempotent at
// registration or CallOptions.Idempotent per call; their calls in flight on a lost worker go to a live one instead
// (PoolStats.Failovers counts them), as Ray retries a task max_task_retries times.
//
// A Process-mode child runs with GOMAXPROCS 1 (Options.ChildMaxProcs): it runs one worker's calls one at a time, and
// its siblings share the machine's CPUs. Raise it for methods that run goroutines in parallel.
//
// # Futures
//
// A Future is the pending result of a call: Result waits (ctx bounds the wait, not the call), Done is closed at
// completion, Cancel cancels the call, also on a remote worker, whose method sees its context cancelled. A future
// passed as an argument to another call, also inside a slice or map, is resolved before that call is dispatched,
// without blocking the caller, and a failed one fails the call with its error; so pools chain into pipelines:
//
//	fetched := client.Call[Document](fetchers, "Fetch", url)
//	stored := client.Call[string](storers, "Store", client.Call[Document](processors, "Process", fetched))
//
// Gather, Wait and AsCompleted work on futures of any pools. OnDone hands a future's result to a callback when the call
// completes, so a caller can keep a fixed number of calls in flight, starting one as each finishes, without a
// goroutine per call:
//
//	sem := make(chan struct{}, 256)
//	for _, doc := range docs {
//		sem <- struct{}{}
//		client.Call[int](pool, "Process", doc).OnDone(func(n int, err error) { record(n, err); <-sem })
//	}
//
// # Errors
//
// A method's error reaches Result with its identity: errors.Is and errors.As work in-process, and across processes
// for sentinels registered with fleet.RegisterError; other remote errors are *fleet.RemoteError with the type name,
// message and, for panics, the worker's stack. The pool's own conditions are sentinels: ErrPoolStopped,
// ErrNoWorkers, ErrWorkerLost, ErrConnectionLost, ErrInvalidOptions, ErrResultType, and fleet.ErrUnknownMethod and
// fleet.ErrBadArguments for calls that name no method or give wrong arguments.
//
// # Choices where concurry is silent
//
//   - The zero Options.Mode is Thread.
//   - Least-active and least-total ties go to the worker idle longest, not the lowest index, which spreads
//     sequential calls.
//   - Retries of in-process calls run in the worker goroutine; retries of remote calls are driven by the pool and sent
//     again to the same worker, because retry predicates (Go funcs) cannot travel to another process. Either way the
//     pool counts the call once and every attempt runs the whole method, limits included.
//   - Broadcast runs a control method at once beside the call a worker is busy with, not behind its queue, so a
//     shutdown flag reaches a busy worker (the guide's graceful shutdown).
//   - Stop lets accepted calls finish until its ctx ends, then fails the rest with ErrPoolStopped wrapping ctx's
//     error. A method that ignores its context keeps its goroutine until it returns; its result is dropped.
//   - Pool limits for remote workers live in JetStream KV under a key named after the pool.
package client
