package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/natsfleet/natsfleet/internal/wire"
)

// DefaultServiceVersion is the service version a worker reports to discovery when its kind sets none.
const DefaultServiceVersion = "1.0.0"

// Metadata keys of a worker's service identity and of its endpoints.
const (
	metaPool   = "pool"   // ID of the pool the worker was started for; "" for a standing worker
	metaAgent  = "agent"  // ID of the agent hosting the worker; "" when none
	metaIndex  = "index"  // the worker's index in its pool, in decimal
	metaParams = "params" // an endpoint's parameter types, as a JSON-like list: "[int, string]"
	metaResult = "result" // an endpoint's result type; absent when the method returns no value
)

var (
	// microName is what micro accepts as a service or endpoint name.
	microName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	// semVer is the expression semver.org suggests, which micro and the NATS CLI validate versions with.
	semVer = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)
)

// versions holds the versions kinds set; few kinds set one, so the Kind type does not carry a field for it.
var versions sync.Map // *Kind → string

// SetVersion sets the service version the kind's workers report to NATS service discovery, a SemVer string such as
// "2.1.0", and returns k so that it chains after Register:
//
//	var DataProcessorKind = fleet.Register("DataProcessor", NewDataProcessor).SetVersion("2.1.0")
//
// Like Register it is meant for package-level variables and panics on a version that is not SemVer. Workers served
// afterwards report it; a kind that sets none reports DefaultServiceVersion.
func (k *Kind) SetVersion(version string) *Kind {
	if !semVer.MatchString(version) {
		panic(fmt.Sprintf("fleet: kind %q: service version %q is not a SemVer version such as 1.0.0", k.name,
			version))
	}
	versions.Store(k, version)
	return k
}

// Version is the service version the kind's workers report: the one SetVersion set, or DefaultServiceVersion.
func (k *Kind) Version() string {
	if v, ok := versions.Load(k); ok {
		return v.(string)
	}
	return DefaultServiceVersion
}

// CallRecord describes one call a served worker answered, for serveOptions.OnCall.
type CallRecord struct {
	Kind     string // the worker's kind
	Method   string // the method the call named; "" when it named none of the kind's methods or could not be read
	WorkerID string
	// Duration is the time from the call's arrival at the worker to its reply, the queue wait included.
	Duration time.Duration
	Err      error // what the caller was answered with; nil on success
}

// methodStats are a served worker's counters for one method, as $SRV.STATS reports them.
type methodStats struct {
	Method    string
	Calls     int64  // replies to calls of the method, failed ones included
	Errors    int64  // replies that carried an error
	LastError string // the latest error's message; "" before the first
	// ProcessingTime is the total time from arrival to reply of the calls counted.
	ProcessingTime time.Duration
}

// methodCounters are one method's counters on one worker. Writers add calls before errors and readers load errors
// before calls, so a snapshot never shows more errors than calls.
type methodCounters struct {
	method               *method
	calls, errors, nanos atomic.Int64
	lastErr              atomic.Pointer[string]
}

// service is what a hosted worker keeps for discovery and call observation.
type service struct {
	started  time.Time // UTC, as micro reports it
	version  string
	listed   bool // the kind's name is a valid service name: the worker answers discovery
	onCall   func(CallRecord)
	counters []methodCounters            // in the kind's method order
	byMethod map[*method]*methodCounters // read-only after init: the reply path looks up without a lock
	subs     []*nats.Subscription
}

func (s *service) init(k *Kind, onCall func(CallRecord)) {
	s.started = time.Now().UTC()
	s.version = k.Version()
	s.listed = microName.MatchString(k.name)
	s.onCall = onCall
	names := k.Methods()
	s.counters = make([]methodCounters, len(names))
	s.byMethod = make(map[*method]*methodCounters, len(names))
	for i, n := range names {
		m, err := k.method(n)
		if err != nil {
			continue // Methods lists only what Method finds
		}
		s.counters[i].method = m
		s.byMethod[m] = &s.counters[i]
	}
}

// subscribeService starts answering the discovery subjects ($SRV.{verb}, $SRV.{verb}.{kind},
// $SRV.{verb}.{kind}.{id}).
func (h *hosted) subscribeService() error {
	if !h.svc.listed {
		h.log.Debug("fleet: kind name is not a NATS service name; worker not listed in service discovery",
			"kind", h.spec.Kind, "worker", h.spec.ID)
		return nil
	}
	for _, subj := range []string{
		micro.APIPrefix + ".*",
		micro.APIPrefix + ".*." + h.spec.Kind,
		micro.APIPrefix + ".*." + h.spec.Kind + "." + h.spec.ID,
	} {
		sub, err := h.nc.Subscribe(subj, h.onService)
		if err != nil {
			return err
		}
		h.svc.subs = append(h.svc.subs, sub)
	}
	return nil
}

