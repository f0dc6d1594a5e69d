package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/alitto/pond/v2"
	"github.com/panjf2000/ants/v2"

	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
)

// Rows and contenders of the thread-mode rows. Every contender multiplies by 10 on 4 workers: natsfleet through
// demo.DataProcessor.Process, the others in a closure.
const (
	rowThreadSeq  = "thread, sequential call"
	rowThreadPipe = "thread, pipelined, 100k in flight"
	cNatsfleet    = "natsfleet"
	cRawPool      = "raw goroutine pool"
	cPond         = "pond v2 result pool"
	cAnts         = "ants v2"
	threadWorkers = 4
	pipelineDepth = 100_000
)

// rawPool is the baseline a Go programmer writes by hand: worker goroutines on a shared channel, one reply channel
// per job.
type rawPool struct {
	jobs chan rawJob
	wg   sync.WaitGroup
}

type rawJob struct {
	v   int
	out chan int
}

func newRawPool(workers int) *rawPool {
	p := &rawPool{jobs: make(chan rawJob, 1024)}
	for range workers {
		p.wg.Go(func() {
			for j := range p.jobs {
				j.out <- j.v * 10
			}
		})
	}
	return p
}

func (p *rawPool) call(v int) chan int {
	out := make(chan int, 1)
	p.jobs <- rawJob{v, out}
	return out
}

func (p *rawPool) close() { close(p.jobs); p.wg.Wait() }

// antsCall runs v*10 on an ants pool and hands the result back on a channel, as the raw pool does.
func antsCall(p *ants.Pool, v int) (chan int, error) {
	out := make(chan int, 1)
	if err := p.Submit(func() { out <- v * 10 }); err != nil {
		return nil, err
	}
	return out, nil
}

func wrong(got, want int) error { return fmt.Errorf("wrong result %d, want %d", got, want) }

// threadContenders builds the four contenders, runs fn with them, and stops the pools after.
func threadContenders(fn func(nf *client.Pool, raw *rawPool, pp pond.ResultPool[int], ap *ants.Pool) error) error {
	nf, err := client.New(bg, demo.DataProcessorKind, client.Options{Mode: client.Thread, MaxWorkers: threadWorkers}, 10)
	if err != nil {
		return err
	}
	defer nf.Close()
	raw := newRawPool(threadWorkers)
	defer raw.close()
	pp := pond.NewResultPool[int](threadWorkers)
	defer pp.StopAndWait()
	ap, err := ants.NewPool(threadWorkers)
	if err != nil {
		return err
	}
	defer ap.Release()
	return fn(nf, raw, pp, ap)
}

func (b *bench) threadSequential() error {
	ctx := context.Background()
	return threadContenders(func(nf *client.Pool, raw *rawPool, pp pond.ResultPool[int], ap *ants.Pool) error {
		seq := func(op func(i int) error) func(time.Duration) (float64, error) {
			return func(d time.Duration) (float64, error) {
				n, el, err := timed(d, 256, op)
				return perCall(n, el), err
			}
		}
		return b.measure(rowThreadSeq, nsPerCall,
			contender{cNatsfleet, seq(func(i int) error {
				v, err := client.Call[int](nf, "Process", i).Result(ctx)
				if err == nil && v != i*10 {
					err = wrong(v, i*10)
				}
				return err
			})},
			contender{cRawPool, seq(func(i int) error {
				if v := <-raw.call(i); v != i*10 {
					return wrong(v, i*10)
				}
				return nil
			})},
			contender{cPond, seq(func(i int) error {
				v, err := pp.Submit(func() int { return i * 10 }).Wait()
				if err == nil && v != i*10 {
					err = wrong(v, i*10)
				}
				return err
			})},
			contender{cAnts, seq(func(i int) error {
				out, err := antsCall(ap, i)
				if err != nil {
					return err
				}
				if v := <-out; v != i*10 {
					return wrong(v, i*10)
				}
				return nil
			})},
		)
	})
}

// pipelined submits batches of pipelineDepth calls and waits for each whole batch, until d has passed: at the end
// of a submission 100k calls are in flight. It returns calls per second.
func pipelined(d time.Duration, submit func(i int) error, wait func() error) (float64, error) {
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		for range pipelineDepth {
			if err := submit(n); err != nil {
				return 0, err
			}
			n++
		}
		if err := wait(); err != nil {
			return 0, err
		}
	}
	return perSec(n, time.Since(start)), nil
}

func (b *bench) threadPipelined() error {
	ctx := context.Background()
	return threadContenders(func(nf *client.Pool, raw *rawPool, pp pond.ResultPool[int], ap *ants.Pool) error {
		futs := make([]*client.Future[int], 0, pipelineDepth)
		outs := make([]chan int, 0, pipelineDepth)
		tasks := make([]pond.ResultTask[int], 0, pipelineDepth)
		base := 0 // value of the batch's first call
		waitOuts := func() error {
			for k, o := range outs {
				if v := <-o; v != (base+k)*10 {
					return wrong(v, (base+k)*10)
				}
			}
			base += len(outs)
			outs = outs[:0]
			return nil
		}
		return b.measure(rowThreadPipe, callsPerSec,
			contender{cNatsfleet, func(d time.Duration) (float64, error) {
				base = 0
				return pipelined(d, func(i int) error {
					futs = append(futs, client.Call[int](nf, "Process", i))
					return nil
				}, func() error {
					for k, f := range futs {
						v, err := f.Result(ctx)
						if err != nil {
							return err
						}
						if v != (base+k)*10 {
							return wrong(v, (base+k)*10)
						}
					}
					base += len(futs)
					clear(futs)
					futs = futs[:0]
					return nil
				})
			}},
			contender{cRawPool, func(d time.Duration) (float64, error) {
				base = 0
				return pipelined(d, func(i int) error {
					outs = append(outs, raw.call(i))
					return nil
				}, waitOuts)
			}},
			contender{cPond, func(d time.Duration) (float64, error) {
				base = 0
				return pipelined(d, func(i int) error {
					tasks = append(tasks, pp.Submit(func() int { return i * 10 }))
					return nil
				}, func() error {
					for k, t := range tasks {
						v, err := t.Wait()
						if err != nil {
							return err
						}
						if v != (base+k)*10 {
							return wrong(v, (base+k)*10)
						}
					}
					base += len(tasks)
					clear(tasks)
					tasks = tasks[:0]
					return nil
				})
			}},
			contender{cAnts, func(d time.Duration) (float64, error) {
				base = 0
				return pipelined(d, func(i int) error {
					out, err := antsCall(ap, i)
					outs = append(outs, out)
					return err
				}, waitOuts)
			}},
		)
	})
}
