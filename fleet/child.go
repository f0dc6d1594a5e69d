package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// childStopTimeout bounds how long a child lets its calls finish once told to go (signal, parent gone).
const childStopTimeout = 5 * time.Second

// ServeIfChild turns the process into a process-mode worker when it was started as one, and returns at once
// otherwise. A program that uses process mode calls it first in main (test binaries in TestMain), before it parses
// flags or does anything else:
//
//	func main() {
//		fleet.ServeIfChild()
//		...
//	}
//
// As a child, it connects to NATS with the options in its environment (broker.OptionsFromEnv), serves the worker
// its environment describes, and exits the process with status 0 when the worker is stopped by a wire.ControlStop, when its
// standard input reaches end of file (the parent holds the other end of a pipe, so this means the parent is gone),
// or on SIGTERM or SIGINT, letting running calls finish for a few seconds first. It exits with status 1 and a
// message on standard error when it cannot start.
func ServeIfChild() {
	if os.Getenv(wire.EnvChild) == "" {
		return
	}
	if err := runChild(os.Getenv(wire.EnvSpec), os.Stdin); err != nil {
		fmt.Fprintf(os.Stderr, "natsfleet worker child: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runChild(encoded string, stdin io.Reader) error {
	// Before the worker serves, so that a signal sent once it is seen serving cannot find Go's default (exit at once).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	spec, err := wire.ChildSpec(encoded)
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	nc, err := broker.Connect(broker.OptionsFromEnv())
	if err != nil {
		return err
	}
	defer nc.Close()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("worker", spec.ID)
	h, err := serve(nc, spec, serveOptions{Logger: logger})
	if err != nil {
		return err
	}

	parentGone := make(chan struct{})
	go func() {
		// Nothing is ever written to the pipe: a read returns only when the parent closes it or dies.
		_, _ = io.Copy(io.Discard, stdin)
		close(parentGone)
	}()

	select {
	case <-h.Done():
	case <-parentGone:
		logger.Info("fleet: parent gone, stopping")
	case s := <-sigs:
		logger.Info("fleet: stopping on signal", "signal", s.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), childStopTimeout)
	defer cancel()
	if err := h.Stop(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		logger.Warn("fleet: stop", "err", err)
	}
	// Replies and the stop acknowledgement are still in the connection's buffer.
	if err := nc.FlushWithContext(ctx); err != nil {
		logger.Warn("fleet: flush", "err", err)
	}
	return nil
}
