package dashboard

import "time"

// Snapshot is the fleet as the dashboard sees it at one moment: what the page shows, and what /snapshot.json and
// /events serve. Durations are in seconds, times in Unix seconds (JSON numbers a browser reads as they are).
type Snapshot struct {
	At      float64    `json:"at"`      // when it was taken
	Server  string     `json:"server"`  // the NATS server the dashboard is connected to (credentials redacted)
	Prefix  string     `json:"prefix"`  // the fleet's subject prefix
	Bucket  string     `json:"bucket"`  // the limits' KV bucket
	History float64    `json:"history"` // how far back the limits' histories reach
	Agents  []Agent    `json:"agents"`
	Pools   []Pool     `json:"pools"`
	Limits  []LimitSet `json:"limits"`
	// Problems are what the dashboard could not read (no limits bucket yet, an unreadable key), newest state only.
	Problems []string `json:"problems"`
}

// Agent is one agent, as it answered the last discovery request it answered.
type Agent struct {
	ID       string   `json:"id"`
	Host     string   `json:"host"`
	Capacity int      `json:"capacity"` // workers it starts for pools at most
	Free     int      `json:"free"`     // of which not in use
	Workers  int      `json:"workers"`  // workers it hosts, standing ones included
	Kinds    []string `json:"kinds"`
	InFlight int64    `json:"in_flight"` // calls queued or running on its workers, by their heartbeats
	// Status is StatusUp while it answers discovery, StatusGone once it missed three rounds.
	Status string  `json:"status"`
	Age    float64 `json:"age"` // since it last answered
}

// Pool is the workers whose heartbeats name one pool, or the standing workers of one kind (ID "").
type Pool struct {
	ID       string `json:"id"` // "" for standing workers
	Kind     string `json:"kind"`
	Standing bool   `json:"standing"`
	// Status is StatusUp while its keepalive comes, StatusSilent once three heartbeat intervals pass without one
	// (its workers stop when their lease runs out), StatusStanding for standing workers, which have none.
	Status   string   `json:"status"`
	InFlight int64    `json:"in_flight"`
	Calls    int64    `json:"calls"`
	Errors   int64    `json:"errors"`
	LimitSet string   `json:"limit_set,omitempty"` // the shared set its limits live in, when the bucket holds it
	Workers  []Worker `json:"workers"`
}

// Worker is one worker, from its heartbeats and its answers to stats requests.
type Worker struct {
	ID       string  `json:"id"`
	Agent    string  `json:"agent"`
	Index    int     `json:"index"`
	InFlight int64   `json:"in_flight"`
	Calls    int64   `json:"calls"`
	Errors   int64   `json:"errors"`
	Health   string  `json:"health"`   // HealthAlive, HealthLate, HealthLost or HealthStopping
	Age      float64 `json:"age"`      // since its last heartbeat
	Interval float64 `json:"interval"` // its heartbeat interval
	Conn     uint32  `json:"conn"`     // times its connection came back after a drop
}

// LimitSet is one shared set in the limits bucket.
type LimitSet struct {
	Name string `json:"name"`
	Pool string `json:"pool,omitempty"` // the pool whose Options.Limits it holds, if any
	// Partitions counts the partitions holding state, for a set with per-partition limits; its limits then show the
	// busiest partition.
	Partitions int     `json:"partitions"`
	Limits     []Limit `json:"limits"`
}

// Limit is one limit of a set now, and its utilisation over the last History seconds.
type Limit struct {
	Key         string  `json:"key"`
	Algorithm   string  `json:"algorithm,omitempty"` // "" for a resource limit
	Capacity    float64 `json:"capacity"`
	Available   float64 `json:"available"`
	Utilization float64 `json:"utilization"` // 1 - available/capacity
	// History is one [time, utilisation] pair per refresh, oldest first.
	History [][2]float64 `json:"history"`
}

// Health of a worker, from the age of its last heartbeat against its interval.
const (
	HealthAlive    = "alive"    // heard from within two intervals
	HealthLate     = "late"     // a heartbeat missed: silent for two to three intervals
	HealthLost     = "lost"     // silent for more than three intervals: its pool has declared it lost
	HealthStopping = "stopping" // its last heartbeat said it is stopping
)

// Status of an agent or a pool.
const (
	StatusUp       = "up"
	StatusGone     = "gone"     // an agent that stopped answering discovery
	StatusSilent   = "silent"   // a pool whose keepalive stopped
	StatusStanding = "standing" // standing workers, which no pool keeps alive
)

// unix is t in Unix seconds.
func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
