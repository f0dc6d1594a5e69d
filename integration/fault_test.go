package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/balancer"
	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/actor"
	"github.com/natsfleet/natsfleet/internal/testutil"
	"github.com/natsfleet/natsfleet/internal/wire"
)

func TestSIGKILLWorkerMidCall(t *testing.T) {
	p := newPool(t, demo.SlowWorkerKind, client.Options{Mode: client.Process, MaxWorkers: 2, LoadBalancing: balancer.LeastActive})
	slow := client.Call[demo.Identity](p, "Process", time.Minute)
	var victim client.WorkerStats
	testutil.Eventually(t, 10*time.Second, func() error {
		for i := range 2 {
			if ws, err := p.WorkerStats(i); err == nil && ws.InFlight == 1 {
				victim = ws
				return nil
			}
		}
		return errors.New("slow call not running yet")
	})
	if victim.PID <= 0 || victim.PID == syscall.Getpid() {
		t.Fatalf("worker PID = %d, want a child process", victim.PID)
	}
	killed := time.Now()
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := slow.Result(ctx)
	if !errors.Is(err, client.ErrWorkerLost) || !strings.Contains(err.Error(), victim.ID) {
		t.Fatalf("in-flight call on a killed worker = %v, want ErrWorkerLost naming %s", err, victim.ID)
	}
	// Three heartbeat intervals (1 s each) bound detection; the exit of a child is seen sooner.
	if d := time.Since(killed); d > 3*time.Second {
		t.Fatalf("loss detected after %s, want within 3 heartbeat intervals", d)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		if n := p.Stats().TotalWorkers; n != 2 {
			return fmt.Errorf("%d workers, want a replacement to make 2", n)
		}
		return nil
	})
	ids := map[string]bool{}
	for range 4 {
		id := result(t, client.Call[demo.Identity](p, "Process", time.Millisecond))
		ids[id.ID] = true
	}
	if len(ids) != 2 || ids[victim.ID] {
		t.Fatalf("calls after the replacement ran on %v; want 2 live workers, not %s", ids, victim.ID)
	}
}

func TestServerRestart(t *testing.T) {
	store := t.TempDir()
	srv := testutil.StartServer(t, broker.EmbeddedOptions{StoreDir: store})
	url := srv.ClientURL()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(url, "nats://"))
	nc := testutil.Connect(t, url)
	p := newPool(t, demo.DataProcessorKind, client.Options{Mode: client.Process, MaxWorkers: 2, Conn: nc}, 3)
	if got := result(t, client.Call[int](p, "Process", 2)); got != 6 {
		t.Fatalf("before restart: %d", got)
	}
	srv.Shutdown()
	testutil.Eventually(t, 5*time.Second, func() error {
		if nc.IsConnected() {
			return errors.New("client still connected")
		}
		return nil
	})
	var portN int
	fmt.Sscan(port, &portN)
	testutil.StartServer(t, broker.EmbeddedOptions{StoreDir: store, Port: portN})
	testutil.Eventually(t, 10*time.Second, func() error {
		if !nc.IsConnected() {
			return errors.New("client not reconnected")
		}
		return nil
	})
	// Workers reconnect by themselves; calls succeed again (a worker that came back too late is replaced).
	testutil.Eventually(t, 20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for i := range 4 {
			v, err := client.Call[int](p, "Process", i).Result(ctx)
			if err != nil || v != 3*i {
				return fmt.Errorf("after restart Process(%d) = %d, %v", i, v, err)
			}
		}
		return nil
	})
	// Stop before the server's cleanup shuts it down.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Fatalf("Stop after restart: %v", err)
	}
}

func TestBadInputStraightToWorker(t *testing.T) {
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, srv.ClientURL())
	p := newPool(t, demo.DataProcessorKind, client.Options{Mode: client.Process, MaxWorkers: 1, Conn: nc}, 10)
	ws, err := p.WorkerStats(0)
	if err != nil {
		t.Fatal(err)
	}
	subject := broker.Subjects{}.Worker(ws.ID)
	request := func(method, contentType string, body []byte) (*nats.Msg, error) {
		msg := &nats.Msg{Subject: subject, Header: nats.Header{}, Data: body}
		if method != "" {
			msg.Header.Set(wire.HeaderMethod, method)
		}
		if contentType != "" {
			msg.Header.Set(wire.HeaderContentType, contentType)
		}
		return nc.RequestMsg(msg, 5*time.Second)
	}
	remoteErr := func(t *testing.T, reply *nats.Msg) error {
		t.Helper()
		if st := reply.Header.Get(wire.HeaderStatus); st != wire.StatusError {
			t.Fatalf("status %q, want error; body %q", st, reply.Data)
		}
		cd, err := codec.ForContentType(reply.Header.Get(wire.HeaderContentType))
		if err != nil {
			t.Fatal(err)
		}
		var e wire.Error
		if err := cd.Unmarshal(reply.Data, &e); err != nil {
			t.Fatal(err)
		}
		return actor.Registry.RemoteError(e)
	}
	tests := []struct {
		name, method, ct string
		body             []byte
		want             error
	}{
		{"malformed msgpack", "Process", "", []byte{0xc1, 0xff, 0x00}, fleet.ErrMalformed},
		{"wrong types", "Process", codec.ContentTypeJSON, []byte(`["forty-two"]`), fleet.ErrBadArguments},
		{"wrong count", "Process", codec.ContentTypeJSON, []byte(`[1, 2]`), fleet.ErrBadArguments},
		{"unknown method", "Explode", codec.ContentTypeJSON, []byte(`[]`), fleet.ErrUnknownMethod},
		{"no method header", "", codec.ContentTypeJSON, []byte(`[1]`), fleet.ErrMalformed},
		{"unsupported content type", "Process", "text/csv", []byte(`1`), fleet.ErrMalformed},
	}
	for _, tt := range tests {
		reply, err := request(tt.method, tt.ct, tt.body)
		if err != nil {
			t.Fatalf("%s: no reply: %v", tt.name, err)
		}
		if err := remoteErr(t, reply); !errors.Is(err, tt.want) {
			t.Errorf("%s: error %v, want %v", tt.name, err, tt.want)
		}
	}
	// A JSON call from a plain NATS client.
	reply, err := request("Process", codec.ContentTypeJSON, []byte(`[42]`))
	if err != nil {
		t.Fatal(err)
	}
	if string(reply.Data) != "420" || reply.Header.Get(wire.HeaderStatus) != wire.StatusOK {
		t.Fatalf("JSON call replied %q (%v), want 420", reply.Data, reply.Header)
	}
	// Oversized: a call above the server's maximum payload fails on the caller's side with a clear error; a result
	// above it becomes an error reply. The worker goes on serving.
	big := make([]byte, nc.MaxPayload()+1)
	if _, err := client.Call[[]byte](p, "Echo", big).Result(context.Background()); !errors.Is(err, fleet.ErrPayloadTooLarge) {
		t.Fatalf("oversized call = %v, want ErrPayloadTooLarge", err)
	}
	if _, err := client.Call[[]byte](p, "Blob", int(nc.MaxPayload())+10).Result(context.Background()); !errors.Is(err, fleet.ErrPayloadTooLarge) {
		t.Fatalf("oversized result = %v, want ErrPayloadTooLarge", err)
	}
	if got := result(t, client.Call[int](p, "Process", 4)); got != 40 {
		t.Fatalf("worker after bad input: Process(4) = %d", got)
	}
}
