package client_test

import (
	"context"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
)

// rawPool is the baseline a Go programmer would write by hand: worker goroutines on a shared channel, one reply
// channel per job, doing the same multiplication as DataProcessor.Process.
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

func (p *rawPool) close() { close(p.jobs); p.wg.Wait() }

func (p *rawPool) call(v int) chan int {
	out := make(chan int, 1)
	p.jobs <- rawJob{v, out}
	return out
}

const pipelineDepth = 100_000

// BenchmarkRoundTrip compares one Call+Result on a thread pool with the raw pool's send+receive.
func BenchmarkRoundTrip(b *testing.B) {
	b.Run("raw", func(b *testing.B) {
		p := newRawPool(4)
		defer p.close()
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if <-p.call(i) != i*10 {
				b.Fatal("wrong result")
			}
		}
	})
	b.Run("thread", func(b *testing.B) {
		p, err := client.New(context.Background(), demo.DataProcessorKind, client.Options{MaxWorkers: 4}, 10)
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		ctx := context.Background()
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if v, err := client.Call[int](p, "Process", i).Result(ctx); err != nil || v != i*10 {
				b.Fatal(v, err)
			}
		}
	})
}

// BenchmarkPipelined compares throughput with up to 100k calls in flight on 4 workers.
func BenchmarkPipelined(b *testing.B) {
	b.Run("raw", func(b *testing.B) {
		p := newRawPool(4)
		defer p.close()
		outs := make([]chan int, 0, pipelineDepth)
		b.ReportAllocs()
		flush := func() {
			for _, o := range outs {
				<-o
			}
			outs = outs[:0]
		}
		for i := 0; b.Loop(); i++ {
			outs = append(outs, p.call(i))
			if len(outs) == pipelineDepth {
				flush()
			}
		}
		flush()
	})
	b.Run("thread", func(b *testing.B) {
		p, err := client.New(context.Background(), demo.DataProcessorKind, client.Options{MaxWorkers: 4}, 10)
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		ctx := context.Background()
		futs := make([]*client.Future[int], 0, pipelineDepth)
		b.ReportAllocs()
		flush := func() {
			for _, f := range futs {
				if _, err := f.Result(ctx); err != nil {
					b.Fatal(err)
				}
			}
			futs = futs[:0]
		}
		for i := 0; b.Loop(); i++ {
			futs = append(futs, client.Call[int](p, "Process", i))
			if len(futs) == pipelineDepth {
				flush()
			}
		}
		flush()
	})
}

// BenchmarkProcessCallers measures goroutines that each make one call at a time to a pool of 4 process workers: the
// pattern of a program fanning out requests from many goroutines, where calls held back for company cost each caller
// latency and gain the pool batches.
func BenchmarkProcessCallers(b *testing.B) {
	p, err := client.New(context.Background(), demo.DataProcessorKind, client.Options{Mode: client.Process, MaxWorkers: 4}, 10)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	for _, callers := range []int{1, 16, 64} {
		b.Run(strconv.Itoa(callers), func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			b.SetParallelism((callers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
			b.RunParallel(func(pb *testing.PB) {
				for i := 0; pb.Next(); i++ {
					if v, err := client.Call[int](p, "Process", i).Result(ctx); err != nil || v != i*10 {
						b.Error(v, err)
						return
					}
				}
			})
		})
	}
}
