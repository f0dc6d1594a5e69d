package balancer

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	const (
		goroutines = 16
		slots      = 8
		limit      = 3
		phases     = 20
		opsPerG    = 200
	)
	for _, alg := range allAlgorithms {
		t.Run(string(alg), func(t *testing.T) {
			t.Parallel()
			b := mustNew(t, alg, slots, Options{})
			var picks, dones atomic.Int64
			// Goroutine 1 alone changes membership: it replaces a live slot now
			// and then, as a pool replaces a lost worker.
			live := make([]int, slots)
			for i := range live {
				live[i] = i
			}
			var indices atomic.Int64 // slot indices ever used
			indices.Store(slots)
			// Each goroutine keeps its own calls in flight across phases;
			// between phases, with every goroutine parked, the counts must add
			// up exactly.
			inflight := make([][]int, goroutines)
			for phase := range phases {
				var wg sync.WaitGroup
				for g := range goroutines {
					wg.Go(func() {
						rng := rand.New(rand.NewPCG(uint64(phase), uint64(g)))
						mine := inflight[g]
						for range opsPerG {
							if g == 1 && rng.IntN(25) == 0 {
								k := rng.IntN(len(live))
								b.Remove(live[k])
								live[k] = b.Add()
								indices.Store(max(indices.Load(), int64(live[k]+1)))
								continue
							}
							if len(mine) > 0 && rng.IntN(2) == 0 {
								k := rng.IntN(len(mine))
								b.Done(mine[k])
								mine[k] = mine[len(mine)-1]
								mine = mine[:len(mine)-1]
								dones.Add(1)
								continue
							}
							s, ok := b.Pick(limit)
							if !ok {
								continue
							}
							picks.Add(1)
							mine = append(mine, s)
							if a := b.Active(s); a > limit {
								t.Errorf("Active(%d) = %d, above the cap %d", s, a, limit)
							}
							if g == 0 && rng.IntN(20) == 0 {
								if err := checkInvariants(b); err != nil {
									t.Error(err)
								}
							}
						}
						inflight[g] = mine
					})
				}
				wg.Wait()
				sum, n := 0, int(indices.Load())
				for s := range n {
					sum += b.Active(s)
				}
				if want := picks.Load() - dones.Load(); int64(sum) != want {
					t.Fatalf("phase %d: sum of active %d, picks-dones %d", phase, sum, want)
				}
				if sum > n*limit {
					t.Fatalf("phase %d: %d in flight, above %d slots x cap %d", phase, sum, n, limit)
				}
				if b.Len() != slots {
					t.Fatalf("phase %d: Len() = %d, want %d", phase, b.Len(), slots)
				}
				if err := checkInvariants(b); err != nil {
					t.Fatalf("phase %d: %v", phase, err)
				}
			}
			if got := b.Stats().TotalDispatched; got != uint64(picks.Load()) {
				t.Errorf("TotalDispatched = %d, want %d", got, picks.Load())
			}
			for _, mine := range inflight {
				for _, s := range mine {
					b.Done(s)
				}
			}
			for s := range int(indices.Load()) {
				if a := b.Active(s); a != 0 {
					t.Errorf("Active(%d) = %d after every Done", s, a)
				}
			}
		})
	}
}

func TestPickDoneDoNotAllocate(t *testing.T) {
	// Not parallel: AllocsPerRun counts the whole process's allocations.
	for _, alg := range allAlgorithms {
		for _, n := range []int{4, 4096} {
			b := mustNew(t, alg, n, Options{Seed: 1})
			backgroundLoad(b, n)
			for _, limit := range []int{0, 3} {
				b.Pick(limit) // settle the limit: changing it rebuilds once
				allocs := testing.AllocsPerRun(1000, func() {
					if s, ok := b.Pick(limit); ok {
						b.Done(s)
					}
				})
				if allocs != 0 {
					t.Errorf("%s, %d slots, limit %d: %v allocations per Pick+Done, want 0", alg, n, limit, allocs)
				}
			}
		}
	}
}

// backgroundLoad leaves slot s with min(s%3, what it got) calls in flight, a
// realistic mix of idle and busy workers.
func backgroundLoad(b *Balancer, n int) {
	for range 2 * n {
		b.Pick(0)
	}
	for s := range n {
		for b.Active(s) > s%3 {
			b.Done(s)
		}
	}
}
