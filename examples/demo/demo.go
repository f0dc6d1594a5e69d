// Package demo holds the worker kinds of concurry's "Worker Pools" guide, written in Go: the example client, the
// cmd/worker binary, the examples and the integration tests all use them, so the same kinds run in every mode.
package demo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/natsfleet/natsfleet/fleet"
	"github.com/natsfleet/natsfleet/limits"
)

// DataProcessor multiplies values and counts what it processed.
type DataProcessor struct {
	multiplier int
	processed  int
}

// NewDataProcessor builds a DataProcessor.
func NewDataProcessor(multiplier int) (*DataProcessor, error) {
	if multiplier == 0 {
		return nil, errors.New("demo: multiplier must not be 0")
	}
	return &DataProcessor{multiplier: multiplier}, nil
}

// Process returns value × multiplier.
func (d *DataProcessor) Process(value int) int {
	d.processed++
	return value * d.multiplier
}

// Processed is how many values this worker processed.
func (d *DataProcessor) Processed() int { return d.processed }

// WhoAmI returns the worker's index in its pool and its ID.
func (d *DataProcessor) WhoAmI(ctx context.Context) (Identity, error) {
	info, ok := fleet.CallInfo(ctx)
	if !ok {
		return Identity{}, errors.New("demo: not running in a worker")
	}
	return Identity{Index: info.WorkerIndex, ID: info.WorkerID}, nil
}

// Echo returns data unchanged (for payload-size demos).
func (d *DataProcessor) Echo(data []byte) []byte { return data }

// Blob returns n bytes (for payload-size demos).
func (d *DataProcessor) Blob(n int) []byte { return make([]byte, n) }

// Identity says which worker ran a call.
type Identity struct {
	Index int    `json:"index"`
	ID    string `json:"id"`
}

// SlowWorker sleeps, for balancing and cancellation demos.
type SlowWorker struct{}

// NewSlowWorker builds a SlowWorker.
func NewSlowWorker() *SlowWorker { return &SlowWorker{} }

// Process sleeps d (or until the call is cancelled) and reports the worker that ran it.
func (s *SlowWorker) Process(ctx context.Context, d time.Duration) (Identity, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return Identity{}, ctx.Err()
	}
	info, _ := fleet.CallInfo(ctx)
	return Identity{Index: info.WorkerIndex, ID: info.WorkerID}, nil
}

// Stubborn sleeps d ignoring cancellation, for demos of calls that do not honour their context.
func (s *SlowWorker) Stubborn(d time.Duration) int {
	time.Sleep(d)
	return 1
}

// Count counts to n, reporting progress at every step.
func (s *SlowWorker) Count(ctx context.Context, n int) int {
	bar := fleet.Progress(ctx, int64(n), "Counting")
	for range n {
		bar.Add(1)
	}
	bar.Finish()
	return n
}

// ErrNegative is RiskyWorker's error; registered so it keeps its identity across processes.
var ErrNegative = errors.New("demo: negative value not allowed")

// RiskyWorker fails on negative values and panics on the value -13.
type RiskyWorker struct{}

// NewRiskyWorker builds a RiskyWorker.
func NewRiskyWorker() *RiskyWorker { return &RiskyWorker{} }

// RiskyOperation doubles value; negative values fail with ErrNegative, -13 panics.
func (r *RiskyWorker) RiskyOperation(value int) (int, error) {
	if value == -13 {
		panic("demo: unlucky value")
	}
	if value < 0 {
		return 0, fmt.Errorf("%w: %d", ErrNegative, value)
	}
	return value * 2, nil
}

// ErrTemporary is FlakyWorker's transient failure.
var ErrTemporary = errors.New("demo: temporary failure")

// FlakyWorker fails a share of its calls, for retry demos.
type FlakyWorker struct {
	failRate float64
	attempts atomic.Int64
}

// NewFlakyWorker builds a FlakyWorker failing failRate of its calls.
func NewFlakyWorker(failRate float64) *FlakyWorker { return &FlakyWorker{failRate: failRate} }

// FlakyOperation upper-cases data, failing with ErrTemporary at the worker's rate.
func (f *FlakyWorker) FlakyOperation(data string) (string, error) {
	f.attempts.Add(1)
	if rand.Float64() < f.failRate {
		return "", ErrTemporary
	}
	return strings.ToUpper(data), nil
}

// Attempts is how many times FlakyOperation ran on this worker.
func (f *FlakyWorker) Attempts() int64 { return f.attempts.Load() }

// ProgressWorker doubles batches of items and reports progress per item.
type ProgressWorker struct{}

// NewProgressWorker builds a ProgressWorker.
func NewProgressWorker() *ProgressWorker { return &ProgressWorker{} }

// ProcessItems doubles each item, pausing per item, with a progress bar.
func (p *ProgressWorker) ProcessItems(ctx context.Context, items []int, pause time.Duration) ([]int, error) {
	bar := fleet.Progress(ctx, int64(len(items)), "Processing")
	out := make([]int, 0, len(items))
	for _, it := range items {
		if err := sleep(ctx, pause); err != nil {
			return nil, err
		}
		out = append(out, it*2)
		bar.Add(1)
	}
	bar.Finish()
	return out, nil
}

// GracefulWorker runs long tasks that stop early when told to shut down.
type GracefulWorker struct{ stop atomic.Bool }

// NewGracefulWorker builds a GracefulWorker.
func NewGracefulWorker() *GracefulWorker { return &GracefulWorker{} }

