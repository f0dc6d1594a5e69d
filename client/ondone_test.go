package client_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
)

func TestOnDoneAfterCompletionRunsAtOnce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		value   int
		want    int
		wantErr error
	}{
		{"result", 4, 8, nil},
		{"error", -4, 0, demo.ErrNegative},
	}
	p := newPool(t, demo.RiskyWorkerKind, client.Options{Mode: client.Thread, MaxWorkers: 2})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := client.Call[int](p, "RiskyOperation", tt.value)
			<-f.Done()
			// Written by the callback and read here without a lock: the race detector fails the test unless the
			// callback ran in this goroutine, before OnDone returned.
			var got int
			var gotErr error
			ran := false
			f.OnDone(func(v int, err error) { got, gotErr, ran = v, err, true })
			if !ran || got != tt.want || !errors.Is(gotErr, tt.wantErr) {
				t.Fatalf("OnDone on a done future: ran %v with (%d, %v), want (%d, %v) at once", ran, got, gotErr, tt.want, tt.wantErr)
			}
		})
	}
}

func TestOnDoneRunsCallbacksInOrderAfterDone(t *testing.T) {
	t.Parallel()
	p := newPool(t, demo.SlowWorkerKind, client.Options{Mode: client.Thread, MaxWorkers: 1})
	f := client.Call[demo.Identity](p, "Process", time.Hour)
	var (
		mu    sync.Mutex
		order []int
		errs  []error
	)
	for i := range 3 {
		f.OnDone(func(_ demo.Identity, err error) {
			select {
			case <-f.Done():
			default:
				t.Errorf("callback %d ran before Done was closed", i)
			}
			mu.Lock()
			order, errs = append(order, i), append(errs, err)
			mu.Unlock()
		})
	}
	mu.Lock()
	if len(order) != 0 {
		t.Fatalf("callbacks ran on a pending call: %v", order)
	}
	mu.Unlock()
	if !f.Cancel() {
		t.Fatal("Cancel of a running call returned false")
	}
	mu.Lock()
	defer mu.Unlock()
	// Cancel completes the future in this goroutine, so its callbacks have run when it returns.
	if !slices.Equal(order, []int{0, 1, 2}) {
		t.Fatalf("callback order = %v, want [0 1 2]", order)
	}
	for i, err := range errs {
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("callback %d got %v, want context.Canceled", i, err)
		}
	}
}

func TestStopWaitsForOnDoneCallbacks(t *testing.T) {
	t.Parallel()
	p, err := client.New(context.Background(), demo.DataProcessorKind, client.Options{Mode: client.Thread, MaxWorkers: 4}, 10)
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	var sum, ran atomic.Int64
	for i := range n {
		client.Call[int](p, "Process", i).OnDone(func(v int, err error) {
			if err != nil {
				t.Errorf("call %d: %v", i, err)
			}
			time.Sleep(100 * time.Microsecond) // callbacks still running when Stop is called
			sum.Add(int64(v))
			ran.Add(1)
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if ran.Load() != n || sum.Load() != 10*n*(n-1)/2 {
		t.Fatalf("after Stop: %d callbacks ran with sum %d, want %d with sum %d", ran.Load(), sum.Load(), n, 10*n*(n-1)/2)
	}
}
