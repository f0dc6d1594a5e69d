// Command worker runs a natsfleet agent: it offers capacity to pools that start their workers on it (fleet mode),
// serves standing workers of a kind that clients attach to, and hosts the demo kinds of package
// github.com/natsfleet/natsfleet/examples/demo.
//
//	worker --nats nats://127.0.0.1:4222 --capacity 8
//	worker --nats nats://127.0.0.1:4222 --serve DataProcessor=4 --args '[10]'
//	worker --nats nats://127.0.0.1:4222 --serve DataProcessor=4,SlowWorker=2 --args DataProcessor='[10]'
//	worker --nats nats://127.0.0.1:4222 --serve DataProcessor=4 --args '[10]' --metrics 127.0.0.1:9464
//
// Flags: --nats URL[,URL]; the credentials --user and --password, --token, --creds FILE or --nkey FILE; TLS with
// --tls-cert, --tls-key and --tls-ca; --capacity N (workers offered to fleet-mode pools; default the number of CPUs,
// -1 for none); --serve Kind=N[,Kind=N] and --args; --prefix (default "fleet"); --id (default generated);
// --heartbeat (default 1s); --drain (default 30s); --metrics ADDR. `worker -h` lists them.
//
// --args gives the constructor arguments of the --serve kinds as a JSON array, decoded into the constructor's
// parameter types: a bare array for every kind, Kind=array for one kind (it wins over the bare one).
//
// --metrics serves Prometheus metrics on http://ADDR/metrics: natsfleet_calls_total, natsfleet_call_errors_total and
// the natsfleet_call_duration_seconds histogram by kind and method; natsfleet_workers by kind;
// natsfleet_worker_in_flight by kind and worker; natsfleet_limit_utilization, natsfleet_limit_capacity and
// natsfleet_limit_available by limit set and key; natsfleet_agent_capacity and natsfleet_agent_free; and the Go
// runtime's and the process's metrics.
//
// Every worker also answers NATS service discovery, so `nats micro ls`, `nats micro info KIND` and
// `nats micro stats KIND` show it (see package fleet).
//
// It runs until SIGINT or SIGTERM, then lets the calls its workers hold finish (for up to --drain) and exits 0.
// It is also a process-mode worker binary (client.Options.WorkerBinary): started as a child, it serves one worker.
//
// It is package github.com/natsfleet/natsfleet/agent's Main with the demo kinds imported: a binary hosting your own
// kinds is these lines with your package imported instead of the demo's (see package agent).
package main

import (
	"github.com/natsfleet/natsfleet/agent"
	_ "github.com/natsfleet/natsfleet/examples/demo" // registers the demo kinds
)

func main() { agent.Main() }
