// Command embedded-nats runs a NATS server with JetStream for development: a worker fleet on one machine, or a
// small cluster on loopback.
//
// Usage:
//
//	embedded-nats [-addr 127.0.0.1:4222] [-store DIR] [-name NAME] [-cluster NAME -cluster-addr HOST:PORT
//	              -routes nats-route://HOST:PORT,...] [-ready-file PATH] [-v]
//
// It prints one line, "embedded-nats: listening on nats://HOST:PORT", once the server accepts connections, and
// runs until SIGINT or SIGTERM, then shuts the server down and exits 0.
//
// Port 0 in -addr picks a free port; -ready-file PATH writes the client URL to PATH once the server is ready (the
// file appears whole, and a stale one is removed at start), so a script can wait for it instead of sleeping.
// Without -store, the JetStream store is a temporary directory removed at exit.
//
// A cluster needs -cluster, -cluster-addr and -routes on every node; JetStream needs the routes from the start, so
// give every node the same full list (a node ignores its own URL):
//
//	R=nats-route://127.0.0.1:6222,nats-route://127.0.0.1:6223,nats-route://127.0.0.1:6224
//	embedded-nats -addr :4222 -name n1 -cluster dev -cluster-addr 127.0.0.1:6222 -routes $R -store /tmp/n1 &
//	embedded-nats -addr :4223 -name n2 -cluster dev -cluster-addr 127.0.0.1:6223 -routes $R -store /tmp/n2 &
//	embedded-nats -addr :4224 -name n3 -cluster dev -cluster-addr 127.0.0.1:6224 -routes $R -store /tmp/n3 &
package main
