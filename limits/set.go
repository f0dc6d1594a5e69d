package limits

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Request names the amount to take from each limit. CallLimits and
// ResourceLimits not named are taken with 1; RateLimits only when named. Keys
// the set does not know are ignored (and logged once per key per set).
type Request map[string]float64

// Usage reports the amount actually used per key, for Acquisition.Update.
type Usage map[string]float64

// Provider is what workers acquire limits from: a *Set, a *Pool of sets, or
// Noop.
type Provider interface {
	// Acquire takes every requested amount at once, all or nothing, waiting
	// until all fit or ctx ends (then the error wraps ctx.Err()). A request
	// above a limit's capacity fails at once with an *ExceedsCapacityError.
	Acquire(ctx context.Context, req Request) (*Acquisition, error)
	// TryAcquire is Acquire without waiting for capacity: it fails with an error
	// wrapping ErrWouldWait when the request does not fit now. (A KV-backed set
	// still makes its network round trip.)
	TryAcquire(ctx context.Context, req Request) (*Acquisition, error)
	// AcquireIn is Acquire in one partition of the per-partition limits, a
	// tenant or customer ID for example: each partition has its own budget.
	// On a set without per-partition limits the partition is ignored (with
	// one warning per set).
	AcquireIn(ctx context.Context, partition string, req Request) (*Acquisition, error)
	// TryAcquireIn is TryAcquire in one partition.
	TryAcquireIn(ctx context.Context, partition string, req Request) (*Acquisition, error)
	// Stats reports every limit by key. For a Pool, see Pool.Stats.
	Stats() map[string]Stats
	// ForWorker returns the provider worker number index should use: a Set
	// returns itself, a Pool a view whose round robin starts at index.
	ForWorker(index int) Provider
}

// KVMode chooses how a KV-backed set admits.
type KVMode uint8

const (
	// Exact writes every admission to the shared state: the acquisitions of a
	// set waiting at once in a process share one compare-and-set, taken in
	// arrival order (see the package doc, Coalescing).
	Exact KVMode = iota
	// Lease takes a batch of units per limit from the shared state into a local
	// reservoir, serves admissions from it without a round trip, and gives the
	// unused rest back when the lease ends. Admissions/s rise far above the CAS
	// rate; the fleet-wide total still never exceeds capacity. Costs: a process
	// may hold units another process waits for (up to LeaseTTL), and leased units
	// are recorded as used at the end of the lease (see SetOptions.LeaseTTL).
	// Requests that take a ResourceLimit still make one CAS each (the slots
	// are taken exactly), together with a batch for their rate limits.
	Lease
)

func (m KVMode) String() string {
	switch m {
	case Exact:
		return "exact"
	case Lease:
		return "lease"
	}
	return fmt.Sprintf("KVMode(%d)", uint8(m))
}

// DefaultBucket is the KV bucket shared sets live in unless SetOptions.Bucket
// names another.
const DefaultBucket = "natsfleet_limits"

// SetOptions configures a Set. The zero value is an in-memory set.
type SetOptions struct {
	// Name, with Conn, makes the set shared: its state lives in one key of a
	// JetStream KV bucket, and every set of every process naming it enforces the
	// same limits together. They must be given the same limits (NewSet fails
	// otherwise). Default "": an in-memory set, private to this process.
	Name string
	// Conn is the NATS connection of a shared set; required with Name.
	Conn *nats.Conn
	// Bucket is the KV bucket; created with history 1 if missing.
	// Default DefaultBucket ("natsfleet_limits").
	Bucket string
	// Mode of a shared set. Default Exact.
	Mode KVMode
	// LeaseSize is how many units Lease mode takes per batch, for every rate
	// and call limit of the set (capped at the limit's capacity). A batch is
	// never smaller than the request that triggers it. Default: per limit,
	// max(1, capacity/20), whole for the whole-unit algorithms.
	LeaseSize float64
	// LeaseTTL is how long Lease mode may use a batch; the unused rest goes back
	// to the shared state then. Window algorithms record a leased batch as used
	// at the end of its lease, which is what keeps the fleet-wide count exact; so
	// a longer TTL delays when leased units leave the window. Default 200ms.
	LeaseTTL time.Duration
	// ResourceLeaseTTL is how long a shared set's ResourceLimit slots stay held
	// without renewal. A keepalive renews them every ResourceLeaseTTL/4 while
	// held, so a live holder keeps them however long it works; a process that
	// dies gives them back after at most ResourceLeaseTTL+MaxSkew. Default 10s.
	ResourceLeaseTTL time.Duration
	// MaxSkew is the bound assumed on the difference between any two processes'
	// clocks. Windowed admissions are recorded MaxSkew late and resource leases
	// judged expired MaxSkew late, so skew up to MaxSkew never over-admits; it
	// costs up to MaxSkew of extra window. Default 100ms.
	MaxSkew time.Duration
	// Clock tells the time. Default time.Now. Tests inject skewed or fixed
	// clocks; waits still sleep in real time.
	Clock func() time.Time
	// Logger receives warnings (an unknown key, once per key per set) and
	// errors of background work. Default slog.Default().
	Logger *slog.Logger
	// Holder identifies this set in the leases it holds in a shared set. It
	// must be unique among the sets sharing a name: a set trims its entry to
	// what it holds itself. Default: generated, hostname-pid-nuid.
	Holder string
	// Replicas is how many servers keep the KV bucket when NewSet creates it
	// (1 to 5). Default 0: 3 when the server belongs to a JetStream cluster
	// that can place 3 replicas, else 1. A bucket that exists already is used
	// as it is, with one warning per process when its replicas or history
	// differ from what NewSet would have made.
	Replicas int
}

