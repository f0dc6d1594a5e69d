package client

import (
	"fmt"
	"time"
)

// rateWindow is how far back a bar's rate looks: long enough to smooth the cadence of progress events (one per
// fleet.ProgressInterval at most), short enough to follow a change of pace within seconds.
const rateWindow = 5 * time.Second

// progressRate is a bar's pace, computed from the times its events arrived: the rate over the last rateWindow and
// the time left at that rate. Events arrive in order, so times only grow; every method takes the time explicitly.
type progressRate struct {
	first sample
	// recent are the events since rateWindow before the newest, plus the one before them, which anchors a rate
	// over the whole window; oldest first. Events come at most once per fleet.ProgressInterval, so it stays short.
	recent []sample
}

type sample struct {
	at time.Time
	n  int64
}

// observe records that the bar stood at n steps at now.
func (r *progressRate) observe(now time.Time, n int64) {
	s := sample{at: now, n: n}
	if len(r.recent) == 0 {
		r.first = s
	}
	r.recent = append(r.recent, s)
	cut := now.Add(-rateWindow)
	drop := 0
	for drop+1 < len(r.recent) && !r.recent[drop+1].at.After(cut) {
		drop++
	}
	r.recent = append(r.recent[:0], r.recent[drop:]...)
}

// rate is the steps per second over the last rateWindow up to now: from the newest event at or before its start (or
// the first event, when the bar is younger) to now. Measuring up to now rather than to the last event lets the rate
// fall while the bar is stalled. 0 before any progress.
func (r *progressRate) rate(now time.Time) float64 {
	if len(r.recent) == 0 {
		return 0
	}
	ref := r.recent[0]
	for _, s := range r.recent[1:] {
		if s.at.After(now.Add(-rateWindow)) {
			break
		}
		ref = s
	}
	last := r.recent[len(r.recent)-1]
	span := now.Sub(ref.at)
	if span <= 0 || last.n <= ref.n {
		return 0
	}
	return float64(last.n-ref.n) / span.Seconds()
}

// average is the steps per second from the first event to the last: the pace of a finished bar.
func (r *progressRate) average() float64 {
	if len(r.recent) == 0 {
		return 0
	}
	last := r.recent[len(r.recent)-1]
	span := last.at.Sub(r.first.at)
	if span <= 0 || last.n <= r.first.n {
		return 0
	}
	return float64(last.n-r.first.n) / span.Seconds()
}

// elapsed is the time from the first event to the last.
func (r *progressRate) elapsed() time.Duration {
	if len(r.recent) == 0 {
		return 0
	}
	return r.recent[len(r.recent)-1].at.Sub(r.first.at)
}

// timeLeft is how long the steps from n to total take at rate steps per second; false when unknown (no total, or no
// pace yet).
func timeLeft(n, total int64, rate float64) (time.Duration, bool) {
	if total <= 0 || rate <= 0 {
		return 0, false
	}
	return time.Duration(float64(max(0, total-n)) / rate * float64(time.Second)), true
}

// formatRate writes a rate with three significant digits or so ("0.25", "12.5", "250"), for "/s" (bars) or
// " items/s" (lines) to follow.
func formatRate(rate float64) string {
	switch {
	case rate >= 100:
		return fmt.Sprintf("%.0f", rate)
	case rate >= 10:
		return fmt.Sprintf("%.1f", rate)
	}
	return fmt.Sprintf("%.2f", rate)
}

// rateSuffix is ", " and the rate for the line that ends a bar, or nothing when the bar ran in no measurable time.
func rateSuffix(rate float64) string {
	if rate <= 0 {
		return ""
	}
	return ", " + formatRate(rate) + " items/s"
}

// formatLeft writes a time left in whole seconds ("<1s" below one): a countdown needs no more.
func formatLeft(d time.Duration, known bool) string {
	switch {
	case !known:
		return "?"
	case d < time.Second:
		return "<1s"
	}
	return d.Round(time.Second).String()
}
