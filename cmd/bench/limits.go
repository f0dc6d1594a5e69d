package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/natsfleet/natsfleet/limits"
)

// The KV rows: kvProcs child processes × kvGoroutines goroutines admit through one shared CallLimit as fast as they
// can. Its capacity is far above what they reach, so the figure is the cost of an admission, not the limit. The
// raw baseline is the loop a programmer writes by hand on one KV key: get, then update with the revision read,
// re-reading after a conflict. The exact contenders coalesce the concurrent acquisitions of each process into one
// compare-and-set. The partitioned row does the same with a CallLimit per partition, each acquisition naming one
// of kvPartitions at random: one key each, so few acquisitions share a write, but processes rarely collide.
const (
	rowKV        = "shared CallLimit over KV, 4 processes × 8 goroutines"
	cRawCAS      = "raw single-key KV CAS loop"
	cKVExact     = "natsfleet KV exact"
	cKVLease     = "natsfleet KV lease"
	cKVExactTB   = "natsfleet KV exact, token bucket"
	rowKVPart    = "partitioned CallLimit over KV, 1,000 partitions, 4 processes × 8 goroutines"
	cKVPart      = "natsfleet KV exact, a partition at random per acquisition"
	kvProcs      = 4
	kvGoroutines = 8
	kvCapacity   = 1e9 // per second: never binding
	kvPartitions = 1000
	// The over-admission checks: a CallLimit whose window outlasts the check, hammered for checkFor, may admit
	// checkCapacity in all, or checkPartCapacity in each partition.
	checkCapacity     = 2000
	checkPartCapacity = 5
	checkFor          = 2 * time.Second

	rowMemLimit    = "in-memory limit acquire+release, 8 goroutines"
	cMemSet        = "natsfleet in-memory set"
	cRateAllow     = "x/time rate.Limiter.Allow"
	memGoroutines  = 8
	memSetCapacity = 1e15 // per second: never binding
)

// Names of the limits child's prepared admitters.
const (
	admRaw        = "raw"
	admExact      = "exact"
	admLease      = "lease"
	admExactTB    = "exact-tb"
	admCheckExact = "check-exact"
	admCheckLease = "check-lease"
	admPart       = "partitions"
	admCheckPart  = "check-partitions"
)

