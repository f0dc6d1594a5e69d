package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/balancer"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// benchWorker is the kind of the uneven-work and memory rows. It is registered in this binary, which is also the
// binary of its process-mode workers and agents.
type benchWorker struct{}

func newBenchWorker() *benchWorker { return &benchWorker{} }

// Work sleeps d: the work of the uneven row, which is not CPU-bound so that 4 workers fit on 2 cores.
func (*benchWorker) Work(d time.Duration) int {
	time.Sleep(d)
	return 1
}

// Echo returns v.
func (*benchWorker) Echo(v int) int { return v }

// Hold waits until the memory row opens its gate (thread mode only: the gate is in this process).
func (*benchWorker) Hold(ctx context.Context) (int, error) {
	select {
	case <-*holdGate.Load():
		return 1, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

var (
	benchKind = fleet.Register("BenchWorker", newBenchWorker)
	holdGate  atomic.Pointer[chan struct{}]
)

// The uneven-work row: a fixed workload of unevenCalls calls, 10% of them slowFactor times slower than the rest,
// made by unevenCallers concurrent callers (two per worker) on 4 workers; the figure is the time to finish it all.
const (
	rowUneven     = "uneven work, 400 calls, 10% 50x slower (total time)"
	cNFLeast      = "natsfleet least-active, 4 processes"
	cNFRoundRobin = "natsfleet round robin, 4 processes"
	cMicroRandom  = "nats.go micro, 4 instances (random queue group)"
	unevenCalls   = 400
	unevenCallers = 8
	unevenBase    = time.Millisecond
	slowFactor    = 50
)

// unevenWorkload is the same for every contender: exactly 10% of the calls, chosen by a fixed seed, are slow.
func unevenWorkload() []time.Duration {
	w := make([]time.Duration, unevenCalls)
	r := rand.New(rand.NewPCG(7, 11))
	for i, k := range r.Perm(unevenCalls) {
		w[i] = unevenBase
		if k < unevenCalls/10 {
			w[i] = slowFactor * unevenBase
		}
	}
	return w
}

// runWorkload makes every call of work from unevenCallers goroutines, each taking the next call when its last one
// returns, and returns the seconds it took.
func runWorkload(work []time.Duration, call func(d time.Duration) error) (float64, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, unevenCallers)
	start := time.Now()
	for range unevenCallers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(work)) {
					return
				}
				if err := call(work[i]); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return el.Seconds(), nil
}

func (b *bench) uneven() error {
	url, err := b.server()
	if err != nil {
		return err
	}
	work := unevenWorkload()
	ctx := context.Background()
	nfContender := func(name string, alg balancer.Algorithm) (contender, func(), error) {
		p, workers, err := b.processPool(benchKind, client.Options{Mode: client.Process, MaxWorkers: 4, LoadBalancing: alg})
		if err != nil {
			return contender{}, nil, err
		}
		b.procsOf[name] = workers
		return contender{name, func(time.Duration) (float64, error) {
			return runWorkload(work, func(d time.Duration) error {
				v, err := client.Call[int](p, "Work", d).Result(ctx)
				if err == nil && v != 1 {
					err = wrong(v, 1)
				}
				return err
			})
		}}, func() { p.Close() }, nil
	}
	least, stopLeast, err := nfContender(cNFLeast, balancer.LeastActive)
	if err != nil {
		return err
	}
	defer stopLeast()
	rr, stopRR, err := nfContender(cNFRoundRobin, balancer.RoundRobin)
	if err != nil {
		return err
	}
	defer stopRR()
	micros, err := b.startChildren(4, roleMicro, childConfig{URL: url, Subject: microSubject})
	if err != nil {
		return err
	}
	defer stopChildren(micros)
	b.procsOf[cMicroRandom] = pids(micros...)
	nc, err := b.connect()
	if err != nil {
		return err
	}
	done, err := codec.Msgpack.Marshal(1)
	if err != nil {
		return err
	}
	bodies := make(map[time.Duration][]byte)
	for _, d := range work {
		if bodies[d], err = codec.Msgpack.AppendArgs(nil, []any{d}); err != nil {
			return err
		}
	}
	hdr := nats.Header{wire.HeaderMethod: {"Work"}}
	micro := contender{cMicroRandom, func(time.Duration) (float64, error) {
		return runWorkload(work, func(d time.Duration) error {
			r, err := nc.RequestMsg(&nats.Msg{Subject: microSubject + ".work", Header: hdr, Data: bodies[d]}, 10*time.Second)
			if err == nil && !bytes.Equal(r.Data, done) {
				err = fmt.Errorf("micro work reply %q", r.Data)
			}
			return err
		})
	}}
	return b.measure(rowUneven, seconds, least, rr, micro)
}
