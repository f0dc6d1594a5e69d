package limits

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Every error this package returns wraps one of them (or a
// context error), so callers match with errors.Is; the typed errors below carry
// the details for errors.As.
var (
	// ErrInvalidLimit reports a bad limit definition or bad SetOptions/PoolOptions:
	// capacity ≤ 0 or not finite, window ≤ 0, unknown algorithm, empty or duplicate
	// key, a ResourceLimit with a fractional capacity, a shared set whose stored
	// definitions differ from the given ones. NewSet, NewPool and UnmarshalLimits
	// return it.
	ErrInvalidLimit = errors.New("limits: invalid limit")

	// ErrInvalidAmount reports a request or usage amount that no limit can take:
	// negative, NaN or infinite, fractional where the algorithm counts whole units
	// (leaky bucket, sliding window, fixed window, resources), or a usage other
	// than 1 for an implicit CallLimit.
	ErrInvalidAmount = errors.New("limits: invalid amount")

	// ErrExceedsCapacity reports a request above a limit's capacity: it can never
	// be granted, so Acquire fails at once instead of waiting. The error is an
	// *ExceedsCapacityError naming the limit.
	ErrExceedsCapacity = errors.New("limits: requested amount exceeds capacity")

	// ErrWouldWait is returned by TryAcquire when the request does not fit now.
	ErrWouldWait = errors.New("limits: acquisition would wait")

	// ErrNotUpdated is returned by Release when a RateLimit (or a CallLimit
	// requested with more than 1) was never given its actual usage with Update.
	// Release has returned everything by then; the error is a *NotUpdatedError
	// naming the keys.
	ErrNotUpdated = errors.New("limits: acquisition released without update")

	// ErrReleased is returned by Update on an acquisition already released.
	ErrReleased = errors.New("limits: acquisition already released")

	// ErrClosed is returned by Acquire and TryAcquire on a closed Set, also to
	// callers that were waiting when Close was called.
	ErrClosed = errors.New("limits: set closed")

	// ErrInvalidPartition reports an acquisition of a set with per-partition
	// limits that names no partition (Acquire instead of AcquireIn), or a
	// partition name longer than MaxPartitionLen bytes.
	ErrInvalidPartition = errors.New("limits: invalid partition")
)

// ExceedsCapacityError is the error for a request that can never fit.
type ExceedsCapacityError struct {
	Key       string
	Requested float64
	Capacity  float64
}

func (e *ExceedsCapacityError) Error() string {
	return fmt.Sprintf("limits: requested amount %g exceeds capacity %g for limit %q", e.Requested, e.Capacity, e.Key)
}

// Unwrap makes errors.Is(err, ErrExceedsCapacity) hold.
func (e *ExceedsCapacityError) Unwrap() error { return ErrExceedsCapacity }

// NotUpdatedError lists the keys that Release found without an Update.
type NotUpdatedError struct {
	Keys []string // sorted
}

func (e *NotUpdatedError) Error() string {
	return fmt.Sprintf("limits: acquisition released without update of %s (counted as fully used)", quoteKeys(e.Keys))
}

// Unwrap makes errors.Is(err, ErrNotUpdated) hold.
func (e *NotUpdatedError) Unwrap() error { return ErrNotUpdated }

func quoteKeys(keys []string) string {
	q := make([]string, len(keys))
	for i, k := range keys {
		q[i] = fmt.Sprintf("%q", k)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidLimit}, args...)...)
}

func amountf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidAmount}, args...)...)
}
