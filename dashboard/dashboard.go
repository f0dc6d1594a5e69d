package dashboard

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/wire"
	"github.com/natsfleet/natsfleet/limits"
)

// Options configure a Dashboard. Zero values mean the defaults noted.
type Options struct {
	// Prefix is the fleet's subject prefix. Default broker.DefaultPrefix ("fleet").
	Prefix string
	// Bucket is the JetStream KV bucket of the shared limits. Default limits.DefaultBucket.
	Bucket string
	// Refresh is how often the dashboard asks the agents and workers, samples the limits and sends the page a new
	// snapshot. Default 1s.
	Refresh time.Duration
	// History is how far back each limit's utilisation chart reaches. Default 5 minutes.
	History time.Duration
	// Forget is how long a lost worker, an agent that stopped answering and a silent pool stay listed. Default 1
	// minute.
	Forget time.Duration
	// Logger receives the dashboard's warnings (a page it failed to serve); what it cannot read of the fleet shows on
	// the page instead. Default slog.Default().
	Logger *slog.Logger
}

// ErrInvalidOptions is returned by New for options it cannot use.
var ErrInvalidOptions = errors.New("dashboard: invalid options")

func (o Options) withDefaults() (Options, error) {
	if o.Refresh < 0 || o.History < 0 || o.Forget < 0 {
		return o, fmt.Errorf("%w: negative Refresh, History or Forget", ErrInvalidOptions)
	}
	o.Prefix = cmp.Or(o.Prefix, broker.DefaultPrefix)
	for tok := range strings.SplitSeq(o.Prefix, ".") {
		if !broker.ValidToken(tok) {
			return o, fmt.Errorf("%w: prefix %q", ErrInvalidOptions, o.Prefix)
		}
	}
	o.Bucket = cmp.Or(o.Bucket, limits.DefaultBucket)
	o.Refresh = cmp.Or(o.Refresh, time.Second)
	o.History = cmp.Or(o.History, 5*time.Minute)
	o.Forget = cmp.Or(o.Forget, time.Minute)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}

// A Dashboard watches a fleet over one NATS connection and serves its page (ServeHTTP). It reads only what the fleet
// already carries: heartbeats, pools' keepalives, agents' answers to discovery, workers' answers to stats requests,
// and the limits bucket, which it watches. It keeps nothing but its histories of the limits, and writes nothing.
type Dashboard struct {
	nc   *nats.Conn
	opts Options
	subj broker.Subjects
	js   jetstream.JetStream
	mux  *http.ServeMux

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	subs   []*nats.Subscription

	mu       sync.Mutex
	view     *view
	values   map[string][]byte // the limits bucket's keys, as its watch last showed them
	watching bool              // a watch of the bucket runs
	snap     Snapshot
	encoded  []byte        // snap as JSON
	fresh    chan struct{} // closed when a newer snapshot replaces snap
	closed   bool
}

// New starts watching the fleet on nc and takes a first snapshot, which takes a discovery round (a fraction of a
// second). Close stops it; nc stays open.
func New(nc *nats.Conn, opts Options) (*Dashboard, error) {
	if nc == nil {
		return nil, fmt.Errorf("%w: no NATS connection", ErrInvalidOptions)
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	d := &Dashboard{nc: nc, opts: o, subj: broker.Subjects{Prefix: o.Prefix}, js: js, view: newView(o),
		values: map[string][]byte{}, fresh: make(chan struct{})}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	for subject, handle := range map[string]nats.MsgHandler{
		d.subj.Heartbeats(""):     d.onBeat,
		d.subj.PoolKeepalive("*"): d.onKeepalive,
	} {
		sub, err := nc.Subscribe(subject, handle)
		if err != nil {
			d.stop()
			return nil, fmt.Errorf("dashboard: subscribe to %s: %w", subject, err)
		}
		d.subs = append(d.subs, sub)
	}
	if d.mux, err = d.routes(); err != nil {
		d.stop()
		return nil, err
	}
	d.refresh()
	d.wg.Go(d.loop)
	return d, nil
}

// Close stops watching, ends the page's event streams and waits for the dashboard's goroutines. It is idempotent.
func (d *Dashboard) Close() error {
	d.mu.Lock()
	done := d.closed
	d.closed = true
	d.mu.Unlock()
	if !done {
		d.stop()
	}
	return nil
}

func (d *Dashboard) stop() {
	for _, s := range d.subs {
		_ = s.Unsubscribe()
	}
	d.cancel()
	d.wg.Wait()
}

// Snapshot is the latest snapshot, taken at most Options.Refresh ago.
func (d *Dashboard) Snapshot() Snapshot {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.snap
}

// latest is the latest snapshot as JSON, and a channel closed when a newer one replaces it.
func (d *Dashboard) latest() ([]byte, <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.encoded, d.fresh
}

func (d *Dashboard) loop() {
	t := time.NewTicker(d.opts.Refresh)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
			d.refresh()
		}
	}
}

