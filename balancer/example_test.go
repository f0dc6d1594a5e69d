package balancer_test

import (
	"encoding/json"
	"fmt"

	"github.com/natsfleet/natsfleet/balancer"
)

func ExampleNew() {
	b, err := balancer.New(balancer.RoundRobin, 5, balancer.Options{})
	if err != nil {
		panic(err)
	}
	for range 7 {
		slot, _ := b.Pick(0)
		fmt.Print(slot, " ")
		b.Done(slot)
	}
	fmt.Println()
	// Output: 0 1 2 3 4 0 1
}

func ExampleBalancer_Take() {
	// Calls that go to their workers four at a time: the first of four is picked, the others take its slot.
	b, _ := balancer.New(balancer.RoundRobin, 3, balancer.Options{})
	slot := -1
	var slots []int
	for i := range 12 {
		if i%4 == 0 || !b.Take(slot, 0) {
			slot, _ = b.Pick(0)
		}
		slots = append(slots, slot)
	}
	fmt.Println(slots, b.Stats().TotalDispatched)
	// Output: [0 0 0 0 1 1 1 1 2 2 2 2] 12
}

func ExampleBalancer_Pick() {
	// Three workers, at most two calls in flight on each (max_queued_tasks).
	b, _ := balancer.New(balancer.LeastActive, 3, balancer.Options{})
	const perWorker = 2

	slow, _ := b.Pick(perWorker) // a long call keeps worker 0 busy
	for range 4 {
		slot, _ := b.Pick(perWorker) // quick calls go to the idle workers
		fmt.Print(slot, " ")
		b.Done(slot)
	}
	fmt.Println("| slow call on", slow)

	for range 5 {
		b.Pick(perWorker) // fill every worker up to the cap
	}
	if _, ok := b.Pick(perWorker); !ok {
		fmt.Println("all workers full: the call stays queued")
	}
	b.Done(slow)
	slot, ok := b.Pick(perWorker)
	fmt.Println("after Done:", slot, ok)
	// Output:
	// 1 2 1 2 | slow call on 0
	// all workers full: the call stays queued
	// after Done: 0 true
}

func ExampleBalancer_Add() {
	b, _ := balancer.New(balancer.LeastTotal, 2, balancer.Options{})
	for range 10 {
		slot, _ := b.Pick(0)
		b.Done(slot)
	}
	// Worker 0 is lost and replaced. Its replacement reuses index 0 and joins
	// the rotation instead of taking every call until it has caught up.
	b.Remove(0)
	replacement := b.Add()
	for range 4 {
		slot, _ := b.Pick(0)
		fmt.Print(slot, " ")
		b.Done(slot)
	}
	fmt.Println("| replacement:", replacement, "totals:", b.Stats().TotalCalls)
	// Output: 1 0 1 0 | replacement: 0 totals: map[0:2 1:7]
}

func ExampleBalancer_Stats() {
	b, _ := balancer.New(balancer.LeastActive, 3, balancer.Options{})
	for range 4 {
		b.Pick(0)
	}
	b.Done(1)
	data, _ := json.Marshal(b.Stats())
	fmt.Println(string(data))
	// Output: {"algorithm":"LeastActiveLoad","total_dispatched":4,"active_calls":{"0":2,"1":0,"2":1},"total_active":3}
}

func ExampleParseAlgorithm() {
	for _, name := range []string{"rr", "active", "LeastTotalLoad", "rand", "fastest"} {
		alg, err := balancer.ParseAlgorithm(name)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("%s -> %s (%s)\n", name, alg, alg.Name())
	}
	// Output:
	// rr -> round_robin (RoundRobin)
	// active -> least_active (LeastActiveLoad)
	// LeastTotalLoad -> least_total (LeastTotalLoad)
	// rand -> random (Random)
	// balancer: unknown algorithm "fastest"; accepted: round_robin (rr, RoundRobin), least_active (active, LeastActiveLoad), least_total (total, LeastTotalLoad), random (rand)
}
