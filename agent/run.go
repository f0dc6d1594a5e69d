package agent

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
	"syscall"
	"time"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/fleet"
)

// Main is the main of a worker binary. Started as a process-mode child (client.Options.WorkerBinary), it serves
// that one worker (fleet.ServeIfChild); otherwise it runs an agent configured by os.Args[1:] until SIGINT or
// SIGTERM. Either way it exits the process: with Run's status after an agent ran.
func Main() {
	fleet.ServeIfChild()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Run runs an agent configured by args, a command line without the program's name, until ctx ends, then lets the
// calls its workers hold finish (for up to --drain). It returns the exit status: 0 after a clean stop (or -h),
// 1 when the agent cannot run or stop cleanly, 2 for bad usage. Once the agent serves, Run prints
//
//	worker: agent <id> serving on <url>
//
// to stdout (and "worker: metrics on <url>" with --metrics); usage, errors and logs go to stderr.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parse(args, stderr)
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
	a, err := fleet.StartAgent(nc, cfg.agent)
	if err != nil {
		fmt.Fprintf(stderr, "worker: %v\n", err)
		return 1
	}
	if mx != nil {
		mx.watch(a)
		srv := mx.serve(ln, logger)
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = shutdownMetrics(ctx, srv)
		}()
	}
	code := 0
	for _, s := range cfg.serve {
		if err := a.Serve(s.kind, s.n, s.args...); err != nil {
			fmt.Fprintf(stderr, "worker: %v\n", err)
			code = 1
			break
		}
	}
	if code == 0 {
		fmt.Fprintf(stdout, "worker: agent %s serving on %s\n", a.ID(), nc.ConnectedUrlRedacted())
		if ln != nil {
			fmt.Fprintf(stdout, "worker: metrics on %s\n", metricsURL(ln))
		}
		<-ctx.Done()
		logger.Info("worker: stopping", "agent", a.ID())
	}
	// The workers that did start are stopped as after a signal, so their calls finish and NATS hears them go.
	sctx, cancel := context.WithTimeout(context.Background(), cfg.drain)
	defer cancel()
	if err := a.Stop(sctx); err != nil {
		fmt.Fprintf(stderr, "worker: stop: %v\n", err)
		code = 1
	}
	if err := nc.FlushWithContext(sctx); err != nil {
		fmt.Fprintf(stderr, "worker: flush: %v\n", err)
		code = 1
	}
	return code
}