// serveLimits is the limits child: it prepares admitters on "PREP <name>" (answering OK), runs one for a duration
// on its goroutines on "RUN <name> <ns>" (answering "DONE <admissions> <elapsed ns>", followed for the partition
// check by the admissions of each partition of that run), and closes them at the end of stdin.
func serveLimits(nc *nats.Conn, cfg childConfig, say func(string, ...any) error) error {
	adms := make(map[string]func(ctx context.Context) (int, error))
	var perPart []atomic.Int64 // the partition check's admissions of the current run, by partition
	var sets []*limits.Set
	defer func() {
		for _, s := range sets {
			_ = s.Close()
		}
	}()
	newSet := func(opts limits.SetOptions, l limits.Limit) (func(ctx context.Context) (int, error), error) {
		opts.Conn = nc
		s, err := limits.NewSet(opts, l)
		if err != nil {
			return nil, err
		}
		sets = append(sets, s)
		return func(ctx context.Context) (int, error) {
			n := 0
			for {
				a, err := s.Acquire(ctx, nil)
				if err != nil {
					if ctx.Err() != nil {
						return n, nil
					}
					return n, err
				}
				n++
				if err := a.Release(); err != nil {
					return n, err
				}
			}
		}, nil
	}
	// A partitioned set: each acquisition in a partition drawn at random; with count, TryAcquire, counting each
	// partition's admissions.
	newPartSet := func(name string, l limits.Limit, count []atomic.Int64) (func(ctx context.Context) (int, error), error) {
		s, err := limits.NewSet(limits.SetOptions{Name: name, Conn: nc}, l)
		if err != nil {
			return nil, err
		}
		sets = append(sets, s)
		parts := make([]string, kvPartitions)
		for i := range parts {
			parts[i] = fmt.Sprintf("tenant-%d", i)
		}
		return func(ctx context.Context) (int, error) {
			n := 0
			for ctx.Err() == nil {
				p := rand.IntN(len(parts))
				var a *limits.Acquisition
				var err error
				if count == nil {
					a, err = s.AcquireIn(ctx, parts[p], nil)
				} else {
					a, err = s.TryAcquireIn(ctx, parts[p], nil)
				}
				switch {
				case err == nil:
				case ctx.Err() != nil:
					return n, nil
				case errors.Is(err, limits.ErrWouldWait):
					continue
				default:
					return n, err
				}
				n++
				if count != nil {
					count[p].Add(1)
				}
				if err := a.Release(); err != nil {
					return n, err
				}
			}
			return n, nil
		}, nil
	}
	if err := say("READY"); err != nil {
		return err
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		var err error
		switch {
		case len(f) == 2 && f[0] == "PREP":
			var adm func(ctx context.Context) (int, error)
			switch f[1] {
			case admRaw:
				adm, err = rawCAS(nc)
			case admExact:
				adm, err = newSet(limits.SetOptions{Name: "bench-exact", Mode: limits.Exact},
					limits.CallLimit{Window: time.Second, Capacity: kvCapacity})
			case admExactTB:
				adm, err = newSet(limits.SetOptions{Name: "bench-exact-tb", Mode: limits.Exact},
					limits.CallLimit{Window: time.Second, Capacity: kvCapacity, Algorithm: limits.TokenBucket})
			case admLease:
				adm, err = newSet(limits.SetOptions{Name: "bench-lease", Mode: limits.Lease, LeaseSize: cfg.LeaseSize},
					limits.CallLimit{Window: time.Second, Capacity: kvCapacity})
			case admCheckExact:
				adm, err = newSet(limits.SetOptions{Name: "bench-check-exact", Mode: limits.Exact},
					limits.CallLimit{Window: time.Hour, Capacity: checkCapacity})
			case admCheckLease:
				adm, err = newSet(limits.SetOptions{Name: "bench-check-lease", Mode: limits.Lease},
					limits.CallLimit{Window: time.Hour, Capacity: checkCapacity})
			case admPart:
				adm, err = newPartSet("bench-partitions",
					limits.CallLimit{Window: time.Second, Capacity: kvCapacity, PerPartition: true}, nil)
			case admCheckPart:
				perPart = make([]atomic.Int64, kvPartitions)
				adm, err = newPartSet("bench-check-partitions",
					limits.CallLimit{Window: time.Hour, Capacity: checkPartCapacity, PerPartition: true}, perPart)
			default:
				err = fmt.Errorf("unknown admitter %q", f[1])
			}
			if err == nil {
				adms[f[1]] = adm
				err = say("OK")
			}
		case len(f) == 3 && f[0] == "RUN" && adms[f[1]] != nil:
			var ns int64
			if ns, err = strconv.ParseInt(f[2], 10, 64); err != nil {
				break
			}
			var n int
			var el time.Duration
			n, el, err = runAdmitter(adms[f[1]], cfg.Goroutines, time.Duration(ns))
			if err != nil {
				break
			}
			line := fmt.Sprintf("DONE %d %d", n, el.Nanoseconds())
			if f[1] == admCheckPart {
				var b strings.Builder
				for i := range perPart {
					fmt.Fprintf(&b, " %d", perPart[i].Swap(0))
				}
				line += b.String()
			}
			err = say("%s", line)
		default:
			err = fmt.Errorf("bad command %q", in.Text())
		}
		if err != nil {
			_ = say("ERR %v", err)
			return err
		}
	}
	return in.Err()
}

// runAdmitter runs adm on g goroutines for d and returns their admissions and the time taken.
func runAdmitter(adm func(ctx context.Context) (int, error), g int, d time.Duration) (int, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var total atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, g)
	start := time.Now()
	for range g {
		wg.Go(func() {
			n, err := adm(ctx)
			total.Add(int64(n))
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	close(errs)
	return int(total.Load()), el, <-errs
}

// rawCAS is the hand-written baseline: each goroutine increments one counter key with Update(revision it read),
// and re-reads the key when another writer got there first.
func rawCAS(nc *nats.Conn) (func(ctx context.Context) (int, error), error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	// The bucket the shared sets made (they are prepared first), so both write to the same stream.
	kv, err := js.KeyValue(ctx, limits.DefaultBucket)
	if err != nil {
		return nil, err
	}
	const key = "bench-raw"
	if _, err := kv.Create(ctx, key, []byte("0")); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, err
	}
	return func(ctx context.Context) (int, error) {
		n := 0
		var rev, v uint64
		read := func() error {
			e, err := kv.Get(ctx, key)
			if err != nil {
				return err
			}
			rev = e.Revision()
			v, err = strconv.ParseUint(string(e.Value()), 10, 64)
			return err
		}
		if err := read(); err != nil {
			return 0, nil // the run ended before the first read
		}
		for ctx.Err() == nil {
			next, err := kv.Update(ctx, key, strconv.AppendUint(nil, v+1, 10), rev)
			switch {
			case err == nil:
				n++
				rev, v = next, v+1
			case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
				err = read()
			}
			if err != nil && ctx.Err() == nil {
				return n, err
			}
		}
		return n, nil
	}, nil
}

// kvRun runs admitter name on every child for d and returns the admissions per second of them all, and the
// children's DONE lines.
func kvRun(cs []*child, name string, d time.Duration) (total int, perSecond float64, lines []string, err error) {
	for _, c := range cs {
		if err := c.send("RUN %s %d", name, d.Nanoseconds()); err != nil {
			return 0, 0, nil, err
		}
	}
	for _, c := range cs {
		line, err := c.expect("DONE", d+30*time.Second)
		if err != nil {
			return 0, 0, nil, err
		}
		var n int
		var ns int64
		if _, err := fmt.Sscanf(line, "%d %d", &n, &ns); err != nil {
			return 0, 0, nil, fmt.Errorf("limits child said %q: %w", line, err)
		}
		total += n
		perSecond += float64(n) / time.Duration(ns).Seconds()
		lines = append(lines, line)
	}
	return total, perSecond, lines, nil
}

// perPartition sums the children's admissions per partition from their DONE lines.
func perPartition(lines []string) ([]int, error) {
	sum := make([]int, kvPartitions)
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 2+kvPartitions {
			return nil, fmt.Errorf("limits child said %d fields, want %d", len(f), 2+kvPartitions)
		}
		for i, v := range f[2:] {
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, err
			}
			sum[i] += n
		}
	}
	return sum, nil
}

