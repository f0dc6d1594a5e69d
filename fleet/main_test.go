package fleet_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/natsfleet/natsfleet/codec"
	_ "github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/wire"
)

func TestMain(m *testing.M) {
	// A child started by the process-mode tests is this binary, re-executed: it serves and exits here.
	fleet.ServeIfChild()
	goleak.VerifyTestMain(m)
}

// Kit is a kind for what the demo kinds do not cover: results of a chosen size, a variadic constructor.
type Kit struct{ parts []string }

func NewKit(parts ...string) *Kit { return &Kit{parts: parts} }

// Repeat returns n bytes.
func (k *Kit) Repeat(n int) string { return strings.Repeat("x", n) }

// Parts returns the constructor's arguments.
func (k *Kit) Parts() []string { return k.parts }

// Nothing returns no value.
func (k *Kit) Nothing() error { return nil }

// Mark sleeps d, or until the call's context ends, and returns the call's ID: which calls ran is seen in the
// replies.
func (k *Kit) Mark(ctx context.Context, d time.Duration) (string, error) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
		return "", ctx.Err()
	}
	info, _ := fleet.CallInfo(ctx)
	return info.CallID, nil
}

// Block waits for the call's context to end.
func (k *Kit) Block(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

var _ = fleet.Register("Kit", NewKit)

// serve serves spec on nc and stops it when the test ends.
func serve(t testing.TB, nc *nats.Conn, spec wire.WorkerSpec, opts fleet.ServeOptions) *fleet.Hosted {
	t.Helper()
	h, err := fleet.Serve(nc, spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Stop(ctx); err != nil {
			t.Errorf("stop %s: %v", h.ID(), err)
		}
	})
	return h
}

// args encodes constructor or call arguments as msgpack.
func args(t testing.TB, a ...any) []byte {
	t.Helper()
	b, err := codec.Msgpack.AppendArgs(nil, a)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// callMsg builds a call message to a worker.
func callMsg(subject, method, contentType string, body []byte) *nats.Msg {
	m := nats.NewMsg(subject)
	if method != "" {
		m.Header.Set(wire.HeaderMethod, method)
	}
	if contentType != "" {
		m.Header.Set(wire.HeaderContentType, contentType)
	}
	m.Data = body
	return m
}

func request(t testing.TB, nc *nats.Conn, m *nats.Msg) *nats.Msg {
	t.Helper()
	r, err := nc.RequestMsg(m, 10*time.Second)
	if err != nil {
		t.Fatalf("request %s %s: %v", m.Subject, m.Header.Get(wire.HeaderMethod), err)
	}
	return r
}

// result decodes a reply: into out when its status is ok, as the error it carries otherwise.
func result(t testing.TB, r *nats.Msg, out any) error {
	t.Helper()
	c, err := codec.ForContentType(r.Header.Get(wire.HeaderContentType))
	if err != nil {
		t.Fatal(err)
	}
	return decodeReply(t, c, r.Header.Get(wire.HeaderStatus), r.Data, out)
}

// decodeReply decodes a reply's body, encoded with c, by its status: the result into out (nil skips it), or the error.
func decodeReply(t testing.TB, c codec.Codec, status string, body []byte, out any) error {
	t.Helper()
	switch status {
	case wire.StatusOK:
		if out != nil {
			if err := c.Unmarshal(body, out); err != nil {
				t.Fatalf("decode result %q: %v", body, err)
			}
		}
		return nil
	case wire.StatusError:
		var e wire.Error
		if err := c.Unmarshal(body, &e); err != nil {
			t.Fatalf("decode error %q: %v", body, err)
		}
		return fleet.DecodeError(e)
	default:
		t.Fatalf("reply status %q", status)
		return nil
	}
}

// process calls DataProcessor.Process(v) on a served worker and returns its result.
func process(t testing.TB, nc *nats.Conn, subject string, v int) int {
	t.Helper()
	var out int
	if err := result(t, request(t, nc, callMsg(subject, "Process", "", args(t, v))), &out); err != nil {
		t.Fatalf("Process(%d): %v", v, err)
	}
	return out
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