// Defaults of SetOptions.
const (
	defaultLeaseTTL         = 200 * time.Millisecond
	defaultResourceLeaseTTL = 10 * time.Second
	defaultMaxSkew          = 100 * time.Millisecond
	// maxLimits per set: an acquisition tracks its limits in 64-bit masks.
	maxLimits = 64
	// inlineLimits: acquisitions of sets this small allocate once.
	inlineLimits = 4
	// maxReplicas is JetStream's bound on a stream's replicas.
	maxReplicas = 5
)

// MaxPartitionLen bounds a partition name, in bytes.
const MaxPartitionLen = 256

// Set enforces a group of limits together: each acquisition takes from all of
// them at once or from none. Safe for concurrent use.
type Set struct {
	opts        SetOptions // defaults applied
	defs        []limitDef // sorted by key: the order of the shared state
	index       map[string]int
	params      []rateParams // by def index; zero for resources
	partitioned bool         // every limit is per partition
	be          backend
	closed      atomic.Bool
	warned      sync.Map // warning kind + key -> struct{}
}

var (
	_ Provider = (*Set)(nil)
	_ Provider = (*Pool)(nil)
)

// backend holds a set's state: in memory or in a KV bucket.
type backend interface {
	// acquire takes a's amounts, all or nothing, waiting when block.
	acquire(ctx context.Context, a *Acquisition, block bool) error
	// release returns a's resources and refunds a.refund(i) where it applies.
	release(a *Acquisition) error
	// stats reports a partition ("" in an unpartitioned set), or for "" in a
	// partitioned set a fresh partition and how many partitions have state.
	stats(part string) map[string]Stats
	close() error
}

// NewSet builds a set over ls. With opts.Name and opts.Conn the set's state is
// shared through JetStream KV (the bucket is created if missing, the key
// initialised or checked against ls); otherwise it lives in memory. Invalid
// limits or options give an error wrapping ErrInvalidLimit. A set with no
// limits admits everything at once.
func NewSet(opts SetOptions, ls ...Limit) (*Set, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	if len(ls) > maxLimits {
		return nil, invalidf("a set holds at most %d limits, got %d", maxLimits, len(ls))
	}
	s := &Set{opts: opts, index: make(map[string]int, len(ls))}
	for _, l := range ls {
		if l == nil {
			return nil, invalidf("nil limit")
		}
		d, err := l.def()
		if err != nil {
			return nil, err
		}
		s.defs = append(s.defs, d)
	}
	sort.Slice(s.defs, func(i, j int) bool { return s.defs[i].key < s.defs[j].key })
	if err := s.checkPartitioning(); err != nil {
		return nil, err
	}
	margin := time.Duration(0)
	if opts.Name != "" {
		margin = opts.MaxSkew
	}
	for i, d := range s.defs {
		if i > 0 && s.defs[i-1].key == d.key {
			return nil, invalidf("duplicate limit key %q", d.key)
		}
		s.index[d.key] = i
		var p rateParams
		if d.kind != kindResource {
			p = newRateParams(d, margin)
		}
		s.params = append(s.params, p)
	}
	if opts.Name == "" {
		s.be = newMemBackend(s)
		return s, nil
	}
	be, err := newKVBackend(s)
	if err != nil {
		return nil, err
	}
	s.be = be
	return s, nil
}

