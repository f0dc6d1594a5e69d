// Package wire is natsfleet's protocol: every message a pool, a worker and an agent exchange over NATS, its subject,
// headers and body, with the code that reads and writes them. It is the protocol's reference; any NATS client that
// follows it can call a worker.
//
// # Subjects
//
// broker.Subjects spells them, under a prefix ("fleet" by default):
//
//	{prefix}.w.{workerID}           calls to one worker (no queue group: the caller's balancer picks the worker)
//	{prefix}.w.{workerID}.ctl       control: urgent calls, cancel, stop, stats, ping
//	{prefix}.hb.{kind}.{workerID}   heartbeats
//	{prefix}.agent.{agentID}.spawn  start a worker on one agent
//	{prefix}.agent.discover         every agent answers with its fleet.AgentInfo
//	{prefix}.kind.{kind}.discover   the standing workers of a kind answer with their Heartbeat
//	$SRV.PING|INFO|STATS[.kind[.id]] NATS service discovery, as nats.go's micro package defines it
//
// # Calls and replies
//
// A call is a message on the worker's subject with a reply subject. Its metadata travel in headers: HeaderCallID
// (unique in the fleet; the worker makes one up when it is missing), HeaderMethod (required), HeaderDeadline
// (absolute, see FormatDeadline), HeaderContentType (application/msgpack, the default, or application/json) and
// HeaderTraceparent. The body is the arguments as one array in that content type; an empty body is no arguments.
// With JSON a one-parameter method also takes its argument bare ('42' for [42]):
//
//	nats req fleet.w.W1 '[42]' -H Fleet-Method:Process -H Content-Type:application/json
//
// Every reply carries HeaderCallID, HeaderContentType (the call's) and HeaderStatus: StatusOK with the method's
// result as body, StatusError with an Error, or StatusProgress with a Progress (any number of these precede the
// final reply of a method that reports progress). A worker answers bad input (an unknown content type, a missing
// method header, arguments that do not fit, a body over its limit) with an error reply and goes on serving; a call
// without a reply subject runs and its outcome is dropped. Calls to one worker run in arrival order. A standing
// worker, which callers share, adds HeaderLoad to its replies: the calls it holds and has served for all its callers
// (FormatLoad), which callers weigh when they pick a worker.
//
// # Batches
//
// Under load a caller sends the calls waiting for one worker in one message, and a worker answers the replies
// waiting for one caller in one message, so that the fleet pays NATS's per-message cost once per batch. A call
// batch is a message on the worker's subject with HeaderBatch (its entry count) and, as body, a msgpack array of
// BatchCall maps (keys i, m, r, d, a: call ID, method, reply subject, deadline, arguments). A worker serves the
// entries in order exactly as separate calls. Their replies, when the reply subjects share a prefix up to their last
// token, travel as a reply batch: a message to that prefix followed by ReplyBatchToken, with HeaderBatch and a
// msgpack array of BatchReply maps (keys t, s, l, b: the last token of the call's reply subject, the status, the
// load as HeaderLoad has it, only from standing workers, and the body). Batches are msgpack only; a worker's Heartbeat says whether it takes them (Batches), and callers send them
// only to workers that do.
//
// # Control
//
// A message on {prefix}.w.{workerID}.ctl with HeaderControl is one of: ControlCall (an urgent call: a call's headers
// and body, answered as a call), ControlCancel (HeaderCallID names the call; no reply), ControlStop (HeaderDeadline
// bounds the drain, HeaderAbort: 1 cancels the calls first; replied once the worker has stopped), ControlStats
// (replied with fleet.WorkerStats) or ControlPing (replied with an empty body). Bodies of replies to control
// messages use the request's content type; status and errors are reported as for calls.
//
// # Heartbeats, discovery and spawning
//
// A worker publishes its Heartbeat on {prefix}.hb.{kind}.{workerID} as soon as it serves and then every
// Heartbeat.Interval; a pool declares lost a worker it has not heard from in three intervals. A pool in fleet mode
// asks agents for their fleet.AgentInfo on {prefix}.agent.discover, and an agent for a worker with a WorkerSpec
// (msgpack, or JSON with Content-Type: application/json) on {prefix}.agent.{agentID}.spawn; the agent answers with
// a SpawnReply once the worker serves. A process-mode child finds its WorkerSpec in its environment (ChildEnv).
package wire
