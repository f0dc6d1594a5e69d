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
//   - Fleet: workers started by worker agents (cmd/worker) anywhere on the NATS cluster, placed by the capacity each
//     agent offers; MaxWorkers 0 takes all of it. Attach joins standing workers of a kind instead.
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
// Remote calls are NATS messages on the chosen worker's own subject, {prefix}.w.{workerID}, with the method and call
// ID in headers and msgpack arguments in the body; every reply comes back through one wildcard subscription per
// connection, so thousands of calls can be in flight without a subscription each. Workers send heartbeats; one
// silent for three intervals (default 1 s each), or a child process that exits, is lost: its in-flight calls fail
// with ErrWorkerLost and the pool starts a replacement. A call sent alone to a worker that is already gone fails at
// once (NATS reports no responders); calls that travel in a batch (below) learn it from the heartbeats, within three
// intervals.
//
// Under load, calls to one worker travel in batches, so the fleet pays NATS's per-message cost (the server's routing,
// each process's reads, writes and wake-ups) once per batch. As Nagle's algorithm does for TCP segments, a call to a
// worker that still has a call to answer waits to go together with others in one message, until 128 of them wait or the
// worker has answered everything it was sent, and at most 50 µs (as a Kafka producer's linger): enough for a loop
// submitting calls to gather dozens, and short enough that the worker need not idle between batches while the caller
// hears of its last replies. A call to an idle worker goes at once, alone, unless the pool has other calls pending:
// then it likely starts a burst, and it waits until a caller of the pool waits for a call (Result, Done, OnDone,
// Gather, Wait, AsCompleted) or the 500 µs pass, so that a loop submitting calls sends each worker one batch. The
// worker answers a batch in messages of up to 128 replies, at least every millisecond. A caller making one call at a
// time sends every call at once, alone.
//
// Round-robin and random pools of process and fleet workers hand calls out in runs: the worker picked gets the next
// run calls, and the run's last call sends the batch (balancer.Balancer.PickRun). One call to each worker in turn
// would put a slice of every burst on every worker, and a caller waiting for its calls in order (a ring of futures, a
// pipeline) would wait for the slowest worker each time while the others idle. A run is the pool's recent peak of calls
// in flight divided among its workers, at most 128, and less than twice the calls its workers lately answered per
// reply message: slow calls, answered one at a time, still go one at a time, so a burst of them spreads evenly; after
// a pause of 10 ms with no call in flight the runs start over from one call. Over many runs every worker gets its
// share, as with one call at a time; Stats count calls as before. Least-active and least-total pools pick per call.
// At 256 calls in flight on 4 process workers, runs raised throughput by about 30% (BENCHMARKS.md).
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
// ErrNoWorkers, ErrWorkerLost, ErrInvalidOptions, ErrResultType, and fleet.ErrUnknownMethod and
// fleet.ErrBadArguments for calls that name no method or give wrong arguments.
//
// # Choices where concurry and DESIGN are silent
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
//   - Pool limits for remote workers live in JetStream KV under a key named after the pool; the key is left in the
//     bucket when the pool stops (it holds no resources once every worker is gone).
package client
