package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/natsfleet/natsfleet/broker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run starts the server, waits for ctx to end and shuts the server down. It returns the exit code: 0 after a clean
// shutdown, 1 when the server fails, 2 for bad flags.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, readyFile, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "embedded-nats:", err)
		return 2
	}
	if readyFile != "" {
		if err := os.Remove(readyFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintln(stderr, "embedded-nats: ready file:", err)
			return 1
		}
	}
	srv, err := broker.StartEmbedded(opts)
	if err != nil {
		fmt.Fprintln(stderr, "embedded-nats:", err)
		return 1
	}
	defer srv.Shutdown()

	url := srv.ClientURL()
	if readyFile != "" {
		if err := writeFileAtomic(readyFile, url+"\n"); err != nil {
			fmt.Fprintln(stderr, "embedded-nats: ready file:", err)
			return 1
		}
	}
	fmt.Fprintln(stdout, "embedded-nats: listening on", url)
	<-ctx.Done()
	return 0
}

func parseFlags(args []string, stderr io.Writer) (opts broker.EmbeddedOptions, readyFile string, err error) {
	fs := flag.NewFlagSet("embedded-nats", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:4222", "client listen address `host:port`; port 0 picks a free port")
	fs.StringVar(&opts.StoreDir, "store", "", "JetStream store `dir` (default: a temporary directory removed at exit)")
	fs.StringVar(&opts.ServerName, "name", "", "server `name` (default: the server's generated ID)")
	fs.StringVar(&opts.ClusterName, "cluster", "", "cluster `name`; with -cluster-addr and -routes forms a cluster")
	clusterAddr := fs.String("cluster-addr", "", "route listen address `host:port`; port 0 picks a free port")
	routes := fs.String("routes", "", "comma-separated route `urls` of the cluster's servers, e.g. nats-route://127.0.0.1:6222")
	fs.StringVar(&readyFile, "ready-file", "", "write the client URL to `path` once the server is ready")
	fs.BoolVar(&opts.Logger, "v", false, "print the server's log to stderr")
	if err := fs.Parse(args); err != nil {
		return opts, "", err
	}
	if fs.NArg() > 0 {
		return opts, "", fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if opts.Host, opts.Port, err = splitAddr(*addr); err != nil {
		return opts, "", fmt.Errorf("-addr: %w", err)
	}
	if *clusterAddr != "" {
		if opts.ClusterHost, opts.ClusterPort, err = splitAddr(*clusterAddr); err != nil {
			return opts, "", fmt.Errorf("-cluster-addr: %w", err)
		}
		if opts.ClusterPort == 0 {
			opts.ClusterPort = -1 // EmbeddedOptions' 0 means no route listener
		}
	}
	if *routes != "" {
		opts.Routes = strings.Split(*routes, ",")
	}
	return opts, readyFile, nil
}

// splitAddr splits "host:port"; an empty host means all interfaces, as with net.Listen.
func splitAddr(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

// writeFileAtomic writes data to a temporary file next to path and renames it, so a reader never sees it partial.
func writeFileAtomic(path, data string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = tmp.WriteString(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}
