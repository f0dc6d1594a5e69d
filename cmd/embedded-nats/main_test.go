package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// readyURL waits for a ready file and returns the URL in it.
func readyURL(t *testing.T, path string) string {
	t.Helper()
	var url string
	testutil.Eventually(t, 30*time.Second, func() error {
		b, err := os.ReadFile(path)
		url = strings.TrimSpace(string(b))
		return err
	})
	return url
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args  []string
		want  broker.EmbeddedOptions
		ready string
		err   string
	}{
		{args: nil, want: broker.EmbeddedOptions{Host: "127.0.0.1", Port: 4222}},
		{
			args: []string{"-addr", ":0", "-store", "/s", "-name", "n1", "-cluster", "c", "-cluster-addr", "127.0.0.1:0",
				"-routes", "nats-route://127.0.0.1:6222,nats-route://127.0.0.1:6223", "-ready-file", "/r", "-v"},
			want: broker.EmbeddedOptions{Host: "0.0.0.0", Port: 0, StoreDir: "/s", ServerName: "n1", ClusterName: "c",
				ClusterHost: "127.0.0.1", ClusterPort: -1, Routes: []string{"nats-route://127.0.0.1:6222", "nats-route://127.0.0.1:6223"}, Logger: true},
			ready: "/r",
		},
		{args: []string{"-cluster-addr", "10.0.0.1:6222"}, want: broker.EmbeddedOptions{Host: "127.0.0.1", Port: 4222, ClusterHost: "10.0.0.1", ClusterPort: 6222}},
		{args: []string{"-addr", "4222"}, err: "-addr: address 4222: missing port in address"},
		{args: []string{"-addr", "h:x"}, err: `-addr: bad port "x"`},
		{args: []string{"-cluster-addr", "h:99999"}, err: `-cluster-addr: bad port "99999"`},
		{args: []string{"extra"}, err: `unexpected arguments ["extra"]`},
		{args: []string{"-nope"}, err: "flag provided but not defined: -nope"},
	}
	for _, tc := range cases {
		got, ready, err := parseFlags(tc.args, io.Discard)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("parseFlags(%q) error = %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) || ready != tc.ready {
			t.Errorf("parseFlags(%q) = %+v, %q, %v; want %+v, %q", tc.args, got, ready, err, tc.want, tc.ready)
		}
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ready := filepath.Join(dir, "url")
	if err := os.WriteFile(ready, []byte("nats://stale:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "store")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testutil.SyncBuffer
	done := make(chan int)
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-store", store, "-ready-file", ready}, &stdout, &stderr)
	}()

	var url string
	testutil.Eventually(t, 30*time.Second, func() error {
		b, err := os.ReadFile(ready)
		if url = strings.TrimSpace(string(b)); err == nil && url == "nats://stale:1" {
			return errors.New("stale ready file")
		}
		return err
	})
	if !strings.HasPrefix(url, "nats://127.0.0.1:") {
		t.Fatalf("ready file holds %q", url)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if got, want := stdout.String(), "embedded-nats: listening on "+url+"\n"; got != want {
			return fmt.Errorf("stdout %q, want %q", got, want)
		}
		return nil
	})
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()

	cancel()
	select {
	case code := <-done:
		if code != 0 || stderr.String() != "" {
			t.Fatalf("run returned %d, stderr %q", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
	if _, err := os.Stat(filepath.Join(store, "jetstream")); err != nil {
		t.Fatalf("given store dir not used: %v", err)
	}
}

func TestRunErrors(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"-addr", "nope"}, 2, "embedded-nats: -addr: address nope: missing port in address\n"},
		{[]string{"-routes", "nats-route://127.0.0.1:6222", "-addr", "127.0.0.1:0"}, 1, "embedded-nats: broker: routes need a cluster port\n"},
		{[]string{"-addr", l.Addr().String(), "-store", t.TempDir()}, 1, "address already in use"},
	}
	for _, tc := range cases {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.msg) || stdout.Len() != 0 {
			t.Errorf("run(%q) = %d, stdout %q, stderr %q; want %d and %q", tc.args, code, stdout.String(), stderr.String(), tc.code, tc.msg)
		}
	}
}

// TestClusterProcesses runs the built command three times as a cluster on loopback.
func TestClusterProcesses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bin := filepath.Join(dir, "embedded-nats")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	ports := testutil.FreePorts(t, 3)
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	type node struct {
		cmd            *exec.Cmd
		stdout, stderr testutil.SyncBuffer
		ready          string
		exited         chan struct{} // closed once waitErr is set
		waitErr        error
	}
	nodes := make([]*node, 3)
	for i, p := range ports {
		n := &node{ready: filepath.Join(dir, fmt.Sprintf("n%d.url", i+1)), exited: make(chan struct{})}
		n.cmd = exec.Command(bin, "-addr", "127.0.0.1:0", "-store", filepath.Join(dir, fmt.Sprintf("store%d", i+1)),
			"-name", fmt.Sprintf("n%d", i+1), "-cluster", "c", "-cluster-addr", fmt.Sprintf("127.0.0.1:%d", p),
			"-routes", strings.Join(routes, ","), "-ready-file", n.ready)
		n.cmd.Stdout, n.cmd.Stderr = &n.stdout, &n.stderr
		if err := n.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			n.waitErr = n.cmd.Wait()
			close(n.exited)
		}()
		t.Cleanup(func() { // a no-op for a node the test already stopped
			n.cmd.Process.Kill()
			<-n.exited
		})
		nodes[i] = n
	}

	urls := make([]string, 3)
	for i, n := range nodes {
		urls[i] = readyURL(t, n.ready)
		if got, want := n.stdout.String(), "embedded-nats: listening on "+urls[i]+"\n"; got != want {
			t.Fatalf("n%d printed %q, want %q", i+1, got, want)
		}
	}

	nc1, err := nats.Connect(urls[0])
	if err != nil {
		t.Fatal(err)
	}
	defer nc1.Close()
	nc3, err := nats.Connect(urls[2])
	if err != nil {
		t.Fatal(err)
	}
	defer nc3.Close()
	sub, err := nc3.SubscribeSync("cross")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc3.Flush(); err != nil {
		t.Fatal(err)
	}
	// The routes form and interest spreads asynchronously: publish until node 3's subscriber gets a message.
	testutil.Eventually(t, 30*time.Second, func() error {
		if err := nc1.Publish("cross", []byte("hi")); err != nil {
			return err
		}
		m, err := sub.NextMsg(100 * time.Millisecond)
		if err != nil {
			return fmt.Errorf("nothing reached n3: %w", err)
		}
		if string(m.Data) != "hi" {
			t.Fatalf("n3 got %q", m.Data)
		}
		return nil
	})
	nc1.Close()
	nc3.Close()

	for i, n := range nodes {
		if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-n.exited:
			if n.waitErr != nil {
				t.Fatalf("n%d exited with %v, stderr:\n%s", i+1, n.waitErr, n.stderr.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("n%d still running 30s after SIGTERM", i+1)
		}
		if stderr := n.stderr.String(); stderr != "" {
			t.Fatalf("n%d wrote to stderr: %s", i+1, stderr)
		}
	}
}
