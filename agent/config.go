package agent

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/fleet"
)

// config is what the command line asks for.
type config struct {
	// broker is how to reach NATS; zero fields are broker's defaults (nats://127.0.0.1:4222, no credentials).
	broker broker.Options
	// agent configures the agent; zero fields are fleet's defaults.
	agent fleet.AgentOptions
	// serve lists the standing workers to start; none when empty.
	serve []standing
	// drain bounds how long calls may finish on shutdown; parse sets 30 s unless told otherwise, and refuses zero,
	// which would cancel every call at once.
	drain time.Duration
	// args are the raw --args, kept to check them against serve; empty when none were given.
	args argsFlag
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

// parse reads a command line. The flag package prints its usage and errors to stderr; the errors returned are
// printed after a "worker: " prefix, so they carry none of their own.
func parse(argv []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.broker.AddFlags(fs)
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
