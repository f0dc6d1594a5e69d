package balancer

import (
	"fmt"
	"testing"
)

// BenchmarkPick measures one dispatch: a Pick(0) and the Done of the picked
// slot, over a background load of 0-2 calls in flight per slot.
func BenchmarkPick(b *testing.B) {
	for _, alg := range allAlgorithms {
		for _, n := range []int{4, 4096} {
			b.Run(fmt.Sprintf("%s/workers=%d", alg, n), func(b *testing.B) {
				bal := mustNew(b, alg, n, Options{Seed: 1})
				backgroundLoad(bal, n)
				b.ReportAllocs()
				for b.Loop() {
					s, _ := bal.Pick(0)
					bal.Done(s)
				}
			})
		}
	}
}

// BenchmarkPickCapped is BenchmarkPick with a per-slot cap of 3, so slots
// leave and rejoin the eligible set.
func BenchmarkPickCapped(b *testing.B) {
	for _, alg := range allAlgorithms {
		for _, n := range []int{4, 4096} {
			b.Run(fmt.Sprintf("%s/workers=%d", alg, n), func(b *testing.B) {
				bal := mustNew(b, alg, n, Options{Seed: 1})
				backgroundLoad(bal, n)
				bal.Pick(3)
				b.ReportAllocs()
				for b.Loop() {
					if s, ok := bal.Pick(3); ok {
						bal.Done(s)
					}
				}
			})
		}
	}
}

// BenchmarkPickParallel shows the cost under contention: every goroutine
// dispatches through the same Balancer, as a pool's callers do.
func BenchmarkPickParallel(b *testing.B) {
	for _, alg := range allAlgorithms {
		b.Run(fmt.Sprintf("%s/workers=64", alg), func(b *testing.B) {
			bal := mustNew(b, alg, 64, Options{Seed: 1})
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					s, _ := bal.Pick(0)
					bal.Done(s)
				}
			})
		})
	}
}
