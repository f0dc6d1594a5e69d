package limits

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// ReadState reads the value of a shared set's key, as a tool that watches the
// set's bucket finds it, and reports the set's limits by key as Set.Stats
// would at now: what is available and used after refill, expiry and the end of
// dead holders' leases. The key is the set's name, or <name>._p.<partition>
// for one partition of a set with per-partition limits (the set's own key then
// holds only the definition, reported fresh). The limits come from the
// definition stored beside the state, so the reader needs neither the set nor
// its limits; it writes nothing and takes nothing.
//
// A value that is no shared set's state is an error: wrapping ErrInvalidLimit
// when its definition cannot be read, else the decoder's.
func ReadState(value []byte, now time.Time) (map[string]Stats, error) {
	st := new(sharedState)
	if err := msgpack.Unmarshal(value, st); err != nil {
		return nil, fmt.Errorf("limits: reading a shared state: %w", err)
	}
	defs, err := parseSignature(st.Sig)
	if err != nil {
		return nil, err
	}
	if len(st.Rates) != len(defs) {
		return nil, invalidf("shared state has %d rate states for %d limits", len(st.Rates), len(defs))
	}
	// A backend over the definitions alone: settle and the stats read nothing else of it. Leases are judged
	// with the default skew margin, as every set that does not set one judges them.
	s := &Set{defs: defs, params: make([]rateParams, len(defs))}
	for i, d := range defs {
		if d.kind != kindResource {
			s.params[i] = newRateParams(d, defaultMaxSkew)
		}
	}
	b := &kvBackend{s: s, margin: int64(defaultMaxSkew)}
	at := now.UnixNano()
	b.settle(st, at)
	out := make(map[string]Stats, len(defs))
	for i, d := range defs {
		if d.kind == kindResource {
			out[d.key] = resourceStats(d, held(st.Holders, i))
		} else {
			out[d.key] = s.params[i].stats(d.key, &st.Rates[i], at)
		}
	}
	return out, nil
}

// signatureRE reads one limitDef.signature: kind, key, capacity, and for rate
// and call limits the window in nanoseconds and the algorithm.
var signatureRE = regexp.MustCompile(`^(resource|call|rate):(.+):c([^:]+)(?::w(\d+):([a-z_]+))?(:partition)?$`)

// parseSignature reads the definitions a shared state stores (limitDef.signature
// joined by ';'): what lets a reader without the set compute its stats.
func parseSignature(sig string) ([]limitDef, error) {
	if sig == "" {
		return nil, invalidf("shared state without a definition")
	}
	parts := strings.Split(sig, ";")
	defs := make([]limitDef, len(parts))
	for i, p := range parts {
		m := signatureRE.FindStringSubmatch(p)
		if m == nil || (m[1] == "resource") != (m[4] == "") {
			return nil, invalidf("unreadable limit definition %q", p)
		}
		capacity, err := strconv.ParseFloat(m[3], 64)
		if err != nil || !(capacity > 0) {
			return nil, invalidf("unreadable capacity in limit definition %q", p)
		}
		d := limitDef{key: m[2], capacity: capacity, perPart: m[6] != ""}
		switch m[1] {
		case "resource":
			d.kind = kindResource
		case "call":
			d.kind = kindCall
		default:
			d.kind = kindRate
		}
		if d.kind != kindResource {
			w, err := strconv.ParseInt(m[4], 10, 64)
			if err != nil || w <= 0 {
				return nil, invalidf("unreadable window in limit definition %q", p)
			}
			if d.alg, err = ParseAlgorithm(m[5]); err != nil {
				return nil, err
			}
			d.window = time.Duration(w)
		}
		if d.signature() != p {
			return nil, invalidf("unreadable limit definition %q", p)
		}
		defs[i] = d
	}
	return defs, nil
}
