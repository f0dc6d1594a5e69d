package agent

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/testutil"
	"github.com/natsfleet/natsfleet/internal/wire"
	"github.com/natsfleet/natsfleet/limits"
)

var metricsLine = regexp.MustCompile(`(?m)^worker: metrics on (http://127\.0\.0\.1:\d+/metrics)$`)

// send calls method on worker and returns the reply, whatever its status.
func send(t *testing.T, nc *nats.Conn, worker, method, contentType string, body []byte) *nats.Msg {
	t.Helper()
	m := nats.NewMsg(subjects.Worker(worker))
	m.Header.Set(wire.HeaderMethod, method)
	if contentType != "" {
		m.Header.Set(wire.HeaderContentType, contentType)
	}
	m.Data = body
	r, err := nc.RequestMsg(m, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// scrape fetches and parses the metrics at url.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// sample finds the series of family name with exactly the given labels; nil when there is none.
func sample(fams map[string]*dto.MetricFamily, name string, labels ...string) *dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		for _, l := range m.GetLabel() {
			if v, ok := want[l.GetName()]; !ok || v != l.GetValue() {
				continue next
			}
		}
		return m
	}
	return nil
}

// value is the counter's or gauge's value of a series, NaN when it is missing.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	m := sample(fams, name, labels...)
	switch {
	case m == nil:
		return math.NaN()
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	}
	return math.NaN()
}

func TestRunMetrics(t *testing.T) {
	t.Parallel()
	s := testutil.StartServer(t, broker.EmbeddedOptions{})
	nc := testutil.Connect(t, s.ClientURL())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout, stderr := &testutil.SyncBuffer{}, &testutil.SyncBuffer{}
	exit := make(chan int, 1)
	go func() {
		exit <- Run(ctx, []string{"--nats", s.ClientURL(), "--id", "m1", "--capacity", "2", "--serve",
			"DataProcessor=2,RiskyWorker=1", "--args", "DataProcessor=[10]", "--metrics", "127.0.0.1:0"}, stdout,
			stderr)
	}()
	testutil.Eventually(t, 10*time.Second, func() error {
		if !metricsLine.MatchString(stdout.String()) {
			return fmt.Errorf("no metrics line in stdout %q; stderr:\n%s", stdout, stderr)
		}
		return nil
	})
	url := metricsLine.FindStringSubmatch(stdout.String())[1]

	var dp []string
	for _, hb := range gather[wire.Heartbeat](t, nc, subjects.KindDiscover("DataProcessor"), 2) {
		dp = append(dp, hb.WorkerID)
	}
	risky := gather[wire.Heartbeat](t, nc, subjects.KindDiscover("RiskyWorker"), 1)[0].WorkerID

	// Two pool workers through the agent's spawn subject: one with a shared token limit, one to hold a call.
	ls, err := limits.MarshalLimits([]limits.Limit{limits.RateLimit{Key: "tokens", Window: time.Hour, Capacity: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	spawn := func(spec wire.WorkerSpec) string {
		t.Helper()
		m := nats.NewMsg(subjects.Spawn("m1"))
		var err error
		if m.Data, err = codec.Msgpack.Marshal(spec); err != nil {
			t.Fatal(err)
		}
		r, err := nc.RequestMsg(m, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var rep wire.SpawnReply
		if err := codec.Msgpack.Unmarshal(r.Data, &rep); err != nil || rep.Error != "" {
			t.Fatalf("spawn %s: %+v, %v", spec.Kind, rep, err)
		}
		return rep.WorkerID
	}
	api := spawn(wire.WorkerSpec{Kind: "APIWorker", Pool: "pool1", Args: mustArgs(t, "key"), Limits: ls,
		LimitSet: "api"})
	slow := spawn(wire.WorkerSpec{Kind: "SlowWorker", Pool: "pool2"})

	const good, bad = 5, 2
	for i := range good {
		call(t, nc, dp[0], "Process", mustArgs(t, i))
	}
	for range bad {
		if r := send(t, nc, dp[1], "Process", codec.ContentTypeJSON, []byte(`["x"]`)); r.Header.Get(
			wire.HeaderStatus) != wire.StatusError {
			t.Fatalf("Process(\"x\") status %q", r.Header.Get(wire.HeaderStatus))
		}
	}
	send(t, nc, dp[0], "Nope", "", nil)
	call(t, nc, risky, "RiskyOperation", mustArgs(t, 1))
	send(t, nc, risky, "RiskyOperation", "", mustArgs(t, -1))
	// CallAPI acquires 100 tokens; a sliding window refunds none of them when it reports using 12.
	call(t, nc, api, "CallAPI", mustArgs(t, "hi"))

	// A call held in flight on the slow worker while scraping.
	held := nats.NewMsg(subjects.Worker(slow))
	held.Header.Set(wire.HeaderMethod, "Process")
	held.Header.Set(wire.HeaderCallID, "held")
	held.Data = mustArgs(t, time.Minute)
	heldReply, err := nc.SubscribeSync(nc.NewRespInbox())
	if err != nil {
		t.Fatal(err)
	}
	defer heldReply.Unsubscribe()
	held.Reply = heldReply.Subject
	if err := nc.PublishMsg(held); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if v := value(scrape(t, url), "natsfleet_worker_in_flight", "kind", "SlowWorker", "worker", slow); v != 1 {
			return fmt.Errorf("held call: in flight %v, want 1", v)
		}
		return nil
	})

	fams := scrape(t, url)
	counters := []struct {
		kind, method  string
		calls, errors float64
	}{
		{"DataProcessor", "Process", good + bad, bad},
		{"DataProcessor", "", 1, 1}, // the call naming no method
		{"DataProcessor", "WhoAmI", 0, 0},
		{"RiskyWorker", "RiskyOperation", 2, 1},
		{"APIWorker", "CallAPI", 1, 0},
		{"Storer", "Store", 0, 0}, // registered, hosted by no worker: its series exist from the start
	}
	for _, c := range counters {
		if got := value(fams, "natsfleet_calls_total", "kind", c.kind, "method", c.method); got != c.calls {
			t.Errorf("calls_total{%s,%q} = %v, want %v", c.kind, c.method, got, c.calls)
		}
		if got := value(fams, "natsfleet_call_errors_total", "kind", c.kind, "method", c.method); got != c.errors {
			t.Errorf("call_errors_total{%s,%q} = %v, want %v", c.kind, c.method, got, c.errors)
		}
	}
	h := sample(fams, "natsfleet_call_duration_seconds", "kind", "DataProcessor", "method", "Process").GetHistogram()
	if h.GetSampleCount() != good+bad || h.GetSampleSum() <= 0 || h.GetSampleSum() > 10 ||
		len(h.GetBucket()) != len(callBuckets)+1 { // and +Inf
		t.Errorf("Process latency histogram: count %d, sum %v, %d buckets", h.GetSampleCount(), h.GetSampleSum(),
			len(h.GetBucket()))
	}

	gauges := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"natsfleet_workers", []string{"kind", "DataProcessor"}, 2},
		{"natsfleet_workers", []string{"kind", "RiskyWorker"}, 1},
		{"natsfleet_workers", []string{"kind", "APIWorker"}, 1},
		{"natsfleet_workers", []string{"kind", "SlowWorker"}, 1},
		{"natsfleet_worker_in_flight", []string{"kind", "SlowWorker", "worker", slow}, 1},
		{"natsfleet_worker_in_flight", []string{"kind", "DataProcessor", "worker", dp[0]}, 0},
		{"natsfleet_agent_capacity", []string{"agent", "m1"}, 2},
		{"natsfleet_agent_free", []string{"agent", "m1"}, 0},
		{"natsfleet_limit_capacity", []string{"set", "api", "key", "tokens"}, 1000},
		{"natsfleet_limit_available", []string{"set", "api", "key", "tokens"}, 900},
		{"natsfleet_limit_utilization", []string{"set", "api", "key", "tokens"}, 0.1},
	}
	for _, g := range gauges {
		if got := value(fams, g.name, g.labels...); math.Abs(got-g.want) > 1e-9 {
			t.Errorf("%s%v = %v, want %v", g.name, g.labels, got, g.want)
		}
	}
	if fams["go_goroutines"] == nil || fams["process_start_time_seconds"] == nil {
		t.Error("no Go runtime or process metrics")
	}

	// Let the held call go, stop, and the metrics endpoint goes with the agent.
	cm := nats.NewMsg(subjects.Control(slow))
	cm.Header.Set(wire.HeaderControl, wire.ControlCancel)
	cm.Header.Set(wire.HeaderCallID, "held")
	if err := nc.PublishMsg(cm); err != nil {
		t.Fatal(err)
	}
	if r, err := heldReply.NextMsg(5 * time.Second); err != nil || r.Header.Get(wire.HeaderStatus) != wire.StatusError {
		t.Fatalf("held call after cancel: %v, %v", r, err)
	}
	cancel()
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit code %d; stderr:\n%s", code, stderr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if resp, err := http.Get(url); err == nil {
		resp.Body.Close()
		t.Errorf("metrics still served after exit: %s", resp.Status)
	}
}