func (o *SetOptions) normalize() error {
	switch {
	case o.Name != "" && o.Conn == nil:
		return invalidf("shared set %q needs a connection (SetOptions.Conn)", o.Name)
	case o.Name == "" && o.Conn != nil:
		return invalidf("a connection without SetOptions.Name: name the shared set")
	case o.Name == "" && o.Mode != Exact:
		return invalidf("mode %v needs a shared set (SetOptions.Name and Conn)", o.Mode)
	case o.Mode > Lease:
		return invalidf("unknown mode %v", o.Mode)
	case o.LeaseSize < 0 || math.IsNaN(o.LeaseSize) || math.IsInf(o.LeaseSize, 0):
		return invalidf("lease size must be finite and >= 0, got %g", o.LeaseSize)
	case o.LeaseTTL < 0 || o.ResourceLeaseTTL < 0 || o.MaxSkew < 0:
		return invalidf("durations must be >= 0")
	case o.Replicas < 0 || o.Replicas > maxReplicas:
		return invalidf("replicas must be 0 (the default) to %d, got %d", maxReplicas, o.Replicas)
	case o.Name == "" && o.Replicas != 0:
		return invalidf("replicas need a shared set (SetOptions.Name and Conn)")
	}
	if o.Name != "" && !validKey(o.Name) {
		return invalidf("set name %q is not a valid KV key (letters, digits, '-', '_', '=', '/', '.')", o.Name)
	}
	if strings.Contains(o.Name, partitionSep) {
		return invalidf("set name %q contains %q, which separates a set's name from its partitions in KV keys", o.Name, partitionSep)
	}
	if o.Bucket == "" {
		o.Bucket = DefaultBucket
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = defaultLeaseTTL
	}
	if o.ResourceLeaseTTL == 0 {
		o.ResourceLeaseTTL = defaultResourceLeaseTTL
	}
	if o.MaxSkew == 0 {
		o.MaxSkew = defaultMaxSkew
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

func validKey(k string) bool {
	if k == "" || k[0] == '.' || k[len(k)-1] == '.' {
		return false
	}
	for _, r := range k {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == '-', r == '_', r == '=', r == '/', r == '.':
		default:
			return false
		}
	}
	return true
}

// checkPartitioning enforces that a set is partitioned wholly or not at all:
// an acquisition over a set-wide and a per-partition limit would touch two
// keys of a shared set, and no compare-and-set makes that atomic.
func (s *Set) checkPartitioning() error {
	per := 0
	for _, d := range s.defs {
		if d.perPart {
			per++
		}
	}
	switch {
	case per == 0:
		return nil
	case per < len(s.defs):
		return invalidf("a set's limits are all per partition or none (%d of %d are): use one set per kind of budget", per, len(s.defs))
	case s.opts.Mode == Lease:
		return invalidf("mode %v does not serve per-partition limits: use Exact", s.opts.Mode)
	}
	s.partitioned = true
	return nil
}

// Acquire implements Provider. On a set with per-partition limits it fails
// with ErrInvalidPartition: name the partition with AcquireIn.
func (s *Set) Acquire(ctx context.Context, req Request) (*Acquisition, error) {
	return s.acquire(ctx, "", req, true)
}

// TryAcquire implements Provider.
func (s *Set) TryAcquire(ctx context.Context, req Request) (*Acquisition, error) {
	return s.acquire(ctx, "", req, false)
}

// AcquireIn implements Provider. A partition's budget is made on first use
// and forgotten when it is back at rest (see the package doc, Partitions).
// An empty partition or one longer than MaxPartitionLen bytes fails with
// ErrInvalidPartition.
func (s *Set) AcquireIn(ctx context.Context, partition string, req Request) (*Acquisition, error) {
	return s.acquire(ctx, partition, req, true)
}

// TryAcquireIn implements Provider.
func (s *Set) TryAcquireIn(ctx context.Context, partition string, req Request) (*Acquisition, error) {
	return s.acquire(ctx, partition, req, false)
}

func (s *Set) acquire(ctx context.Context, part string, req Request, block bool) (*Acquisition, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if err := s.checkPartition(part); err != nil {
		return nil, err
	}
	if !s.partitioned {
		part = ""
	}
	a := s.newAcquisition()
	a.part = part
	if err := s.resolve(req, a); err != nil {
		return nil, err
	}
	if a.taken == 0 {
		a.at = s.opts.Clock().UnixNano()
		return a, nil
	}
	if err := s.be.acquire(ctx, a, block); err != nil {
		return nil, err
	}
	return a, nil
}

func (s *Set) checkPartition(part string) error {
	switch {
	case !s.partitioned:
		if part != "" {
			s.warnOnce("partition", "", "limits: partition named on a set without per-partition limits; ignored")
		}
		return nil
	case part == "":
		return fmt.Errorf("%w: the set's limits are per partition: name one with AcquireIn", ErrInvalidPartition)
	case len(part) > MaxPartitionLen:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidPartition, len(part), MaxPartitionLen)
	}
	return nil
}

