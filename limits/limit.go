package limits

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
)

// Algorithm names a rate-limiting algorithm. The zero value means SlidingWindow.
type Algorithm string

// The five algorithms, with concurry's names.
const (
	// TokenBucket starts full and refills Capacity tokens per Window, continuously;
	// a burst of Capacity is allowed. Refunds unused tokens.
	TokenBucket Algorithm = "token_bucket"
	// LeakyBucket is a queue of Capacity units draining one unit every
	// Window/Capacity. Whole units only; no refunds.
	LeakyBucket Algorithm = "leaky_bucket"
	// SlidingWindow admits at most Capacity units in any span of Window. Whole
	// units only; no refunds. The default.
	SlidingWindow Algorithm = "sliding_window"
	// FixedWindow admits at most Capacity units per window, a window starting at
	// the first use after the previous one ended (not at clock boundaries), so two
	// bursts can meet at a window edge. Whole units only; no refunds.
	FixedWindow Algorithm = "fixed_window"
	// GCRA is the generic cell rate algorithm: emission interval Window/Capacity,
	// tolerance Window, hence bursts of Capacity. Refunds unused tokens.
	GCRA Algorithm = "gcra"
)

// ParseAlgorithm accepts concurry's names and aliases, ignoring case and the
// separators '_', '-' and ' ': token, token_bucket, leaky, leaky_bucket, sliding,
// sliding_window, fixed, fixed_window, gcra, "generic cell rate", "generic cell
// rate algorithm". The empty string is SlidingWindow.
func ParseAlgorithm(s string) (Algorithm, error) {
	norm := strings.Map(func(r rune) rune {
		switch r {
		case '_', '-', ' ':
			return -1
		}
		return r
	}, strings.ToLower(strings.TrimSpace(s)))
	switch norm {
	case "", "sliding", "slidingwindow":
		return SlidingWindow, nil
	case "token", "tokenbucket":
		return TokenBucket, nil
	case "leaky", "leakybucket":
		return LeakyBucket, nil
	case "fixed", "fixedwindow":
		return FixedWindow, nil
	case "gcra", "genericcellrate", "genericcellratealgorithm":
		return GCRA, nil
	}
	return "", invalidf("unknown algorithm %q (want token_bucket, leaky_bucket, sliding_window, fixed_window or gcra)", s)
}

// refunds reports whether the algorithm gives back tokens that were requested
// but not used.
func (a Algorithm) refunds() bool { return a == TokenBucket || a == GCRA }

// bucket reports whether the algorithm refills continuously (as opposed to
// counting admissions in windows).
func (a Algorithm) bucket() bool { return a == TokenBucket || a == LeakyBucket || a == GCRA }

// wholeUnits reports whether the algorithm counts whole units only.
func (a Algorithm) wholeUnits() bool {
	return a == LeakyBucket || a == SlidingWindow || a == FixedWindow
}

// CallCountKey is the key of every CallLimit.
const CallCountKey = "call_count"

// Limit is one of CallLimit, RateLimit and ResourceLimit. Limits are plain
// values; they are enforced by a Set built from them.
type Limit interface {
	// LimitKey is the key a Request names the limit by.
	LimitKey() string
	// def validates the limit and returns its definition.
	def() (limitDef, error)
}

// CallLimit counts calls: every acquisition takes 1 from it unless the request
// names CallCountKey with another amount. Its key is "call_count".
type CallLimit struct {
	Window    time.Duration
	Capacity  float64
	Algorithm Algorithm // zero value: SlidingWindow
	// PerPartition gives every partition (Set.AcquireIn) its own budget of
	// Capacity per Window. Default false: one budget for the set.
	PerPartition bool
}

// RateLimit limits an amount per window, such as tokens per minute. It is taken
// only by requests that name its key, and each such acquisition must report the
// actual usage with Acquisition.Update before Release.
type RateLimit struct {
	Key       string
	Window    time.Duration
	Capacity  float64
	Algorithm Algorithm // zero value: SlidingWindow
	// PerPartition gives every partition (Set.AcquireIn) its own budget.
	// Default false: one budget for the set.
	PerPartition bool
}

// ResourceLimit is a counting semaphore of Capacity slots, such as concurrent
// connections: every acquisition holds 1 slot (or the amount its request names)
// until Release.
type ResourceLimit struct {
	Key      string
	Capacity int
	// PerPartition gives every partition (Set.AcquireIn) its own Capacity
	// slots. Default false: one pool of slots for the set.
	PerPartition bool
}

// LimitKey returns CallCountKey.
func (CallLimit) LimitKey() string { return CallCountKey }

// LimitKey returns l.Key.
func (l RateLimit) LimitKey() string { return l.Key }

// LimitKey returns l.Key.
func (l ResourceLimit) LimitKey() string { return l.Key }

type kind uint8

const (
	kindCall kind = iota
	kindRate
	kindResource
)

// limitDef is a validated limit.
type limitDef struct {
	key      string
	kind     kind
	capacity float64
	window   time.Duration // zero for resources
	alg      Algorithm     // empty for resources
	perPart  bool
	limit    Limit
}

func (l CallLimit) def() (limitDef, error) {
	return rateDef(l, kindCall, CallCountKey, l.Window, l.Capacity, l.Algorithm, l.PerPartition)
}

