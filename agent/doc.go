// Package agent is the main of a natsfleet worker binary: the command line, the run loop and the Prometheus metrics
// of cmd/worker, for a binary that hosts kinds of its own. Such a binary imports the package that registers its
// kinds (fleet.Register runs in that package's variables) and hands main to Main:
//
//	package main
//
//	import (
//		"github.com/natsfleet/natsfleet/agent"
//		_ "example.com/mykinds" // registers the kinds with fleet.Register
//	)
//
//	func main() { agent.Main() }
//
// It then takes the flags of cmd/worker:
//
//	mybinary --nats nats://10.0.0.5:4222 --creds worker.creds --capacity 8
//	mybinary --nats nats://10.0.0.5:4222 --serve Summarizer=4,Embedder=2 --args Summarizer='["gpt-x", 3]'
//	mybinary --nats nats://10.0.0.5:4222 --capacity 8 --metrics :9464
//
// # Flags
//
//	--nats URL[,URL]   NATS server URLs (default nats://127.0.0.1:4222)
//	--user, --password, --token, --creds FILE, --nkey FILE
//	                   NATS credentials, at most one kind of them
//	--tls-cert FILE, --tls-key FILE, --tls-ca FILE
//	                   TLS client certificate and key, and the CA that verifies the server
//	--capacity N       workers the agent starts for fleet-mode pools (default the number of CPUs; -1 for none)
//	--serve Kind=N[,Kind=N]
//	                   standing workers, which clients join with client.Attach; they do not use the capacity
//	--args JSON | Kind=JSON
//	                   constructor arguments of the --serve kinds (repeatable)
//	--prefix P         subject prefix (default "fleet")
//	--id ID            agent ID (default generated)
//	--heartbeat D      heartbeat interval of the workers (default 1s)
//	--drain D          how long running calls may finish on shutdown (default 30s)
//	--metrics ADDR     serve Prometheus metrics on http://ADDR/metrics (default none)
//
// --args gives the constructor arguments as a JSON array, decoded into the constructor's parameter types: a bare
// array for every --serve kind, Kind=array for one kind (it wins over the bare one). A kind, a count or arguments
// that do not fit are bad usage, reported before the agent connects.
//
// Once it serves, the binary prints "worker: agent <id> serving on <url>" to standard output, which a script can
// wait for. On SIGINT or SIGTERM it stops taking work, lets the calls its workers hold finish (for up to --drain)
// and exits 0; it exits 1 when it cannot connect, start or stop cleanly, and 2 for bad usage. Run is the same loop
// with a context instead of signals, for a main that does more than Main.
//
// # Metrics
//
// --metrics exports, besides the Go runtime's and the process's metrics:
//
//	natsfleet_calls_total, natsfleet_call_errors_total   counters by kind and method
//	natsfleet_call_duration_seconds                      histogram by kind and method, arrival to reply
//	natsfleet_workers                                    workers hosted, by kind
//	natsfleet_worker_in_flight                           calls queued or running, by kind and worker
//	natsfleet_limit_utilization, natsfleet_limit_capacity, natsfleet_limit_available
//	                                                     shared limits, by limit set and key
//	natsfleet_agent_capacity, natsfleet_agent_free       the capacity offered, and what is left of it
//
// A call naming no method of its kind counts under method "". Every registered kind's method has its series from
// the start, at zero, so a rate over them needs no first call. Counting a call costs a map lookup and three atomic
// updates; the gauges are read from the agent (fleet.Agent.Workers) only when scraped.
//
// # Process mode
//
// Main first serves as a process-mode child when it was started as one (fleet.ServeIfChild), so the same binary
// can be a process-mode pool's WorkerBinary. A client that registers the same kinds (it imports the same package)
// then runs its workers in that binary rather than re-executing itself:
//
//	pool, err := client.New(ctx, mykinds.SummarizerKind, client.Options{Mode: client.Process,
//		WorkerBinary: "/usr/local/bin/mybinary"}, "gpt-x", 3)
//
// # Why a package of its own
//
// Package fleet stays free of flag parsing and of the Prometheus client, so a program that embeds an agent links
// neither: it calls fleet.StartAgent with fleet.AgentOptions, and can feed metrics of its own from
// AgentOptions.OnCall.
package agent