// LongTask doubles items one by one, stopping early after Shutdown.
func (g *GracefulWorker) LongTask(ctx context.Context, items []int, pause time.Duration) ([]int, error) {
	var out []int
	for _, it := range items {
		if g.stop.Load() {
			break
		}
		if err := sleep(ctx, pause); err != nil {
			return out, err
		}
		out = append(out, it*2)
	}
	return out, nil
}

// Shutdown asks running and later LongTasks to stop early.
func (g *GracefulWorker) Shutdown() { g.stop.Store(true) }

// APIWorker calls a (simulated) external API under the pool's shared limits.
type APIWorker struct{ apiKey string }

// NewAPIWorker builds an APIWorker.
func NewAPIWorker(apiKey string) *APIWorker { return &APIWorker{apiKey: apiKey} }

// CallAPI takes 100 "tokens" from the shared budget, "calls" the API, and reports the tokens it really used.
func (a *APIWorker) CallAPI(ctx context.Context, prompt string) (string, error) {
	acq, err := fleet.Limits(ctx).Acquire(ctx, limits.Request{"tokens": 100})
	if err != nil {
		return "", err
	}
	defer acq.Release()
	if err := acq.Update(limits.Usage{"tokens": float64(min(100, 10+len(prompt)))}); err != nil {
		return "", err
	}
	return "response to " + prompt, nil
}

// DatabaseWorker runs queries holding one of the pool's shared connections.
type DatabaseWorker struct{}

// NewDatabaseWorker builds a DatabaseWorker.
func NewDatabaseWorker() *DatabaseWorker { return &DatabaseWorker{} }

// Query holds a "connections" slot for d and returns when it took it (Unix ms) and when it let go.
func (d *DatabaseWorker) Query(ctx context.Context, sql string, hold time.Duration) (Span, error) {
	acq, err := fleet.Limits(ctx).Acquire(ctx, limits.Request{"connections": 1})
	if err != nil {
		return Span{}, err
	}
	defer acq.Release()
	s := Span{Start: time.Now().UnixMilli()}
	if err := sleep(ctx, hold); err != nil {
		return Span{}, err
	}
	s.End = time.Now().UnixMilli()
	return s, nil
}

// Span is a time interval in Unix milliseconds.
type Span struct {
	Start int64 `json:"start"`
	End   int64 `json:"end"`
}

// HealthCheckedWorker doubles values while healthy; the guide's health-checking example.
type HealthCheckedWorker struct{ unhealthy atomic.Bool }

// NewHealthCheckedWorker builds a healthy HealthCheckedWorker.
func NewHealthCheckedWorker() *HealthCheckedWorker { return &HealthCheckedWorker{} }

// ErrUnhealthy is what an unhealthy worker answers.
var ErrUnhealthy = errors.New("demo: worker unhealthy")

// Process doubles data, or fails while the worker is unhealthy.
func (h *HealthCheckedWorker) Process(data int) (int, error) {
	if h.unhealthy.Load() {
		return 0, ErrUnhealthy
	}
	return data * 2, nil
}

// HealthCheck reports whether the worker is healthy.
func (h *HealthCheckedWorker) HealthCheck() bool { return !h.unhealthy.Load() }

// Break makes the worker unhealthy.
func (h *HealthCheckedWorker) Break() { h.unhealthy.Store(true) }

// Fetcher, Processor and Storer form the guide's three-pool pipeline.
type (
	Fetcher   struct{}
	Processor struct{}
	Storer    struct{ stored atomic.Int64 }
)

// Document is what flows through the pipeline.
type Document struct {
	URL   string `json:"url"`
	Body  string `json:"body"`
	Words int    `json:"words"`
}

// NewFetcher builds a Fetcher.
func NewFetcher() *Fetcher { return &Fetcher{} }

// Fetch "downloads" url.
func (f *Fetcher) Fetch(url string) Document {
	return Document{URL: url, Body: "content of " + url}
}

// NewProcessor builds a Processor.
func NewProcessor() *Processor { return &Processor{} }

// Process counts the words of a document.
func (p *Processor) Process(d Document) Document {
	d.Words = len(strings.Fields(d.Body))
	return d
}

// NewStorer builds a Storer.
func NewStorer() *Storer { return &Storer{} }

// Store "saves" a document and returns its record ID.
func (s *Storer) Store(d Document) string {
	return fmt.Sprintf("record-%d:%s:%d", s.stored.Add(1), d.URL, d.Words)
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// The kinds, registered by name so worker binaries and child processes can build them.
var (
	DataProcessorKind  = fleet.Register("DataProcessor", NewDataProcessor)
	SlowWorkerKind     = fleet.Register("SlowWorker", NewSlowWorker)
	RiskyWorkerKind    = fleet.Register("RiskyWorker", NewRiskyWorker)
	FlakyWorkerKind    = fleet.Register("FlakyWorker", NewFlakyWorker)
	ProgressWorkerKind = fleet.Register("ProgressWorker", NewProgressWorker)
	GracefulWorkerKind = fleet.Register("GracefulWorker", NewGracefulWorker)
	APIWorkerKind      = fleet.Register("APIWorker", NewAPIWorker)
	DatabaseWorkerKind = fleet.Register("DatabaseWorker", NewDatabaseWorker)
	FetcherKind        = fleet.Register("Fetcher", NewFetcher)
	HealthCheckedKind  = fleet.Register("HealthCheckedWorker", NewHealthCheckedWorker)
	ProcessorKind      = fleet.Register("Processor", NewProcessor)
	StorerKind         = fleet.Register("Storer", NewStorer)
)

func init() {
	fleet.RegisterError(ErrNegative)
	fleet.RegisterError(ErrTemporary)
	fleet.RegisterError(ErrUnhealthy)
}