// refresh asks the agents and the workers, samples the limits and publishes a snapshot.
func (d *Dashboard) refresh() {
	d.mu.Lock()
	ids := d.view.polled(time.Now())
	d.mu.Unlock()
	var (
		agents []fleet.AgentInfo
		notes  []string // what this refresh could not read, for the page
		wg     sync.WaitGroup
	)
	if !d.nc.IsConnected() {
		notes = append(notes, "not connected to NATS: "+d.nc.Status().String())
	}
	wg.Go(func() {
		var err error
		if agents, err = client.DiscoverAgents(d.ctx, d.nc, d.opts.Prefix); err != nil && d.nc.IsConnected() {
			notes = append(notes, err.Error())
		}
	})
	stats := d.askStats(ids)
	wg.Wait()
	if note := d.watchLimits(); note != "" {
		notes = append(notes, note)
	}

	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.view.discovered(agents, now)
	for _, s := range stats {
		d.view.stats(s)
	}
	d.view.sample(d.values, now)
	d.view.prune(now)
	s := d.view.build(now)
	s.Server, s.Prefix, s.Bucket = d.nc.ConnectedUrlRedacted(), d.opts.Prefix, d.opts.Bucket
	if len(notes) > 0 {
		s.Problems = append(notes, s.Problems...)
	}
	b, err := json.Marshal(s)
	if err != nil { // a snapshot holds nothing JSON cannot write; keep the last one should that change
		d.opts.Logger.Warn("dashboard: encode snapshot", "err", err)
		return
	}
	d.snap, d.encoded = s, b
	close(d.fresh)
	d.fresh = make(chan struct{})
}

func (d *Dashboard) onBeat(m *nats.Msg) {
	var hb wire.Heartbeat
	if err := codec.Msgpack.Unmarshal(m.Data, &hb); err != nil {
		return
	}
	// {prefix}.hb.{kind}.{id}: a heartbeat counts for the worker and kind its subject names.
	if !strings.HasSuffix(m.Subject, ".hb."+hb.Kind+"."+hb.WorkerID) || !broker.ValidToken(hb.WorkerID) {
		return
	}
	d.mu.Lock()
	d.view.beat(hb, time.Now())
	d.mu.Unlock()
}

func (d *Dashboard) onKeepalive(m *nats.Msg) {
	// {prefix}.pool.{poolID}.alive
	rest := strings.TrimSuffix(m.Subject, ".alive")
	pool := rest[strings.LastIndexByte(rest, '.')+1:]
	d.mu.Lock()
	d.view.keepalive(pool, time.Now())
	d.mu.Unlock()
}

// askStats sends a stats request to each worker of ids and gathers the answers that come within half a refresh.
func (d *Dashboard) askStats(ids []string) []fleet.WorkerStats {
	if len(ids) == 0 {
		return nil
	}
	inbox := d.nc.NewInbox()
	sub, err := d.nc.SubscribeSync(inbox + ".*")
	if err != nil {
		return nil
	}
	defer sub.Unsubscribe()
	for i, id := range ids {
		m := nats.NewMsg(d.subj.Control(id))
		m.Reply = inbox + "." + strconv.Itoa(i)
		m.Header.Set(wire.HeaderControl, wire.ControlStats)
		if err := d.nc.PublishMsg(m); err != nil {
			return nil
		}
	}
	ctx, cancel := context.WithTimeout(d.ctx, d.opts.Refresh/2)
	defer cancel()
	var out []fleet.WorkerStats
	for answered := 0; answered < len(ids); answered++ {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			break
		}
		i, err := strconv.Atoi(m.Subject[len(inbox)+1:])
		var s fleet.WorkerStats
		if status, _ := wire.ReadReply(m); err != nil || i >= len(ids) || status != wire.StatusOK ||
			codec.Msgpack.Unmarshal(m.Data, &s) != nil || s.ID != ids[i] {
			continue
		}
		out = append(out, s)
	}
	return out
}

// watchLimits starts a watch of the limits bucket unless one runs; it returns a note for the page when the bucket
// cannot be watched (it does not exist until a shared set is made).
func (d *Dashboard) watchLimits() string {
	d.mu.Lock()
	watching := d.watching
	d.mu.Unlock()
	if watching {
		return ""
	}
	ctx, cancel := context.WithTimeout(d.ctx, d.opts.Refresh)
	defer cancel()
	kv, err := d.js.KeyValue(ctx, d.opts.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Sprintf("no shared limits: bucket %q does not exist yet", d.opts.Bucket)
	}
	var w jetstream.KeyWatcher
	if err == nil {
		w, err = kv.WatchAll(d.ctx)
	}
	if err != nil {
		return fmt.Sprintf("limits bucket %q: %v", d.opts.Bucket, err)
	}
	d.mu.Lock()
	d.watching = true
	clear(d.values) // the watch starts with every key's value
	d.mu.Unlock()
	d.wg.Go(func() { d.follow(w) })
	return ""
}

// follow keeps values up to date with the bucket's watch until it ends.
func (d *Dashboard) follow(w jetstream.KeyWatcher) {
	defer func() { _ = w.Stop() }()
	updates := w.Updates()
	for {
		select {
		case <-d.ctx.Done():
			return
		case e, ok := <-updates:
			if !ok {
				d.mu.Lock()
				d.watching = false // refresh watches again
				d.mu.Unlock()
				return
			}
			if e == nil {
				continue // the end of the initial values
			}
			d.mu.Lock()
			if e.Operation() == jetstream.KeyValuePut {
				d.values[e.Key()] = e.Value()
			} else {
				delete(d.values, e.Key())
			}
			d.mu.Unlock()
		}
	}
}