func (l RateLimit) def() (limitDef, error) {
	if l.Key == "" {
		return limitDef{}, invalidf("rate limit needs a key")
	}
	if l.Key == CallCountKey {
		return limitDef{}, invalidf("key %q is reserved for CallLimit", CallCountKey)
	}
	return rateDef(l, kindRate, l.Key, l.Window, l.Capacity, l.Algorithm, l.PerPartition)
}

func rateDef(l Limit, k kind, key string, window time.Duration, capacity float64, alg Algorithm, perPart bool) (limitDef, error) {
	if window <= 0 {
		return limitDef{}, invalidf("window must be > 0, got %v for limit %q", window, key)
	}
	if !(capacity > 0) || math.IsInf(capacity, 1) {
		return limitDef{}, invalidf("capacity must be finite and > 0, got %g for limit %q", capacity, key)
	}
	a, err := ParseAlgorithm(string(alg))
	if err != nil {
		return limitDef{}, fmt.Errorf("%w for limit %q", err, key)
	}
	return limitDef{key: key, kind: k, capacity: capacity, window: window, alg: a, perPart: perPart, limit: l}, nil
}

func (l ResourceLimit) def() (limitDef, error) {
	if l.Key == "" {
		return limitDef{}, invalidf("resource limit needs a key")
	}
	if l.Key == CallCountKey {
		return limitDef{}, invalidf("key %q is reserved for CallLimit", CallCountKey)
	}
	if l.Capacity < 1 {
		return limitDef{}, invalidf("resource limit capacity must be >= 1, got %d for limit %q", l.Capacity, l.Key)
	}
	return limitDef{key: l.Key, kind: kindResource, capacity: float64(l.Capacity), perPart: l.PerPartition, limit: l}, nil
}

// signature is the definition in a canonical form; sets sharing a name must
// agree on it.
func (d limitDef) signature() string {
	var s string
	switch d.kind {
	case kindResource:
		s = fmt.Sprintf("resource:%s:c%g", d.key, d.capacity)
	case kindCall:
		s = fmt.Sprintf("call:%s:c%g:w%d:%s", d.key, d.capacity, d.window, d.alg)
	default:
		s = fmt.Sprintf("rate:%s:c%g:w%d:%s", d.key, d.capacity, d.window, d.alg)
	}
	if d.perPart {
		s += ":partition"
	}
	return s
}

// wireLimit is the serialised form of a Limit. Windows travel as seconds, as in
// concurry, so that a non-Go process can read them.
type wireLimit struct {
	Type      string    `json:"type"`
	Key       string    `json:"key,omitempty"`
	Window    float64   `json:"window,omitempty"`
	Capacity  float64   `json:"capacity"`
	Algorithm Algorithm `json:"algorithm,omitempty"`
	// PerPartition travels only when set, so that older readers see the
	// same JSON for unpartitioned limits.
	PerPartition bool `json:"per_partition,omitempty"`
}

// MarshalLimits encodes limits for another process (a child worker or a remote
// agent) as a JSON array of objects tagged by "type" ("call_limit",
// "rate_limit", "resource_limit"), windows in seconds, "per_partition": true
// for a limit per partition. Invalid limits are an error wrapping
// ErrInvalidLimit.
func MarshalLimits(ls []Limit) ([]byte, error) {
	out := make([]wireLimit, 0, len(ls))
	for _, l := range ls {
		if l == nil {
			return nil, invalidf("nil limit")
		}
		d, err := l.def()
		if err != nil {
			return nil, err
		}
		w := wireLimit{Capacity: d.capacity, Algorithm: d.alg, Window: d.window.Seconds(), PerPartition: d.perPart}
		switch d.kind {
		case kindCall:
			w.Type = "call_limit"
		case kindRate:
			w.Type, w.Key = "rate_limit", d.key
		case kindResource:
			w.Type, w.Key = "resource_limit", d.key
		}
		out = append(out, w)
	}
	return json.Marshal(out)
}

// UnmarshalLimits decodes what MarshalLimits produced and validates every limit.
func UnmarshalLimits(b []byte) ([]Limit, error) {
	var ws []wireLimit
	if err := json.Unmarshal(b, &ws); err != nil {
		return nil, invalidf("decoding limits: %v", err)
	}
	ls := make([]Limit, 0, len(ws))
	for _, w := range ws {
		window := time.Duration(math.Round(w.Window * 1e9))
		var l Limit
		switch w.Type {
		case "call_limit":
			l = CallLimit{Window: window, Capacity: w.Capacity, Algorithm: w.Algorithm, PerPartition: w.PerPartition}
		case "rate_limit":
			l = RateLimit{Key: w.Key, Window: window, Capacity: w.Capacity, Algorithm: w.Algorithm, PerPartition: w.PerPartition}
		case "resource_limit":
			if w.Capacity != math.Trunc(w.Capacity) || w.Capacity > math.MaxInt32 {
				return nil, invalidf("resource limit capacity must be a whole number, got %g for limit %q", w.Capacity, w.Key)
			}
			l = ResourceLimit{Key: w.Key, Capacity: int(w.Capacity), PerPartition: w.PerPartition}
		default:
			return nil, invalidf("unknown limit type %q", w.Type)
		}
		if _, err := l.def(); err != nil {
			return nil, err
		}
		ls = append(ls, l)
	}
	return ls, nil
}