// Stats implements Provider: one entry per limit key. For a set with
// per-partition limits it reports what a partition without use has, and
// Extra["partitions"], the number of partitions this process keeps state
// for; StatsIn reports one partition.
func (s *Set) Stats() map[string]Stats { return s.be.stats("") }

// StatsIn reports one partition of a set with per-partition limits (on
// another set, it is Stats). A shared set reports the partition's state as
// this process last saw it: a partition it never used shows no use.
func (s *Set) StatsIn(partition string) map[string]Stats {
	if !s.partitioned || partition == "" {
		return s.Stats()
	}
	return s.be.stats(partition)
}

// ForWorker implements Provider: a set is shared by all workers as it is.
func (s *Set) ForWorker(int) Provider { return s }

// Limits returns the set's limits, sorted by key.
func (s *Set) Limits() []Limit {
	ls := make([]Limit, len(s.defs))
	for i, d := range s.defs {
		ls[i] = d.limit
	}
	return ls
}

// Name is the name the set is shared under; "" for an in-memory set.
func (s *Set) Name() string { return s.opts.Name }

// Bucket is the KV bucket of a shared set; "" for an in-memory set.
func (s *Set) Bucket() string {
	if s.opts.Name == "" {
		return ""
	}
	return s.opts.Bucket
}

// Close stops the set's background work (the KV watch, the resource
// keepalive, lease returns) and gives back units leased but unused. Acquire then
// fails with ErrClosed, also for callers already waiting. Acquisitions still
// held are NOT released: their Release keeps working (it needs the NATS
// connection open), and a shared set's resource slots that nobody releases
// return by themselves within ResourceLeaseTTL+MaxSkew, since the keepalive
// has stopped. Releasing them at Close instead would let other holders in
// while this process may still be using them. Close is idempotent.
func (s *Set) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return s.be.close()
}

// resolve fills a's amounts from req with concurry's rules and checks them.
func (s *Set) resolve(req Request, a *Acquisition) error {
	named := 0
	for i, d := range s.defs {
		bit := uint64(1) << i
		n, ok := req[d.key]
		if ok {
			named++
		} else if d.kind == kindRate {
			continue
		} else {
			n = 1
		}
		if err := s.checkAmount(d, n); err != nil {
			return err
		}
		if n > d.capacity {
			return &ExceedsCapacityError{Key: d.key, Requested: n, Capacity: d.capacity}
		}
		if n == 0 {
			continue
		}
		a.amounts[i] = n
		a.taken |= bit
		if (d.kind == kindRate) || (d.kind == kindCall && n > 1) {
			a.mustUpdate |= bit
		}
	}
	if named < len(req) {
		for k := range req {
			if _, ok := s.index[k]; !ok {
				s.warnOnce("request", k, "limits: unknown limit key in acquisition request; ignored")
			}
		}
	}
	return nil
}

func (s *Set) checkAmount(d limitDef, n float64) error {
	if !(n >= 0) || math.IsInf(n, 1) {
		return amountf("requested amount must be finite and >= 0, got %g for limit %q", n, d.key)
	}
	if (d.kind == kindResource || d.alg.wholeUnits()) && n != math.Trunc(n) {
		what := string(d.alg)
		if d.kind == kindResource {
			what = "resource"
		}
		return amountf("fractional amount %g for %s limit %q: it counts whole units (use token_bucket or gcra for fractional amounts)", n, what, d.key)
	}
	return nil
}

func (s *Set) warnOnce(kind, key, msg string) {
	if _, seen := s.warned.LoadOrStore(kind+"\x00"+key, struct{}{}); seen {
		return
	}
	s.opts.Logger.Warn(msg, "key", key, "known_keys", s.keys(), "set", s.opts.Name)
}

func (s *Set) keys() []string {
	ks := make([]string, len(s.defs))
	for i, d := range s.defs {
		ks[i] = d.key
	}
	return ks
}
