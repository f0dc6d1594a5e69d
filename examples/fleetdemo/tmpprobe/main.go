package main

import (
	"context"
	"fmt"
	"time"

	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
)

func main() {
	ctx := context.Background()
	p, err := client.New(ctx, demo.ProgressWorkerKind, client.Options{Mode: client.Thread, MaxWorkers: 2, ShowProgress: true})
	if err != nil {
		panic(err)
	}
	f := client.Call[[]int](p, "ProcessItems", []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 100*time.Millisecond)
	r, err := f.Result(ctx)
	fmt.Println(r, err)
	p.Close()
	fmt.Println("closed")
}
