package fleet

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/codec"
)

// The environment a process-mode parent gives its child: EnvChild marks the process as a worker child and EnvSpec
// holds its WorkerSpec (msgpack, standard base64). The broker's connection options travel alongside
// (broker.Options.Env).
const (
	EnvChild = "NATSFLEET_CHILD"
	EnvSpec  = "NATSFLEET_SPEC"
)

// childStopTimeout bounds how long a child lets its calls finish once told to go (signal, parent gone).
const childStopTimeout = 5 * time.Second

// ChildEnv returns the environment entries ("KEY=value") that make a process started with them serve spec as a
// process-mode child (see ServeIfChild).
func ChildEnv(spec WorkerSpec) ([]string, error) {
	b, err := codec.Msgpack.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("fleet: child env: %w", err)
	}
	return []string{EnvChild + "=1", EnvSpec + "=" + base64.StdEncoding.EncodeToString(b)}, nil
}

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
// its EnvSpec describes, and exits the process with status 0 when the worker is stopped by a ControlStop, when its
// standard input reaches end of file (the parent holds the other end of a pipe, so this means the parent is gone),
// or on SIGTERM or SIGINT, letting running calls finish for a few seconds first. It exits with status 1 and a
// message on standard error when it cannot start.
func ServeIfChild() {
	if os.Getenv(EnvChild) == "" {
		return
	}
	if err := runChild(os.Getenv(EnvSpec), os.Stdin); err != nil {
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
	b, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		return fmt.Errorf("fleet: %s: %w", EnvSpec, err)
	}
	var spec WorkerSpec
	if err := codec.Msgpack.Unmarshal(b, &spec); err != nil {
		return fmt.Errorf("fleet: %s: %w", EnvSpec, err)
	}
	nc, err := broker.Connect(broker.OptionsFromEnv())
	if err != nil {
		return err
	}
	defer nc.Close()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("worker", spec.ID)
	h, err := Serve(nc, spec, ServeOptions{Logger: logger})
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
