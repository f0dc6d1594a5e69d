package balancer

import (
	"encoding/json"
	"fmt"
)

// Stats is a snapshot of a Balancer's counters. Its JSON form has exactly
// concurry's keys, and only those that apply to the algorithm:
//
//	all:         "algorithm" (the display name, e.g. "LeastActiveLoad"), "total_dispatched"
//	RoundRobin:  "offset"
//	LeastActive: "active_calls" {"0": n, ...} over live slots, "total_active"
//	LeastTotal:  "total_calls" {"0": n, ...} over live slots, "sum_total_calls"
//
// TotalDispatched counts every pick since New, including picks of slots
// removed since, so after removals it can exceed SumTotalCalls, which (like
// ActiveCalls and TotalActive) covers live slots only.
type Stats struct {
	Algorithm       Algorithm
	TotalDispatched uint64
	// Offset is Options.Offset; RoundRobin only.
	Offset int
	// ActiveCalls maps each live slot to its in-flight calls; LeastActive only.
	ActiveCalls map[int]int
	// TotalActive is the sum of ActiveCalls; LeastActive only.
	TotalActive int
	// TotalCalls maps each live slot to its picks since it was added (its
	// real count, not LeastTotal's selection score); LeastTotal only.
	TotalCalls map[int]uint64
	// SumTotalCalls is the sum of TotalCalls; LeastTotal only.
	SumTotalCalls uint64
}

// Stats returns a snapshot of b's counters, with the fields that apply to its
// algorithm filled in.
func (b *Balancer) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := &b.st
	s := Stats{Algorithm: b.alg, TotalDispatched: st.dispatched}
	switch b.alg {
	case RoundRobin:
		s.Offset = b.offset
	case LeastActive:
		s.ActiveCalls = make(map[int]int, st.nLive)
		for i, live := range st.live {
			if live {
				s.ActiveCalls[i] = st.active[i]
				s.TotalActive += st.active[i]
			}
		}
	case LeastTotal:
		s.TotalCalls = make(map[int]uint64, st.nLive)
		for i, live := range st.live {
			if live {
				s.TotalCalls[i] = st.total[i]
				s.SumTotalCalls += st.total[i]
			}
		}
	}
	return s
}

// MarshalJSON encodes s with concurry's keys; see [Stats]. Each algorithm
// gets its own struct because omitempty cannot express "present only for this
// algorithm": a zero offset or an empty map must still appear.
func (s Stats) MarshalJSON() ([]byte, error) {
	name := s.Algorithm.Name()
	switch s.Algorithm {
	case RoundRobin:
		return json.Marshal(struct {
			Algorithm       string `json:"algorithm"`
			TotalDispatched uint64 `json:"total_dispatched"`
			Offset          int    `json:"offset"`
		}{name, s.TotalDispatched, s.Offset})
	case LeastActive:
		return json.Marshal(struct {
			Algorithm       string      `json:"algorithm"`
			TotalDispatched uint64      `json:"total_dispatched"`
			ActiveCalls     map[int]int `json:"active_calls"`
			TotalActive     int         `json:"total_active"`
		}{name, s.TotalDispatched, nonNil(s.ActiveCalls), s.TotalActive})
	case LeastTotal:
		return json.Marshal(struct {
			Algorithm       string         `json:"algorithm"`
			TotalDispatched uint64         `json:"total_dispatched"`
			TotalCalls      map[int]uint64 `json:"total_calls"`
			SumTotalCalls   uint64         `json:"sum_total_calls"`
		}{name, s.TotalDispatched, nonNil(s.TotalCalls), s.SumTotalCalls})
	}
	return json.Marshal(struct {
		Algorithm       string `json:"algorithm"`
		TotalDispatched uint64 `json:"total_dispatched"`
	}{name, s.TotalDispatched})
}

// UnmarshalJSON decodes the form MarshalJSON writes; "algorithm" may be any
// name ParseAlgorithm accepts.
func (s *Stats) UnmarshalJSON(data []byte) error {
	var in struct {
		Algorithm       string         `json:"algorithm"`
		TotalDispatched uint64         `json:"total_dispatched"`
		Offset          int            `json:"offset"`
		ActiveCalls     map[int]int    `json:"active_calls"`
		TotalActive     int            `json:"total_active"`
		TotalCalls      map[int]uint64 `json:"total_calls"`
		SumTotalCalls   uint64         `json:"sum_total_calls"`
	}
	if err := json.Unmarshal(data, &in); err != nil {
		return fmt.Errorf("balancer: decoding stats: %w", err)
	}
	alg, err := ParseAlgorithm(in.Algorithm)
	if err != nil {
		return err
	}
	*s = Stats{
		Algorithm:       alg,
		TotalDispatched: in.TotalDispatched,
		Offset:          in.Offset,
		ActiveCalls:     in.ActiveCalls,
		TotalActive:     in.TotalActive,
		TotalCalls:      in.TotalCalls,
		SumTotalCalls:   in.SumTotalCalls,
	}
	return nil
}

func nonNil[M ~map[int]V, V any](m M) M {
	if m == nil {
		return M{}
	}
	return m
}