func (h *hosted) unsubscribeService() {
	for _, s := range h.svc.subs {
		_ = s.Unsubscribe()
	}
}

// onService answers a discovery request with micro's JSON schema.
func (h *hosted) onService(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	verb, _, _ := strings.Cut(strings.TrimPrefix(m.Subject, micro.APIPrefix+"."), ".")
	var v any
	switch verb {
	case micro.PingVerb.String():
		v = micro.Ping{ServiceIdentity: h.serviceIdentity(), Type: micro.PingResponseType}
	case micro.InfoVerb.String():
		v = h.ServiceInfo()
	case micro.StatsVerb.String():
		v = h.ServiceStats()
	default:
		return // another verb is not ours to answer
	}
	b, err := json.Marshal(v)
	if err == nil {
		err = m.Respond(b)
	}
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		h.log.Warn("fleet: answer service discovery", "worker", h.spec.ID, "subject", m.Subject, "err", err)
	}
}

func (h *hosted) serviceIdentity() micro.ServiceIdentity {
	return micro.ServiceIdentity{Name: h.spec.Kind, ID: h.spec.ID, Version: h.svc.version,
		Metadata: map[string]string{metaPool: h.spec.Pool, metaAgent: h.agent, metaIndex: strconv.Itoa(h.spec.Index)}}
}

// ServiceInfo is the worker's answer to $SRV.INFO: its identity and one endpoint per method, each on the worker's
// call subject.
func (h *hosted) ServiceInfo() micro.Info {
	subject := h.subjects.Worker(h.spec.ID)
	eps := make([]micro.EndpointInfo, 0, len(h.svc.counters))
	for i := range h.svc.counters {
		m := h.svc.counters[i].method
		if m == nil || !microName.MatchString(m.Name()) {
			continue
		}
		meta := map[string]string{wire.HeaderMethod: m.Name(), metaParams: "[" + typeList(m.Params()) + "]"}
		if r := m.Result(); r != nil {
			meta[metaResult] = r.String()
		}
		eps = append(eps, micro.EndpointInfo{Name: m.Name(), Subject: subject, Metadata: meta})
	}
	return micro.Info{ServiceIdentity: h.serviceIdentity(), Type: micro.InfoResponseType,
		Description: fmt.Sprintf("natsfleet %s worker (%s)", h.spec.Kind, h.kind.Type()), Endpoints: eps}
}

// ServiceStats is the worker's answer to $SRV.STATS: the counters of every method.
func (h *hosted) ServiceStats() micro.Stats {
	subject := h.subjects.Worker(h.spec.ID)
	ms := h.methodCounts()
	eps := make([]*micro.EndpointStats, 0, len(ms))
	for _, s := range ms {
		if !microName.MatchString(s.Method) {
			continue
		}
		es := &micro.EndpointStats{Name: s.Method, Subject: subject, NumRequests: int(s.Calls),
			NumErrors: int(s.Errors), LastError: s.LastError, ProcessingTime: s.ProcessingTime}
		if s.Calls > 0 {
			es.AverageProcessingTime = s.ProcessingTime / time.Duration(s.Calls)
		}
		eps = append(eps, es)
	}
	return micro.Stats{ServiceIdentity: h.serviceIdentity(), Type: micro.StatsResponseType, Started: h.svc.started,
		Endpoints: eps}
}

// methodCounts returns the worker's counters for each of its kind's methods, in the kind's method order.
func (h *hosted) methodCounts() []methodStats {
	out := make([]methodStats, 0, len(h.svc.counters))
	for i := range h.svc.counters {
		c := &h.svc.counters[i]
		if c.method == nil {
			continue
		}
		s := methodStats{Method: c.method.Name(), Errors: c.errors.Load()}
		s.Calls = c.calls.Load()
		s.ProcessingTime = time.Duration(c.nanos.Load())
		if e := c.lastErr.Load(); e != nil {
			s.LastError = *e
		}
		out = append(out, s)
	}
	return out
}

// record counts a call answered d after it arrived; m is nil when the call named no method of the kind. It runs
// before the reply is published, so a caller that has its reply sees the call counted.
func (h *hosted) record(m *method, d time.Duration, err error) {
	var name string
	if m != nil {
		name = m.Name()
		if c := h.svc.byMethod[m]; c != nil {
			c.calls.Add(1)
			if err != nil {
				c.errors.Add(1)
				msg := err.Error()
				c.lastErr.Store(&msg)
			}
			c.nanos.Add(int64(d))
		}
	}
	if h.svc.onCall != nil {
		h.svc.onCall(CallRecord{Kind: h.spec.Kind, Method: name, WorkerID: h.spec.ID, Duration: d, Err: err})
	}
}
