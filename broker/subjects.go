package broker

import (
	"strings"
	"unicode"
)

// DefaultPrefix is the first token of every subject when Subjects.Prefix is empty.
const DefaultPrefix = "fleet"

// Subjects builds natsfleet's subject names; it is the one place they are spelled. The zero value uses
// DefaultPrefix. The methods do not validate their arguments: check worker IDs, agent IDs and kinds with ValidToken
// where they enter the system.
type Subjects struct {
	// Prefix is the first token of every subject (it may itself contain dots). Default DefaultPrefix.
	Prefix string
}

func (s Subjects) p() string {
	if s.Prefix == "" {
		return DefaultPrefix
	}
	return s.Prefix
}

// Worker is the subject one worker receives calls on: {prefix}.w.{workerID}.
func (s Subjects) Worker(workerID string) string { return s.p() + ".w." + workerID }

// Control is the subject of a worker's control requests (cancel, stop, stats, health): {prefix}.w.{workerID}.ctl.
func (s Subjects) Control(workerID string) string { return s.p() + ".w." + workerID + ".ctl" }

// Spawn is the subject an agent takes requests to start workers on: {prefix}.agent.{agentID}.spawn.
func (s Subjects) Spawn(agentID string) string { return s.p() + ".agent." + agentID + ".spawn" }

// AgentCalls is where an agent takes calls for any of its workers, each naming its worker: a caller with many
// workers on one agent sends their calls there together.
func (s Subjects) AgentCalls(agentID string) string { return s.p() + ".agent." + agentID + ".calls" }

// AgentDiscover is the subject every agent answers (scatter-gather): {prefix}.agent.discover.
func (s Subjects) AgentDiscover() string { return s.p() + ".agent.discover" }

// Heartbeat is the subject a worker of a kind publishes heartbeats on: {prefix}.hb.{kind}.{workerID}.
func (s Subjects) Heartbeat(kind, workerID string) string {
	return s.p() + ".hb." + kind + "." + workerID
}

// Heartbeats is the wildcard subject for the heartbeats of every worker of a kind, {prefix}.hb.{kind}.*, or of
// every kind when kind is "": {prefix}.hb.*.*.
func (s Subjects) Heartbeats(kind string) string {
	if kind == "" {
		kind = "*"
	}
	return s.p() + ".hb." + kind + ".*"
}

// PoolKeepalive is the subject a pool says it is alive on, every heartbeat interval, so that the workers it started
// stop when it is gone: {prefix}.pool.{poolID}.alive.
func (s Subjects) PoolKeepalive(poolID string) string { return s.p() + ".pool." + poolID + ".alive" }

// KindDiscover is the subject the standing workers of a kind answer: {prefix}.kind.{kind}.discover.
func (s Subjects) KindDiscover(kind string) string { return s.p() + ".kind." + kind + ".discover" }

// ValidToken reports whether s can be one subject token: non-empty, without '.', '*', '>' or whitespace.
func ValidToken(s string) bool {
	return s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return r == '.' || r == '*' || r == '>' || unicode.IsSpace(r)
	})
}
