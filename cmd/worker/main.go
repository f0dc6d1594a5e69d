// Command worker runs a natsfleet agent: it offers capacity to pools that start their workers on it (fleet mode),
// serves standing workers of a kind that clients attach to, and hosts the demo kinds of package
// github.com/natsfleet/natsfleet/examples/demo.
//
//	worker --nats nats://127.0.0.1:4222 --capacity 8
//	worker --nats nats://127.0.0.1:4222 --serve DataProcessor=4 --args '[10]'
//	worker --nats nats://127.0.0.1:4222 --serve DataProcessor=4,SlowWorker=2 --args DataProcessor='[10]'
//	worker --nats nats://127.0.0.1:4222 --serve DataProcessor=4 --args '[10]' --metrics 127.0.0.1:9464
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
// A binary hosting your own kinds is this one with your package imported instead of the demo's: register the kinds
// in your package's variables, call fleet.ServeIfChild first in main, then fleet.StartAgent.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/codec"
	_ "github.com/natsfleet/natsfleet/examples/demo" // registers the demo kinds
	"github.com/natsfleet/natsfleet/fleet"
)

func main() {
	fleet.ServeIfChild()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// config is what the command line asks for.
type config struct {
	broker broker.Options
	agent  fleet.AgentOptions
	serve  []standing
	drain  time.Duration
	args   argsFlag
	// metrics is the address --metrics serves Prometheus metrics on; "" serves none.
	metrics string
}

// argsFlag holds the --args values: JSON arrays of constructor arguments for every kind or, as Kind=JSON, for one.
type argsFlag struct {
	all    string
	byKind map[string]string
}

func (a *argsFlag) String() string {
	if a == nil {
		return ""
	}
	return a.all
}

func (a *argsFlag) Set(v string) error {
	v = strings.TrimSpace(v)
	if strings.HasPrefix(v, "[") {
		if a.all != "" {
			return errors.New("arguments for every kind given twice")
		}
		a.all = v
		return nil
	}
	kind, js, ok := strings.Cut(v, "=")
	if !ok || !broker.ValidToken(kind) {
		return fmt.Errorf("want a JSON array or Kind=JSON array, got %q", v)
	}
	if _, dup := a.byKind[kind]; dup {
		return fmt.Errorf("arguments for kind %s given twice", kind)
	}
	if a.byKind == nil {
		a.byKind = make(map[string]string)
	}
	a.byKind[kind] = js
	return nil
}

// of returns the JSON arguments for kind.
func (a *argsFlag) of(kind string) string {
	if js, ok := a.byKind[kind]; ok {
		return js
	}
	return a.all
}

// standing is one --serve entry: n workers of a kind.
type standing struct {
	kind string
	n    int
	args []any
}

// run runs the agent until ctx ends and returns the process's exit code: 0 after a clean stop, 1 when it cannot
// run or stop cleanly, 2 for bad usage.
func run(ctx context.Context, argv []string, stdout, stderr io.Writer) int {
	cfg, err := parse(argv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "worker: %v\n", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	cfg.agent.Logger = logger
	var (
		mx *metrics
		ln net.Listener
	)
	if cfg.metrics != "" {
		// Listening first makes a taken port fail the start, not a later scrape.
		if ln, err = net.Listen("tcp", cfg.metrics); err != nil {
			fmt.Fprintf(stderr, "worker: --metrics: %v\n", err)
			return 1
		}
		defer ln.Close() // closed already when the server was shut down
		mx = newMetrics()
		cfg.agent.OnCall = mx.observe
	}
	nc, err := broker.Connect(cfg.broker)
	if err != nil {
		fmt.Fprintf(stderr, "worker: %v\n", err)
		return 1
	}
	defer nc.Close()
	agent, err := fleet.StartAgent(nc, cfg.agent)
	if err != nil {
		fmt.Fprintf(stderr, "worker: %v\n", err)
		return 1
	}
	if mx != nil {
		mx.watch(agent)
		srv := mx.serve(ln, logger)
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = shutdownMetrics(ctx, srv)
		}()
	}
	code := 0
	for _, s := range cfg.serve {
		if err := agent.Serve(s.kind, s.n, s.args...); err != nil {
			fmt.Fprintf(stderr, "worker: %v\n", err)
			code = 1
			break
		}
	}
	if code == 0 {
		fmt.Fprintf(stdout, "worker: agent %s serving on %s\n", agent.ID(), nc.ConnectedUrlRedacted())
		if ln != nil {
			fmt.Fprintf(stdout, "worker: metrics on %s\n", metricsURL(ln))
		}
		<-ctx.Done()
		logger.Info("worker: stopping", "agent", agent.ID())
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.drain)
	defer cancel()
	if err := agent.Stop(sctx); err != nil {
		fmt.Fprintf(stderr, "worker: stop: %v\n", err)
		code = 1
	}
	if err := nc.FlushWithContext(sctx); err != nil {
		fmt.Fprintf(stderr, "worker: flush: %v\n", err)
		code = 1
	}
	return code
}

func parse(argv []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.broker.URL, "nats", "", "NATS server URL(s), comma-separated (default "+
		"nats://127.0.0.1:4222)")
	fs.StringVar(&cfg.agent.Prefix, "prefix", broker.DefaultPrefix, "subject prefix")
	fs.StringVar(&cfg.agent.ID, "id", "", "agent ID (default generated)")
	fs.IntVar(&cfg.agent.Capacity, "capacity", 0, "workers this agent starts for pools (default the number of "+
		"CPUs; -1 for none)")
	serve := fs.String("serve", "", "standing workers to serve, as Kind=N[,Kind=N]")
	fs.Var(&cfg.args, "args", "constructor arguments of the --serve kinds as a JSON array, e.g. '[10]' for "+
		"every kind, or Kind='[10]' for one (repeatable; a variadic constructor's last argument is itself an array)")
	fs.DurationVar(&cfg.agent.HeartbeatInterval, "heartbeat", fleet.DefaultHeartbeatInterval,
		"heartbeat interval of the workers")
	fs.DurationVar(&cfg.drain, "drain", 30*time.Second, "how long calls may finish on shutdown")
	fs.StringVar(&cfg.metrics, "metrics", "", "serve Prometheus metrics on http://ADDR/metrics, ADDR as host:port "+
		"or :port (default: none)")
	fs.StringVar(&cfg.broker.User, "user", "", "NATS user")
	fs.StringVar(&cfg.broker.Password, "password", "", "NATS password")
	fs.StringVar(&cfg.broker.Token, "token", "", "NATS token")
	fs.StringVar(&cfg.broker.CredentialsFile, "creds", "", "NATS credentials file")
	fs.StringVar(&cfg.broker.NKeySeedFile, "nkey", "", "NATS nkey seed file")
	fs.StringVar(&cfg.broker.TLSCertFile, "tls-cert", "", "TLS client certificate file")
	fs.StringVar(&cfg.broker.TLSKeyFile, "tls-key", "", "TLS client key file")
	fs.StringVar(&cfg.broker.TLSCAFile, "tls-ca", "", "TLS CA file to verify the server")
	if err := fs.Parse(argv); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.broker.Name = "natsfleet-worker"
	if cfg.agent.HeartbeatInterval <= 0 || cfg.drain <= 0 {
		return cfg, errors.New("--heartbeat and --drain must be positive")
	}
	var err error
	if cfg.serve, err = parseServe(*serve, &cfg.args); err != nil {
		return cfg, err
	}
	for kind := range cfg.args.byKind {
		if !slices.ContainsFunc(cfg.serve, func(s standing) bool { return s.kind == kind }) {
			return cfg, fmt.Errorf("--args for kind %s, which --serve does not name", kind)
		}
	}
	if cfg.args.all != "" && len(cfg.serve) == 0 {
		return cfg, errors.New("--args applies to --serve kinds; no --serve given")
	}
	return cfg, nil
}

