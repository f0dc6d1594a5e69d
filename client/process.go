package client

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// The embedded server Process-mode pools use when Options.Conn is nil: started by the first such pool, shared by all,
// and shut down when the last one stops.
var shared struct {
	sync.Mutex
	refs int
	srv  *broker.Embedded
	nc   *nats.Conn
}

func acquireSharedServer() (*nats.Conn, string, func(), error) {
	shared.Lock()
	defer shared.Unlock()
	if shared.refs == 0 {
		srv, err := broker.StartEmbedded(broker.EmbeddedOptions{})
		if err != nil {
			return nil, "", nil, fmt.Errorf("client: start embedded NATS server: %w", err)
		}
		nc, err := srv.Connect()
		if err != nil {
			srv.Shutdown()
			return nil, "", nil, fmt.Errorf("client: connect to embedded NATS server: %w", err)
		}
		shared.srv, shared.nc = srv, nc
	}
	shared.refs++
	var once sync.Once
	release := func() {
		once.Do(func() {
			shared.Lock()
			defer shared.Unlock()
			shared.refs--
			if shared.refs == 0 {
				shared.nc.Close()
				shared.srv.Shutdown()
				shared.srv, shared.nc = nil, nil
			}
		})
	}
	return shared.nc, shared.srv.ClientURL(), release, nil
}

// childEnv is what a Process-mode child needs to reach NATS.
type childEnv struct{ url string }

// childProc is one worker child process.
type childProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	exited chan struct{}
	err    error
	output sync.WaitGroup
	tail   *lineTail
}

// spawner starts children from one goroutine locked to its OS thread while any Process pool runs: Linux delivers a
// child's parent-death signal when the *thread* that forked it exits, so forking from arbitrary goroutines would
// kill children whenever the runtime retires a thread. The goroutine ends with the last Process pool.
var spawner struct {
	sync.Mutex
	refs int
	reqs chan spawnReq
	done chan struct{}
}

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

func acquireSpawner() {
	spawner.Lock()
	defer spawner.Unlock()
	spawner.refs++
	if spawner.refs > 1 {
		return
	}
	reqs, done := make(chan spawnReq), make(chan struct{})
	spawner.reqs, spawner.done = reqs, done
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		for r := range reqs {
			r.done <- r.cmd.Start()
		}
	}()
}

func releaseSpawner() {
	spawner.Lock()
	defer spawner.Unlock()
	spawner.refs--
	if spawner.refs == 0 {
		close(spawner.reqs)
		<-spawner.done
	}
}

func startCmd(cmd *exec.Cmd) error {
	spawner.Lock()
	reqs := spawner.reqs
	spawner.Unlock()
	r := spawnReq{cmd: cmd, done: make(chan error, 1)}
	reqs <- r
	return <-r.done
}

func (t *remoteTransport) spawnChild(spec wire.WorkerSpec) (*childProc, error) {
	p := t.pool
	bin := p.opts.WorkerBinary
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("client: find this program to re-execute: %w", err)
		}
		bin = exe
	}
	env, err := wire.ChildEnv(spec)
	if err != nil {
		return nil, err
	}
	bo := broker.OptionsFromEnv()
	bo.URL = t.child.url
	cmd := exec.Command(bin)
	cmd.Env = append(append(os.Environ(), bo.Env()...), env...)
	if _, set := os.LookupEnv("GOMAXPROCS"); !set && p.opts.ChildMaxProcs > 0 {
		cmd.Env = append(cmd.Env, "GOMAXPROCS="+strconv.Itoa(p.opts.ChildMaxProcs))
	}
	// A child must not outlive its parent: it gets SIGKILL when the parent dies, and it also exits when its stdin
	// (a pipe only the parent holds) reaches end of file.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("client: child stdin: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("client: child stdout: %w", err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("client: child stderr: %w", err)
	}
	cp := &childProc{cmd: cmd, stdin: stdin, exited: make(chan struct{}), tail: &lineTail{}}
	if err := startCmd(cmd); err != nil {
		return nil, fmt.Errorf("client: start worker process %s: %w", bin, err)
	}
	log := p.opts.Logger.With("worker", spec.ID)
	cp.output.Add(2)
	go cp.pipe(stdout, func(l string) { log.Info(l) })
	go cp.pipe(stderr, func(l string) { cp.tail.add(l); log.Warn(l) })
	go func() {
		cp.output.Wait()
		cp.err = cmd.Wait()
		close(cp.exited)
		t.mu.Lock()
		w := t.workers[spec.ID]
		t.mu.Unlock()
		if w != nil {
			t.lose(w, "process exited: "+cp.exitErr().Error())
		}
	}()
	return cp, nil
}

func (cp *childProc) pipe(r io.Reader, emit func(string)) {
	defer cp.output.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		emit(sc.Text())
	}
}

func (cp *childProc) exitErr() error {
	select {
	case <-cp.exited:
	default:
		return errors.New("still running")
	}
	err := cp.err
	if err == nil {
		err = errors.New("exit status 0")
	}
	if t := cp.tail.String(); t != "" {
		return fmt.Errorf("%w; last output: %s", err, t)
	}
	return err
}

// stop waits for the child to exit after it was told to stop; it closes the child's stdin (which makes a child
// exit) and kills it if it is still there after timeout.
func (cp *childProc) stop(timeout time.Duration) error {
	_ = cp.stdin.Close()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-cp.exited:
		return nil
	case <-t.C:
	}
	cp.kill()
	<-cp.exited
	return fmt.Errorf("client: worker process %d did not exit within %s; killed", cp.cmd.Process.Pid, timeout)
}

func (cp *childProc) kill() {
	_ = cp.stdin.Close()
	_ = cp.cmd.Process.Kill()
}

// lineTail keeps a child's last lines of stderr, to explain why it died.
type lineTail struct {
	mu    sync.Mutex
	lines []string
}

func (t *lineTail) add(l string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, l)
	if len(t.lines) > 5 {
		t.lines = t.lines[1:]
	}
}

func (t *lineTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, " | ")
}
