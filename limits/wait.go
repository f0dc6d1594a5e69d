package limits

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// untilChange is a wait with no known end: only a change of state (a release)
// can end it.
const untilChange = math.MaxInt64

// sleep waits for wake to close, d nanoseconds (untilChange: no timer), ctx, or
// done.
func sleep(ctx context.Context, wake, done <-chan struct{}, d int64) error {
	var timer <-chan time.Time
	if d < untilChange {
		t := time.NewTimer(time.Duration(d))
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-wake:
	case <-timer:
	case <-ctx.Done():
		return ctx.Err()
	case <-done:
		return ErrClosed
	}
	return nil
}

func waitErr(key string, err error) error {
	if errors.Is(err, ErrClosed) {
		return err
	}
	return fmt.Errorf("limits: waiting for limit %q: %w", key, err)
}

func wouldWait(key string, d int64) error {
	if d >= untilChange {
		return fmt.Errorf("%w: limit %q is held", ErrWouldWait, key)
	}
	return fmt.Errorf("%w: limit %q frees up in %v", ErrWouldWait, key, time.Duration(d))
}

// blocker accumulates why an acquisition cannot proceed: the first limit
// that blocks, and the longest wait (untilChange dominates only when no limit
// has a known wait, since a timer is needed for those anyway).
type blocker struct {
	key  string
	wait int64 // 0: not blocked
}

func (b *blocker) add(key string, w int64) {
	if w == 0 {
		return
	}
	if b.wait == 0 {
		b.key = key
	}
	if b.wait == 0 || b.wait == untilChange || (w != untilChange && w > b.wait) {
		b.wait = w
	}
}