// parseServe reads "Kind=N[,Kind=N]" and decodes the JSON constructor arguments for each kind.
func parseServe(spec string, cargs *argsFlag) ([]standing, error) {
	if spec == "" {
		return nil, nil
	}
	var out []standing
	for entry := range strings.SplitSeq(spec, ",") {
		kind, count, ok := strings.Cut(strings.TrimSpace(entry), "=")
		if !ok {
			return nil, fmt.Errorf("--serve %q: want Kind=N", entry)
		}
		n, err := strconv.Atoi(count)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--serve %q: N must be a positive number", entry)
		}
		k, err := fleet.Lookup(kind)
		if err != nil {
			return nil, fmt.Errorf("--serve: %w", err)
		}
		js := cargs.of(kind)
		vals, err := codec.JSON.DecodeArgs([]byte(js), k.ConstructorParams())
		if err != nil {
			return nil, fmt.Errorf("--args %q for kind %s (constructor takes %s): %w", js, kind,
				typeList(k.ConstructorParams()), err)
		}
		args := make([]any, len(vals))
		for i, v := range vals {
			args[i] = v.Interface()
		}
		out = append(out, standing{kind: kind, n: n, args: args})
	}
	return out, nil
}

func typeList(ts []reflect.Type) string {
	if len(ts) == 0 {
		return "no arguments"
	}
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = t.String()
	}
	return "(" + strings.Join(s, ", ") + ")"
}
