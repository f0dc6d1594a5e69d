package client

import (
	"bytes"
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/natsfleet/natsfleet/examples/demo"
	"github.com/natsfleet/natsfleet/internal/testutil"
)

// On an output that is not a terminal, progress is one line when a bar starts and one when it completes.
func TestShowProgressWritesLinesOffTerminal(t *testing.T) {
	var out testutil.SyncBuffer
	old := progressOutput
	progressOutput = &out
	defer func() { progressOutput = old }()

	ctx := context.Background()
	p, err := New(ctx, demo.ProgressWorkerKind, Options{MaxWorkers: 2, ShowProgress: true})
	if err != nil {
		t.Fatal(err)
	}
	futs := []*Future[[]int]{
		Call[[]int](p, "ProcessItems", []int{1, 2, 3}, time.Millisecond),
		Call[[]int](p, "ProcessItems", []int{4, 5}, time.Millisecond),
	}
	got, err := Gather(ctx, futs, ShowGatherProgress("Gathering"))
	if err != nil || len(got[0]) != 3 || len(got[1]) != 2 {
		t.Fatalf("Gather = %v, %v", got, err)
	}
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, re := range []string{
		`(?m)^Processing \[ProcessItems on \S+\]: started, 3 steps$`,
		`(?m)^Processing \[ProcessItems on \S+\]: done 3/3 in \S+$`,
		`(?m)^Processing \[ProcessItems on \S+\]: started, 2 steps$`,
		`(?m)^Processing \[ProcessItems on \S+\]: done 2/2 in \S+$`,
		`(?m)^Gathering: 2/2 done in \S+$`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("progress output lacks %s:\n%s", re, text)
		}
	}
	if bytes.ContainsRune([]byte(text), '\x1b') {
		t.Errorf("progress output off a terminal has escape codes:\n%q", text)
	}
}
