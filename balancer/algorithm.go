package balancer

import (
	"errors"
	"fmt"
	"strings"
)

// Algorithm names a load-balancing algorithm. Its value is the canonical
// snake_case name used in configuration; [Algorithm.Name] gives concurry's
// display name used in statistics.
type Algorithm string

// The four algorithms.
const (
	RoundRobin  Algorithm = "round_robin"
	LeastActive Algorithm = "least_active"
	LeastTotal  Algorithm = "least_total"
	Random      Algorithm = "random"
)

// ErrUnknownAlgorithm is wrapped by every error about an algorithm name that
// is not one of the four algorithms or their aliases.
var ErrUnknownAlgorithm = errors.New("balancer: unknown algorithm")

// ErrInvalidConfig is wrapped by the errors [New] returns for a negative slot
// count or offset.
var ErrInvalidConfig = errors.New("balancer: invalid configuration")

// aliases maps a normalised name (lower case, without '_', '-', '.' and
// spaces, the way concurry's AutoEnum matches) to its algorithm.
var aliases = map[string]Algorithm{
	"rr":              RoundRobin,
	"roundrobin":      RoundRobin,
	"active":          LeastActive,
	"leastactive":     LeastActive,
	"leastactiveload": LeastActive,
	"total":           LeastTotal,
	"leasttotal":      LeastTotal,
	"leasttotalload":  LeastTotal,
	"rand":            Random,
	"random":          Random,
}

const acceptedNames = "round_robin (rr, RoundRobin), least_active (active, LeastActiveLoad), " +
	"least_total (total, LeastTotalLoad), random (rand)"

// ParseAlgorithm returns the algorithm named by s. It accepts the canonical
// names, concurry's aliases (rr, active, total, rand) and display names
// (RoundRobin, LeastActiveLoad, LeastTotalLoad, Random), ignoring case and the
// separators '_', '-', '.' and space as concurry does. Anything else, the
// empty string included, is an error wrapping [ErrUnknownAlgorithm]; callers
// pick their own default for an empty setting.
func ParseAlgorithm(s string) (Algorithm, error) {
	key := strings.Map(func(r rune) rune {
		switch r {
		case '_', '-', '.', ' ', '\t':
			return -1
		}
		return r
	}, strings.ToLower(s))
	if a, ok := aliases[key]; ok {
		return a, nil
	}
	return "", fmt.Errorf("%w %q; accepted: %s", ErrUnknownAlgorithm, s, acceptedNames)
}

// Name returns concurry's display name of a: "RoundRobin", "LeastActiveLoad",
// "LeastTotalLoad" or "Random". It is the "algorithm" value in [Stats]' JSON.
// An unknown algorithm returns its raw value.
func (a Algorithm) Name() string {
	switch a {
	case RoundRobin:
		return "RoundRobin"
	case LeastActive:
		return "LeastActiveLoad"
	case LeastTotal:
		return "LeastTotalLoad"
	case Random:
		return "Random"
	}
	return string(a)
}
