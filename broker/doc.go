// Package broker is natsfleet's link to NATS: how clients and workers connect, an embedded nats-server with
// JetStream for development, tests and single-machine pools, and the names of the subjects natsfleet uses.
//
// # Connecting
//
// Options holds everything a process needs to reach a server: URL(s), credentials (user/password, token, nkey
// seed or .creds file) and TLS. Its zero value connects to nats://127.0.0.1:4222 and, unlike nats.go's defaults,
// reconnects forever (every 250ms), so workers and clients outlive a server restart:
//
//	nc, err := broker.Connect(broker.Options{URL: "nats://10.0.0.5:4222", CredentialsFile: "fleet.creds"})
//
// A parent that starts worker processes hands its settings down with Options.Env; the child reads them back with
// OptionsFromEnv.
//
// # Embedded server
//
// StartEmbedded runs a nats-server with JetStream inside the process and returns once it accepts connections.
// By default it listens on a free loopback port and keeps its JetStream store in a temporary directory that
// Shutdown removes; Port -1 listens nowhere and serves only in-process connections (Embedded.Connect), which need
// neither a port nor TLS. Several embedded servers form a cluster when each gets a ClusterName, a ClusterPort and
// the route URLs of the others; JetStream in a cluster needs its routes configured from the start, so give every
// server the full list (its own URL is ignored). cmd/embedded-nats wraps this in a command.
//
// The server's log is off unless EmbeddedOptions.Logger is set. A fatal server error during start-up (a port in
// use, a bad store) is returned by StartEmbedded instead of exiting the process as nats-server itself would.
// Optional client authentication (User/Password, Token, NKeys) and TLS (TLSConfig) let tests exercise the same
// settings production servers use.
//
// # Subjects
//
// Subjects builds every subject name, under a prefix ("fleet" by default):
//
//	{prefix}.w.{workerID}               calls to one worker
//	{prefix}.w.{workerID}.ctl           control requests to that worker (cancel, stop, stats, health)
//	{prefix}.agent.{agentID}.spawn      start a worker on one agent
//	{prefix}.agent.discover             every agent answers (scatter-gather)
//	{prefix}.hb.{kind}.{workerID}       heartbeats
//	{prefix}.kind.{kind}.discover       the standing workers of a kind answer
//	{prefix}.pool.{poolID}.alive        a pool's keepalive, which its workers' leases follow
//
// IDs and kind names become subject tokens; ValidToken tells whether a string can be one.
package broker