func (b *bench) kvLimits() error {
	url, err := b.server()
	if err != nil {
		return err
	}
	cs, err := b.startChildren(kvProcs, roleLimits, childConfig{URL: url, Goroutines: kvGoroutines,
		LeaseSize: b.opts.leaseSize})
	if err != nil {
		return err
	}
	defer stopChildren(cs)
	for _, c := range []string{cKVExact, cRawCAS, cKVLease, cKVExactTB, cKVPart} {
		b.procsOf[c] = pids(cs...)
	}
	for _, name := range []string{admExact, admExactTB, admLease, admRaw, admCheckExact, admCheckLease, admPart, admCheckPart} {
		for _, c := range cs {
			if err := c.send("PREP %s", name); err != nil {
				return err
			}
			if _, err := c.expect("OK", 30*time.Second); err != nil {
				return err
			}
		}
	}
	run := func(name string) func(time.Duration) (float64, error) {
		return func(d time.Duration) (float64, error) {
			_, ps, _, err := kvRun(cs, name, d)
			return ps, err
		}
	}
	err = b.measure(rowKV, acqPerSec,
		contender{cKVExact, run(admExact)},
		contender{cRawCAS, run(admRaw)},
		contender{cKVLease, run(admLease)},
		contender{cKVExactTB, run(admExactTB)},
	)
	if err != nil {
		return err
	}
	if r := b.find(rowKV, cKVLease); r != nil {
		r.Note = fmt.Sprintf("lease size %g", b.opts.leaseSize)
	}
	if err := b.measure(rowKVPart, acqPerSec, contender{cKVPart, run(admPart)}); err != nil {
		return err
	}
	for _, c := range []struct{ name, adm string }{{"KV exact", admCheckExact}, {"KV lease", admCheckLease}} {
		n, _, _, err := kvRun(cs, c.adm, checkFor)
		if err != nil {
			return err
		}
		b.addCheck(c.name+" never over-admits",
			fmt.Sprintf("4 processes × 8 goroutines admitted %d of a capacity of %d (CallLimit, 1h window) in %v",
				n, checkCapacity, checkFor), n <= checkCapacity)
	}
	n, _, lines, err := kvRun(cs, admCheckPart, checkFor)
	if err != nil {
		return err
	}
	counts, err := perPartition(lines)
	if err != nil {
		return err
	}
	most, full := 0, 0
	for _, c := range counts {
		most = max(most, c)
		if c == checkPartCapacity {
			full++
		}
	}
	b.addCheck("KV exact partitions never over-admit",
		fmt.Sprintf("4 processes × 8 goroutines admitted %d in %v over %d partitions of a capacity of %d each (CallLimit, 1h "+
			"window): at most %d in one, %d partitions full", n, checkFor, kvPartitions, checkPartCapacity, most, full),
		most <= checkPartCapacity)
	return nil
}

func (b *bench) memLimits() error {
	set, err := limits.NewSet(limits.SetOptions{}, limits.CallLimit{Window: time.Second, Capacity: memSetCapacity})
	if err != nil {
		return err
	}
	defer set.Close()
	lim := rate.NewLimiter(rate.Limit(memSetCapacity), 1<<30)
	parallel := func(op func() error) func(time.Duration) (float64, error) {
		return func(d time.Duration) (float64, error) {
			var total atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, memGoroutines)
			start := time.Now()
			for range memGoroutines {
				wg.Go(func() {
					n, _, err := timed(d, 64, func(int) error { return op() })
					total.Add(int64(n))
					if err != nil {
						errs <- err
					}
				})
			}
			wg.Wait()
			el := time.Since(start)
			close(errs)
			// Wall time per operation over all goroutines, as testing's RunParallel reports it.
			return perCall(int(total.Load()), el), <-errs
		}
	}
	ctx := context.Background()
	return b.measure(rowMemLimit, nsPerOp,
		contender{cMemSet, parallel(func() error {
			a, err := set.Acquire(ctx, nil)
			if err != nil {
				return err
			}
			return a.Release()
		})},
		contender{cRateAllow, parallel(func() error {
			if !lim.Allow() {
				return errors.New("rate.Limiter refused")
			}
			return nil
		})},
	)
}
