package limits

import (
	"encoding/json"
	"fmt"
)

// Stats describes one limit now. Its JSON form is flat, with concurry's
// snake_case keys: "key", "algorithm" (omitted for resources), "capacity",
// "available", "utilization", and every Extra entry beside them.
type Stats struct {
	Key       string    `json:"key"`
	Algorithm Algorithm `json:"algorithm,omitempty"` // empty for a ResourceLimit
	Capacity  float64   `json:"capacity"`
	// Available is what a request could take now (token bucket, GCRA: tokens;
	// windows, leaky bucket: capacity minus what is counted; resources: free
	// slots).
	Available float64 `json:"available"`
	// Utilization is 1 - Available/Capacity.
	Utilization float64 `json:"utilization"`
	// Extra holds the algorithm's own figures under concurry's names:
	// token_bucket: available_tokens, max_rate (per second);
	// leaky_bucket: queue_size, max_rate;
	// sliding_window and fixed_window: current_requests, max_rate (per window),
	// window_seconds; gcra: available_tokens, max_rate, emission_interval
	// (seconds); every rate limit: window (seconds); resources: current_usage.
	// A Lease-mode set adds leased_local (units in this process's reservoir); a
	// Pool adds num_limit_sets.
	Extra map[string]float64 `json:"-"`
}

type statsFields struct {
	Key         string    `json:"key"`
	Algorithm   Algorithm `json:"algorithm,omitempty"`
	Capacity    float64   `json:"capacity"`
	Available   float64   `json:"available"`
	Utilization float64   `json:"utilization"`
}

var statsFieldNames = map[string]bool{"key": true, "algorithm": true, "capacity": true, "available": true, "utilization": true}

// MarshalJSON writes the flat form.
func (s Stats) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(s.Extra)+5)
	for k, v := range s.Extra {
		if !statsFieldNames[k] {
			m[k] = v
		}
	}
	m["key"], m["capacity"], m["available"], m["utilization"] = s.Key, s.Capacity, s.Available, s.Utilization
	if s.Algorithm != "" {
		m["algorithm"] = s.Algorithm
	}
	return json.Marshal(m)
}

// UnmarshalJSON reads the flat form: numeric keys other than the fields go
// to Extra.
func (s *Stats) UnmarshalJSON(b []byte) error {
	var f statsFields
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return err
	}
	*s = Stats{Key: f.Key, Algorithm: f.Algorithm, Capacity: f.Capacity, Available: f.Available, Utilization: f.Utilization}
	for k, raw := range all {
		if statsFieldNames[k] {
			continue
		}
		var v float64
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("limits: stats field %q: %w", k, err)
		}
		if s.Extra == nil {
			s.Extra = make(map[string]float64)
		}
		s.Extra[k] = v
	}
	return nil
}
