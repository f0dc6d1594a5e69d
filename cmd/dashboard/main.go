// Command dashboard serves a live picture of a natsfleet fleet in a browser: the agents with their capacity and free
// slots, the pools with their workers' calls, errors and health, and the shared limits with their utilisation over
// the last minutes (package dashboard says what it reads and shows).
//
//	dashboard --nats nats://127.0.0.1:4222                 # http://127.0.0.1:8080/
//	dashboard --nats nats://10.0.0.5:4222 --creds ops.creds --addr :8080 --prefix fleet --history 15m
//
// Flags: --nats URL[,URL] and the credential and TLS flags of cmd/worker (--user and --password, --token, --creds,
// --nkey, --tls-cert, --tls-key, --tls-ca); --addr host:port to serve on (default 127.0.0.1:8080; port 0 picks a
// free one); --prefix (default "fleet"); --bucket, the limits' KV bucket (default natsfleet_limits); --refresh
// (default 1s); --history (default 5m).
//
// Once it serves it prints "dashboard: serving on <url>" to standard output. It runs until SIGINT or SIGTERM and
// exits 0 after a clean stop, 1 when it cannot connect or serve, 2 for bad usage.
//
// It is a command of its own, not a flag of cmd/worker: it watches the whole fleet rather than one agent, so it
// outlives any agent's drain or restart, runs where the operator is, and connects with read-only credentials.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/dashboard"
	"github.com/natsfleet/natsfleet/limits"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run serves the dashboard configured by args until ctx ends and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dashboard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var conn broker.Options
	conn.AddFlags(fs)
	var opts dashboard.Options
	addr := fs.String("addr", "127.0.0.1:8080", "address to serve the page on, host:port (port 0 picks a free one)")
	fs.StringVar(&opts.Prefix, "prefix", broker.DefaultPrefix, "subject prefix of the fleet")
	fs.StringVar(&opts.Bucket, "bucket", limits.DefaultBucket, "JetStream KV bucket of the shared limits")
	fs.DurationVar(&opts.Refresh, "refresh", time.Second, "how often to ask the fleet and update the page")
	fs.DurationVar(&opts.History, "history", 5*time.Minute, "how far back the limits' charts reach")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "dashboard: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if opts.Refresh <= 0 || opts.History <= 0 {
		fmt.Fprintln(stderr, "dashboard: --refresh and --history must be positive")
		return 2
	}
	opts.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	conn.Name = "natsfleet-dashboard"

	// Listening first makes a taken port fail the start.
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(stderr, "dashboard: --addr: %v\n", err)
		return 1
	}
	defer ln.Close() // closed already once the server shut down
	nc, err := broker.Connect(conn)
	if err != nil {
		fmt.Fprintf(stderr, "dashboard: %v\n", err)
		return 1
	}
	defer nc.Close()
	d, err := dashboard.New(nc, opts)
	if err != nil {
		fmt.Fprintf(stderr, "dashboard: %v\n", err)
		return 1
	}
	srv := &http.Server{Handler: d, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "dashboard: serving on %s (NATS %s)\n", pageURL(ln), nc.ConnectedUrlRedacted())

	code := 0
	select {
	case <-ctx.Done():
	case err := <-served:
		fmt.Fprintf(stderr, "dashboard: %v\n", err)
		code = 1
	}
	// Closing the dashboard first ends the pages' event streams, which Shutdown would otherwise wait for.
	_ = d.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		fmt.Fprintf(stderr, "dashboard: stop: %v\n", err)
		code = 1
	}
	return code
}

// pageURL is where a browser on this machine finds the page served on ln.
func pageURL(ln net.Listener) string {
	addr := ln.Addr().String()
	if host, port, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			addr = net.JoinHostPort("127.0.0.1", port) // every interface, this one included
		}
	}
	return "http://" + addr + "/"
}
