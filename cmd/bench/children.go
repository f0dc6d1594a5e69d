package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/broker"
)

// The bench binary re-executes itself for its own children (natsfleet's process-mode workers use fleet's
// environment instead): envChild names the child's role, envConfig holds its childConfig as JSON, and envProfile,
// when set, the file its CPU profile goes to.
const (
	envChild   = "NATSFLEET_BENCH_CHILD"
	envConfig  = "NATSFLEET_BENCH_CONFIG"
	envProfile = "NATSFLEET_BENCH_CPUPROFILE"
)

// Child roles.
const (
	roleServer = "server" // the NATS server with JetStream; says READY <client URL>; "restart <ms>" takes it down and back
	roleRaw    = "raw"    // a plain NATS responder answering every request with the same reply
	roleMicro  = "micro"  // a nats.go micro service with an echo and a work endpoint
	roleAgent  = "agent"  // a natsfleet agent offering capacity to fleet-mode pools
	roleLimits = "limits" // a KV limits client driven over stdin (see limits.go)
)

// childConfig is a child's job.
type childConfig struct {
	URL      string `json:"url"`
	Subject  string `json:"subject,omitempty"`  // raw, micro: where requests come
	Capacity int    `json:"capacity,omitempty"` // agent: workers offered
	// Goroutines and LeaseSize configure a limits child.
	Goroutines int     `json:"goroutines,omitempty"`
	LeaseSize  float64 `json:"lease_size,omitempty"`
	// Port and Store fix a server's port and JetStream store, so that it can restart in place; default a free port
	// and a temporary store.
	Port  int    `json:"port,omitempty"`
	Store string `json:"store,omitempty"`
	// Standing is how many standing BenchWorker workers an agent serves besides its capacity; default none.
	Standing int `json:"standing,omitempty"`
}

// child is a running child process. It prints READY when it serves, reads commands from stdin (limits), and
// exits when stdin reaches end of file, so that it never outlives the bench.
type child struct {
	role  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // stdout, closed at EOF
	ready string      // what followed READY
	done  chan struct{}
	err   error // the process's exit, after done
}

// startChild starts the bench binary in role and waits for its READY.
func (b *bench) startChild(role string, cfg childConfig) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envChild+"="+role, envConfig+"="+string(js))
	if b.opts.cpuProfile != "" {
		cmd.Env = append(cmd.Env, envProfile+"="+b.opts.cpuProfile+"."+role)
	}
	cmd.Stderr = os.Stderr
	c := &child{role: role, cmd: cmd, lines: make(chan string, 64), done: make(chan struct{})}
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s child: %w", role, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		c.err = cmd.Wait()
		close(c.done)
	}()
	if c.ready, err = c.expect("READY", 30*time.Second); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// startChildren starts n children of one role, stopping those started when one fails.
func (b *bench) startChildren(n int, role string, cfg childConfig) ([]*child, error) {
	var cs []*child
	for range n {
		c, err := b.startChild(role, cfg)
		if err != nil {
			stopChildren(cs)
			return nil, err
		}
		cs = append(cs, c)
	}
	return cs, nil
}

func stopChildren(cs []*child) {
	for _, c := range cs {
		c.stop()
	}
}

// send writes one command line to the child.
func (c *child) send(format string, args ...any) error {
	_, err := fmt.Fprintf(c.stdin, format+"\n", args...)
	return err
}

// expect waits up to d for the child's next line, which must start with prefix, and returns the rest of it.
func (c *child) expect(prefix string, d time.Duration) (string, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case l, ok := <-c.lines:
		if !ok {
			<-c.done
			return "", fmt.Errorf("%s child ended (%v) before saying %s", c.role, c.err, prefix)
		}
		rest, found := strings.CutPrefix(l, prefix)
		if !found {
			return "", fmt.Errorf("%s child said %q, want %s", c.role, l, prefix)
		}
		return strings.TrimSpace(rest), nil
	case <-t.C:
		return "", fmt.Errorf("%s child said nothing within %v, want %s", c.role, d, prefix)
	}
}

// stop closes the child's stdin, which makes it exit, and kills it if it is still there 10s later.
func (c *child) stop() {
	_ = c.stdin.Close()
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// runChild is main for a child: it serves its role until stdin ends and returns the exit code.
func runChild(role string) int {
	if err := childMain(role); err != nil {
		fmt.Fprintf(os.Stderr, "bench %s child: %v\n", role, err)
		return 1
	}
	return 0
}

func childMain(role string) error {
	var cfg childConfig
	if err := json.Unmarshal([]byte(os.Getenv(envConfig)), &cfg); err != nil {
		return fmt.Errorf("%s: %w", envConfig, err)
	}
	if path := os.Getenv(envProfile); path != "" {
		f, err := os.Create(path + "-" + strconv.Itoa(os.Getpid()))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	out := bufio.NewWriter(os.Stdout)
	say := func(format string, args ...any) error {
		fmt.Fprintf(out, format+"\n", args...)
		return out.Flush()
	}
	if role == roleServer {
		return serveServer(cfg, say)
	}
	nc, err := nats.Connect(cfg.URL, nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	switch role {
	case roleRaw:
		return serveRaw(nc, cfg, say)
	case roleMicro:
		return serveMicro(nc, cfg, say)
	case roleAgent:
		return serveAgent(nc, cfg, say)
	case roleLimits:
		return serveLimits(nc, cfg, say)
	}
	return errors.New("unknown role")
}

// serveServer runs an embedded NATS server with JetStream on cfg's port and store (by default a free loopback port
// and a temporary store). A "restart <ms>" line on stdin shuts it down, waits that long and starts it again in place,
// then says UP.
func serveServer(cfg childConfig, say func(string, ...any) error) error {
	opts := broker.EmbeddedOptions{Port: cfg.Port, StoreDir: cfg.Store}
	srv, err := broker.StartEmbedded(opts)
	if err != nil {
		return err
	}
	defer func() { srv.Shutdown() }()
	if err := say("READY %s", srv.ClientURL()); err != nil {
		return err
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		ms, ok := strings.CutPrefix(sc.Text(), "restart ")
		if !ok {
			return fmt.Errorf("unknown command %q", sc.Text())
		}
		down, err := strconv.Atoi(ms)
		if err != nil {
			return err
		}
		srv.Shutdown()
		time.Sleep(time.Duration(down) * time.Millisecond)
		if srv, err = broker.StartEmbedded(opts); err != nil {
			return err
		}
		if err := say("UP"); err != nil {
			return err
		}
	}
	return nil
}

// untilStdinEnds blocks until the parent closes the child's stdin or dies.
func untilStdinEnds() { _, _ = io.Copy(io.Discard, os.Stdin) }
