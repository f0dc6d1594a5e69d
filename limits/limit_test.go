package limits

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestParseAlgorithm(t *testing.T) {
	t.Parallel()
	cases := map[string]Algorithm{
		"": SlidingWindow, "sliding": SlidingWindow, "Sliding_Window": SlidingWindow, "SlidingWindow": SlidingWindow,
		"token": TokenBucket, "TOKEN_BUCKET": TokenBucket, "token-bucket": TokenBucket,
		"leaky": LeakyBucket, "leaky_bucket": LeakyBucket,
		"fixed": FixedWindow, "fixed_window": FixedWindow,
		"gcra": GCRA, "GCRA": GCRA, "Generic cell rate algorithm": GCRA, "generic cell rate": GCRA,
	}
	for in, want := range cases {
		got, err := ParseAlgorithm(in)
		if err != nil || got != want {
			t.Errorf("ParseAlgorithm(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	_, err := ParseAlgorithm("bucket")
	if !errors.Is(err, ErrInvalidLimit) || !strings.Contains(err.Error(), `unknown algorithm "bucket"`) {
		t.Fatalf("ParseAlgorithm(bucket) error = %v", err)
	}
}

func TestNewSetValidation(t *testing.T) {
	t.Parallel()
	many := make([]Limit, 65)
	for i := range many {
		many[i] = ResourceLimit{Key: strings.Repeat("k", i+1), Capacity: 1}
	}
	cases := []struct {
		name string
		opts SetOptions
		ls   []Limit
		want string
	}{
		{"zero capacity", SetOptions{}, []Limit{CallLimit{Window: time.Second}}, `capacity must be finite and > 0, got 0 for limit "call_count"`},
		{"negative capacity", SetOptions{}, []Limit{RateLimit{Key: "t", Window: time.Second, Capacity: -1}}, `got -1 for limit "t"`},
		{"NaN capacity", SetOptions{}, []Limit{RateLimit{Key: "t", Window: time.Second, Capacity: math.NaN()}}, `got NaN`},
		{"infinite capacity", SetOptions{}, []Limit{RateLimit{Key: "t", Window: time.Second, Capacity: math.Inf(1)}}, `got +Inf`},
		{"zero window", SetOptions{}, []Limit{CallLimit{Capacity: 1}}, `window must be > 0, got 0s for limit "call_count"`},
		{"unknown algorithm", SetOptions{}, []Limit{CallLimit{Window: 1, Capacity: 1, Algorithm: "lottery"}}, `unknown algorithm "lottery"`},
		{"rate without key", SetOptions{}, []Limit{RateLimit{Window: 1, Capacity: 1}}, "rate limit needs a key"},
		{"rate named call_count", SetOptions{}, []Limit{RateLimit{Key: "call_count", Window: 1, Capacity: 1}}, `"call_count" is reserved`},
		{"resource capacity 0", SetOptions{}, []Limit{ResourceLimit{Key: "c"}}, `resource limit capacity must be >= 1, got 0 for limit "c"`},
		{"resource without key", SetOptions{}, []Limit{ResourceLimit{Capacity: 1}}, "resource limit needs a key"},
		{"duplicate keys", SetOptions{}, []Limit{ResourceLimit{Key: "c", Capacity: 1}, RateLimit{Key: "c", Window: 1, Capacity: 1}}, `duplicate limit key "c"`},
		{"two call limits", SetOptions{}, []Limit{CallLimit{Window: 1, Capacity: 1}, CallLimit{Window: 2, Capacity: 1}}, `duplicate limit key "call_count"`},
		{"nil limit", SetOptions{}, []Limit{nil}, "nil limit"},
		{"too many limits", SetOptions{}, many, "at most 64 limits, got 65"},
		{"name without conn", SetOptions{Name: "x"}, nil, `shared set "x" needs a connection`},
		{"conn without name", SetOptions{Conn: &nats.Conn{}}, nil, "a connection without SetOptions.Name"},
		{"lease in memory", SetOptions{Mode: Lease}, nil, "mode lease needs a shared set"},
		{"bad name", SetOptions{Name: "a b", Conn: &nats.Conn{}}, nil, `set name "a b" is not a valid KV key`},
		{"negative lease size", SetOptions{LeaseSize: -1}, nil, "lease size must be finite and >= 0, got -1"},
		{"negative ttl", SetOptions{LeaseTTL: -1}, nil, "durations must be >= 0"},
		{"negative replicas", SetOptions{Name: "x", Conn: &nats.Conn{}, Replicas: -1}, nil, "replicas must be 0 (the default) to 5, got -1"},
		{"six replicas", SetOptions{Name: "x", Conn: &nats.Conn{}, Replicas: 6}, nil, "replicas must be 0 (the default) to 5, got 6"},
		{"replicas in memory", SetOptions{Replicas: 3}, nil, "replicas need a shared set"},
		{"name with the partition separator", SetOptions{Name: "a._p.b", Conn: &nats.Conn{}}, nil, `set name "a._p.b" contains "._p."`},
		{"partitioned and not", SetOptions{}, []Limit{CallLimit{Window: 1, Capacity: 1, PerPartition: true}, ResourceLimit{Key: "c", Capacity: 1}},
			"a set's limits are all per partition or none (1 of 2 are)"},
		{"partitioned lease", SetOptions{Name: "x", Conn: &nats.Conn{}, Mode: Lease}, []Limit{CallLimit{Window: 1, Capacity: 1, PerPartition: true}},
			"mode lease does not serve per-partition limits"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSet(tc.opts, tc.ls...)
			if err == nil {
				s.Close()
				t.Fatal("NewSet succeeded")
			}
			if !errors.Is(err, ErrInvalidLimit) || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "limits: ") {
				t.Fatalf("error = %q, want ErrInvalidLimit containing %q", err, tc.want)
			}
		})
	}
}

func TestMarshalLimits(t *testing.T) {
	t.Parallel()
	ls := []Limit{
		CallLimit{Window: time.Minute, Capacity: 100},
		RateLimit{Key: "tokens", Window: 1500 * time.Millisecond, Capacity: 1000.5, Algorithm: GCRA},
		ResourceLimit{Key: "connections", Capacity: 5},
	}
	b, err := MarshalLimits(ls)
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"type":"call_limit","window":60,"capacity":100,"algorithm":"sliding_window"},` +
		`{"type":"rate_limit","key":"tokens","window":1.5,"capacity":1000.5,"algorithm":"gcra"},` +
		`{"type":"resource_limit","key":"connections","capacity":5}]`
	if string(b) != want {
		t.Fatalf("MarshalLimits = %s\nwant %s", b, want)
	}
	got, err := UnmarshalLimits(b)
	if err != nil {
		t.Fatal(err)
	}
	ls[0] = CallLimit{Window: time.Minute, Capacity: 100, Algorithm: SlidingWindow} // the default made explicit
	if !reflect.DeepEqual(got, ls) {
		t.Fatalf("round trip = %#v", got)
	}
	if _, err := MarshalLimits([]Limit{CallLimit{}}); !errors.Is(err, ErrInvalidLimit) {
		t.Fatalf("marshal invalid: %v", err)
	}
	for _, bad := range []string{`{`, `[{"type":"quota"}]`, `[{"type":"rate_limit","key":"t","window":0,"capacity":1}]`,
		`[{"type":"resource_limit","key":"c","capacity":1.5}]`} {
		if _, err := UnmarshalLimits([]byte(bad)); !errors.Is(err, ErrInvalidLimit) {
			t.Errorf("UnmarshalLimits(%s) error = %v, want ErrInvalidLimit", bad, err)
		}
	}
}
