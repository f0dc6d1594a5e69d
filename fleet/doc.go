// Package fleet is the worker side of natsfleet: the kinds a program registers, the workers that host them, and the
// agents and child processes that serve workers over NATS.
//
// # Kinds
//
// A worker is a stateful Go object whose exported methods are called remotely. Register names its constructor, so
// that any process registering the same name (a worker binary, a re-executed child) can build one:
//
//	type DataProcessor struct{ multiplier int }
//
//	func NewDataProcessor(multiplier int) (*DataProcessor, error) { return &DataProcessor{multiplier}, nil }
//	func (d *DataProcessor) Process(ctx context.Context, value int) (int, error) { return value * d.multiplier, nil }
//
//	var DataProcessorKind = fleet.Register("DataProcessor", NewDataProcessor)
//
// Every exported method of the shapes (optional leading context.Context; results (), (T), (error) or (T, error)) is
// callable; methods are resolved once, at registration. Arguments arrive as the method's own parameter types: an int
// parameter gets an int, a struct its struct. Methods of the common shapes (at most one parameter, and a result, each
// an int, int64, float64, bool, string, []byte or any) are called without reflection when the arguments already have
// the parameter's type, as in-process pools pass them and served workers decode msgpack ones; the rest go through
// reflect.Value.Call. A panic in a method becomes that call's *PanicError and the worker keeps serving.
//
// # The method's context
//
// A method that takes a context gets the call's deadline and cancellation (a caller's Cancel reaches it wherever it
// runs) and three things from its pool: Limits(ctx), the limits shared by every worker of the pool (acquire before
// calling a rate-limited API); Progress(ctx, total, desc), a progress bar the caller sees as a terminal bar or
// through a callback, rate-limited so a tight loop cannot flood NATS; and CallInfo(ctx), the worker's identity.
//
// # Where workers run
//
// Package client starts workers: in this process (thread, asyncio and sync pools), in child processes that re-run
// the program (process pools: main calls ServeIfChild first), or on agents (fleet pools). An Agent hosts workers on
// one NATS connection: it starts the workers fleet pools ask for, within the capacity it offers, and serves standing
// workers of a kind (Agent.Serve) that clients join with client.Attach. A worker binary is an agent with the
// program's kinds registered; package agent gives it cmd/worker's command line in three lines, and StartAgent
// embeds an agent in a program of your own.
//
// A served worker takes calls on its own subject, alone or in batches, and control messages beside them (urgent
// calls, cancel, stop, stats); it sends heartbeats that pools watch. A call of a method that runs briefly runs in the
// goroutine that receives it when the worker is idle, which spares a handoff per call; longer ones go to the
// worker's goroutine, so the calls behind them stay cancellable. Bad input (a malformed body, an unknown method,
// wrong argument types, an oversized payload) gets an error reply and never stops the worker. The README describes
// the protocol.
//
// RegisterError makes a sentinel error keep its identity across processes: the caller's errors.Is matches it.
//
// # Service discovery
//
// Every worker an Agent or a process-mode child serves is a NATS service as nats.go's micro package
// and the NATS CLI know them: `nats micro ls` lists the fleet's workers by kind, `nats micro info <kind>` shows a
// worker's methods and `nats micro stats <kind>` their request counts, errors and processing times. The service name
// is the kind's name, the service ID is the worker's ID, the version is DefaultServiceVersion unless the kind sets one
// with Kind.SetVersion, and the metadata carry the worker's "pool" ("" for a standing worker), "agent" and "index".
// Each callable method is an endpoint.
//
// A worker does not become a service through micro.AddService, because a micro service picks its own ID and
// subscribes every endpoint on a subject of its own (in a queue group by default): a call could then reach a worker
// by a second path, beside the dispatcher's, and the worker would lose the arrival order its actor semantics promise.
// Instead a worker answers the discovery subjects itself: $SRV.PING, $SRV.INFO and $SRV.STATS, alone, followed by
// the kind's name, or by the kind's name and the worker's ID, through three wildcard subscriptions ($SRV.*,
// $SRV.*.{kind} and $SRV.*.{kind}.{id}) that carry nothing but discovery. The replies are micro's own types (Ping,
// Info, Stats), so they have exactly the schema micro clients validate. Every endpoint names the one subject calls
// arrive on, {prefix}.w.{id}, with no queue group, and its metadata name the Fleet-Method header that selects the
// method, the parameter types and the result type. `nats req` or `nats micro request` with those headers (and
// Content-Type: application/json for a JSON body) is an ordinary call: it queues behind the others.
//
// A method's counters count what callers saw: num_requests every reply to a call that named the method, failed ones
// included; num_errors and last_error the replies that carried an error (bad arguments, a method's error or panic, a
// stopped worker, a cancelled call); processing_time the time from the call's arrival at the worker to its reply,
// which includes the time a call waits behind earlier ones in the worker's queue. A call naming no method of the kind
// is answered with an error and counted by no endpoint. A kind or method whose name micro does not accept (anything
// but ASCII letters, digits, '-' and '_') is left out of discovery; its calls work as before.
//
// AgentOptions.OnCall sees every answered call as a CallRecord, and Agent.Workers reports the workers' load and
// limits, which is how package agent feeds its Prometheus metrics without this package depending on a metrics
// library.
package fleet
