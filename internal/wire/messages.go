package wire

import "time"

// Error is the body of a reply whose status is StatusError.
type Error struct {
	Type    string `msgpack:"type" json:"type"` // Go type of the error, e.g. "*fs.PathError"
	Message string `msgpack:"message" json:"message"`
	Stack   string `msgpack:"stack,omitempty" json:"stack,omitempty"`
	// Code names a sentinel error registered on both sides (fleet.RegisterError), e.g. "fleet.ErrUnknownMethod", so
	// that the caller rebuilds an error matching it with errors.Is.
	Code string `msgpack:"code,omitempty" json:"code,omitempty"`
}

// Progress is the body of a reply whose status is StatusProgress.
type Progress struct {
	Seq   uint64 `msgpack:"seq" json:"seq"` // per bar, increasing: the caller drops stale events
	Bar   string `msgpack:"bar" json:"bar"` // one bar of the call (a method may report several)
	Desc  string `msgpack:"desc" json:"desc"`
	N     int64  `msgpack:"n" json:"n"`
	Total int64  `msgpack:"total" json:"total"` // 0: unknown
	Done  bool   `msgpack:"done,omitempty" json:"done,omitempty"`
}

// Heartbeat is published by every worker on {prefix}.hb.{kind}.{workerID} every interval, and once as soon as it
// serves, so a pool knows it is ready. Standing workers also answer kind discovery ({prefix}.kind.{kind}.discover)
// with it.
type Heartbeat struct {
	WorkerID string        `msgpack:"id" json:"id"`
	Kind     string        `msgpack:"kind" json:"kind"`
	Agent    string        `msgpack:"agent,omitempty" json:"agent,omitempty"` // ID of the agent hosting it
	Pool     string        `msgpack:"pool,omitempty" json:"pool,omitempty"`   // the pool it was started for; "" if standing
	Index    int           `msgpack:"index" json:"index"`
	InFlight int64         `msgpack:"in_flight" json:"in_flight"` // calls queued or running
	Calls    int64         `msgpack:"calls" json:"calls"`         // calls completed
	Interval time.Duration `msgpack:"interval" json:"interval"`   // its heartbeat interval
	Stopping bool          `msgpack:"stopping,omitempty" json:"stopping,omitempty"`
	// Batches says the worker takes call batches; callers send batches only to workers that do.
	Batches bool `msgpack:"batches,omitempty" json:"batches,omitempty"`
	// Conn counts the times the worker's connection came back after it dropped: messages to and from the worker
	// may have been lost each time, and its callers reconcile their calls with it.
	Conn uint32 `msgpack:"conn,omitempty" json:"conn,omitempty"`
	// AgentCalls says the worker's agent takes its calls, single and in batches, on {prefix}.agent.{agent}.calls
	// too, each naming its worker (HeaderWorker, BatchCall.Worker): a caller with many workers on one agent sends
	// them there together.
	AgentCalls bool `msgpack:"agent_calls,omitempty" json:"agent_calls,omitempty"`
}

// WorkerSpec says how to build one worker: the body of a spawn request to an agent
// ({prefix}.agent.{agentID}.spawn) and, in process mode, what a parent hands its child (ChildEnv).
type WorkerSpec struct {
	Kind  string `msgpack:"kind" json:"kind"`
	ID    string `msgpack:"id" json:"id"`
	Index int    `msgpack:"index" json:"index"`
	Pool  string `msgpack:"pool" json:"pool"`
	// Args are the constructor arguments, one msgpack array.
	Args []byte `msgpack:"args" json:"args"`
	// Concurrent runs the worker's calls concurrently (asyncio semantics).
	Concurrent bool `msgpack:"concurrent,omitempty" json:"concurrent,omitempty"`
	// Limits are the pool's limits (limits.MarshalLimits), shared through JetStream KV under LimitSet.
	Limits   []byte `msgpack:"limits,omitempty" json:"limits,omitempty"`
	LimitSet string `msgpack:"limit_set,omitempty" json:"limit_set,omitempty"`
	// LimitBucket is the limit set's KV bucket; "" means the limits package's default.
	LimitBucket string `msgpack:"limit_bucket,omitempty" json:"limit_bucket,omitempty"`
	// LimitReplicas are the replicas of the limit set's bucket if the worker makes it; 0 means the default.
	LimitReplicas int `msgpack:"limit_replicas,omitempty" json:"limit_replicas,omitempty"`
	// Prefix is the subject prefix; "" means "fleet".
	Prefix            string        `msgpack:"prefix,omitempty" json:"prefix,omitempty"`
	HeartbeatInterval time.Duration `msgpack:"heartbeat,omitempty" json:"heartbeat,omitempty"`
	// Lease is how long the worker goes on without hearing its pool's keepalive (counted while its own connection
	// is up) before it stops and exits; 0 means ten heartbeat intervals. Standing workers have none.
	Lease time.Duration `msgpack:"lease,omitempty" json:"lease,omitempty"`
}

// SpawnReply answers a spawn request: the worker's ID once it serves, or why it does not.
type SpawnReply struct {
	WorkerID string `msgpack:"id,omitempty" json:"id,omitempty"`
	Error    string `msgpack:"error,omitempty" json:"error,omitempty"`
}
