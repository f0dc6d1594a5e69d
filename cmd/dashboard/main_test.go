package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/dashboard"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The command serves the page once it prints its URL, and stops cleanly, with status 0, when its context ends,
// even with a page's event stream open.
func TestServes(t *testing.T) {
	srv := testutil.StartServer(t, broker.EmbeddedOptions{})
	a, err := fleet.StartAgent(testutil.Connect(t, srv.ClientURL()), fleet.AgentOptions{ID: "agent1", Capacity: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop(context.Background())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errs testutil.SyncBuffer
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"--nats", srv.ClientURL(), "--addr", "127.0.0.1:0", "--refresh", "200ms"}, &out, &errs)
	}()
	ready := regexp.MustCompile(`^dashboard: serving on (http://127\.0\.0\.1:\d+/) \(NATS nats://127\.0\.0\.1:\d+\)\n$`)
	var url string
	testutil.Eventually(t, 10*time.Second, func() error {
		if m := ready.FindStringSubmatch(out.String()); m != nil {
			url = m[1]
			return nil
		}
		return io.EOF
	})
	resp, err := http.Get(url + "snapshot.json")
	if err != nil {
		t.Fatal(err)
	}
	var s dashboard.Snapshot
	err = json.NewDecoder(resp.Body).Decode(&s)
	resp.Body.Close()
	if err != nil || len(s.Agents) != 1 || s.Agents[0].ID != "agent1" || s.Agents[0].Capacity != 2 {
		t.Fatalf("snapshot: %v, %+v; want agent1 with capacity 2", err, s.Agents)
	}
	events, err := http.Get(url + "events")
	if err != nil {
		t.Fatal(err)
	}
	defer events.Body.Close()

	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("exit status %d, want 0; stderr:\n%s", c, errs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the command did not stop")
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{"--refresh", "0s"}, {"extra"}, {"--no-such-flag"}} {
		var errs strings.Builder
		if c := run(context.Background(), args, io.Discard, &errs); c != 2 {
			t.Errorf("run %q: status %d, want 2", args, c)
		}
	}
	var out strings.Builder
	if c := run(context.Background(), []string{"-h"}, io.Discard, &out); c != 0 ||
		!strings.Contains(out.String(), "-addr") || !strings.Contains(out.String(), "-creds") {
		t.Errorf("-h: status %d, usage:\n%s", c, out.String())
	}
}
