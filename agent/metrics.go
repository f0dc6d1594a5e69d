package agent

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/natsfleet/natsfleet/fleet"
)

// callBuckets span what worker calls take, from an in-memory method (tens of µs with the queue) to long jobs (a
// minute), in factors of 4.
var callBuckets = prometheus.ExponentialBuckets(0.0001, 4, 10)

// metrics exports what the agent's workers do as Prometheus metrics: call counters and a latency histogram fed by
// every call's fleet.CallRecord, and gauges (workers, in-flight calls, limits, capacity) read from the agent when
// scraped.
type metrics struct {
	reg     *prometheus.Registry
	calls   *prometheus.CounterVec
	errors  *prometheus.CounterVec
	latency *prometheus.HistogramVec
	// bound holds the series of every registered kind's methods, made at start and read-only after, so a call finds
	// its counters without a lock or an allocation.
	bound map[methodKey]methodSeries
}

type methodKey struct{ kind, method string }

type methodSeries struct {
	calls, errors prometheus.Counter
	latency       prometheus.Observer
}

func newMetrics() *metrics {
	labels := []string{"kind", "method"}
	m := &metrics{
		reg: prometheus.NewRegistry(),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "natsfleet", Name: "calls_total",
			Help: "Calls the agent's workers answered, failed ones included."}, labels),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "natsfleet", Name: "call_errors_total",
			Help: "Calls the agent's workers answered with an error."}, labels),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "natsfleet",
			Name: "call_duration_seconds", Buckets: callBuckets,
			Help: "Time from a call's arrival at a worker to its reply, the wait behind earlier calls included."},
			labels),
		bound: make(map[methodKey]methodSeries),
	}
	for _, name := range fleet.Kinds() {
		k, err := fleet.Lookup(name)
		if err != nil {
			continue // Kinds lists only what Lookup finds
		}
		for _, meth := range k.Methods() {
			m.bound[methodKey{name, meth}] = m.series(name, meth)
		}
	}
	m.reg.MustRegister(m.calls, m.errors, m.latency, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) series(kind, method string) methodSeries {
	return methodSeries{calls: m.calls.WithLabelValues(kind, method), errors: m.errors.WithLabelValues(kind, method),
		latency: m.latency.WithLabelValues(kind, method)}
}

// observe is the agent's fleet.AgentOptions.OnCall. A call that named no method of its kind counts under method "".
func (m *metrics) observe(r fleet.CallRecord) {
	s, ok := m.bound[methodKey{r.Kind, r.Method}]
	if !ok {
		s = m.series(r.Kind, r.Method)
	}
	s.calls.Inc()
	if r.Err != nil {
		s.errors.Inc()
	}
	s.latency.Observe(r.Duration.Seconds())
}

// watch exports the agent's state, read at each scrape.
func (m *metrics) watch(a *fleet.Agent) { m.reg.MustRegister(agentCollector{a}) }

// serve serves the metrics on /metrics from ln until the server is shut down. Should the listener fail, the agent
// goes on without metrics.
func (m *metrics) serve(ln net.Listener, logger *slog.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Warn("worker: metrics server stopped", "err", err)
		}
	}()
	return srv
}

func shutdownMetrics(ctx context.Context, srv *http.Server) error {
	if err := srv.Shutdown(ctx); err != nil {
		return srv.Close()
	}
	return nil
}

var (
	descWorkers = prometheus.NewDesc("natsfleet_workers", "Workers the agent hosts, standing and spawned, by kind.",
		[]string{"kind"}, nil)
	descInFlight = prometheus.NewDesc("natsfleet_worker_in_flight", "Calls queued or running on a worker.",
		[]string{"kind", "worker"}, nil)
	descCapacity = prometheus.NewDesc("natsfleet_agent_capacity", "Workers the agent starts for pools at most.",
		[]string{"agent"}, nil)
	descFree = prometheus.NewDesc("natsfleet_agent_free", "Capacity the agent's spawned workers leave free.",
		[]string{"agent"}, nil)
	descLimitUtil = prometheus.NewDesc("natsfleet_limit_utilization",
		"Share of a shared limit in use (1 - available/capacity), as the agent's workers see it.",
		[]string{"set", "key"}, nil)
	descLimitCap = prometheus.NewDesc("natsfleet_limit_capacity", "Capacity of a shared limit.",
		[]string{"set", "key"}, nil)
	descLimitAvail = prometheus.NewDesc("natsfleet_limit_available", "What a request could take from a shared limit now.",
		[]string{"set", "key"}, nil)
)

// agentCollector reads an agent's workers and their limits at each scrape.
type agentCollector struct{ a *fleet.Agent }

func (c agentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descWorkers, descInFlight, descCapacity, descFree, descLimitUtil,
		descLimitCap, descLimitAvail} {
		ch <- d
	}
}

func (c agentCollector) Collect(ch chan<- prometheus.Metric) {
	info := c.a.Info()
	ch <- prometheus.MustNewConstMetric(descCapacity, prometheus.GaugeValue, float64(info.Capacity), info.ID)
	ch <- prometheus.MustNewConstMetric(descFree, prometheus.GaugeValue, float64(info.Free), info.ID)
	workers := map[string]int{}
	sets := map[string]bool{} // a pool's workers share one set: report it once
	for _, w := range c.a.Workers() {
		workers[w.Kind]++
		ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(w.InFlight), w.Kind, w.ID)
		if w.Limits == nil || sets[w.LimitSet] {
			continue
		}
		sets[w.LimitSet] = true
		for key, st := range w.Limits {
			ch <- prometheus.MustNewConstMetric(descLimitUtil, prometheus.GaugeValue, st.Utilization, w.LimitSet, key)
			ch <- prometheus.MustNewConstMetric(descLimitCap, prometheus.GaugeValue, st.Capacity, w.LimitSet, key)
			ch <- prometheus.MustNewConstMetric(descLimitAvail, prometheus.GaugeValue, st.Available, w.LimitSet, key)
		}
	}
	for kind, n := range workers {
		ch <- prometheus.MustNewConstMetric(descWorkers, prometheus.GaugeValue, float64(n), kind)
	}
}

// metricsURL is where a listener on ln serves the metrics, as a scraper on this machine reaches it.
func metricsURL(ln net.Listener) string {
	addr := ln.Addr().String()
	if host, port, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			addr = net.JoinHostPort("127.0.0.1", port) // every interface, this one included
		}
	}
	return "http://" + addr + "/metrics"
}