func TestRunMetricsBadAddress(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = taken.Close() })
	for _, addr := range []string{taken.Addr().String(), "no-port", "127.0.0.1:99999"} {
		t.Run(addr, func(t *testing.T) {
			t.Parallel()
			stdout, stderr := &testutil.SyncBuffer{}, &testutil.SyncBuffer{}
			// The listener comes before the connection: no server is needed to fail.
			if code := Run(context.Background(), []string{"--nats", "nats://127.0.0.1:1", "--metrics", addr}, stdout,
				stderr); code != 1 {
				t.Errorf("exit code %d, want 1; stderr:\n%s", code, stderr)
			}
			if !strings.Contains(stderr.String(), "worker: --metrics: listen tcp") {
				t.Errorf("stderr %q", stderr)
			}
		})
	}
}

// BenchmarkObserve is what metrics add to every call: a map lookup and three atomic updates, no allocation.
func BenchmarkObserve(b *testing.B) {
	m := newMetrics()
	rs := []fleet.CallRecord{
		{Kind: "DataProcessor", Method: "Process", WorkerID: "w1", Duration: 150 * time.Microsecond},
		{Kind: "RiskyWorker", Method: "RiskyOperation", WorkerID: "w2", Duration: 2 * time.Millisecond,
			Err: errors.New("demo: negative value not allowed")},
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m.observe(rs[i&1])
		i++
	}
}
