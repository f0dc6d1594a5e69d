package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/natsfleet/natsfleet/broker"
	"github.com/natsfleet/natsfleet/client"
	"github.com/natsfleet/natsfleet/examples/demo"
)

// The restart row: what a server restart costs a pipelined pool. A pool of 4 worker processes keeps 256 calls in
// flight for restartWindow, once on a steady server and once while its server goes down for restartDown, restarted
// in place (same port, same store) restartAt into the window. Every call must succeed with its result: the pool
// reconciles the calls whose requests or replies the outage lost. Were recovery free, the ratio of the two would be
// (window - down) / window; the stall is how much longer than the outage the calls stopped completing (the client's
// reconnect wait, the server's start, the reconcile).
const (
	rowRestart    = "process, 256 in flight, 4 s with a 1.5 s server restart"
	cNFSteady     = "natsfleet, steady server"
	cNFRestart    = "natsfleet, server restarted"
	cNFStall      = "natsfleet, stall beyond the outage"
	restartWindow = 4 * time.Second
	restartAt     = 500 * time.Millisecond
	restartDown   = 1500 * time.Millisecond
	restartDepth  = 256
)

func (b *bench) restart() error {
	port, err := freePort()
	if err != nil {
		return err
	}
	store, err := os.MkdirTemp("", "natsfleet-bench-restart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(store)
	srv, err := b.startChild(roleServer, childConfig{Port: port, Store: store})
	if err != nil {
		return err
	}
	defer srv.stop()
	nc, err := broker.Connect(broker.Options{URL: srv.ready})
	if err != nil {
		return err
	}
	defer nc.Close()
	p, err := client.New(bg, demo.DataProcessorKind, client.Options{Mode: client.Process, MaxWorkers: 4,
		MaxQueuedTasks: pipeQueued, Conn: nc, Logger: quietLogger}, 10)
	if err != nil {
		return err
	}
	defer p.Close()
	ring := ringCallsStalled(p, restartDepth)
	steady := func(time.Duration) (float64, error) {
		v, _, err := ring(restartWindow)
		return v, err
	}
	var stalls []float64
	restarted := func(time.Duration) (float64, error) {
		up := make(chan error, 1)
		timer := time.AfterFunc(restartAt, func() {
			if err := srv.send("restart %d", restartDown.Milliseconds()); err != nil {
				up <- err
				return
			}
			_, err := srv.expect("UP", 30*time.Second)
			up <- err
		})
		defer timer.Stop()
		v, stall, err := ring(restartWindow)
		if err != nil {
			return 0, err
		}
		if err := <-up; err != nil {
			return 0, err
		}
		stalls = append(stalls, (stall - restartDown).Seconds())
		// The next repetition starts with the whole pool.
		return v, waitFor(30*time.Second, func() error {
			if st := p.Stats(); st.TotalWorkers != 4 {
				return fmt.Errorf("pool has %d workers after the restart, want 4", st.TotalWorkers)
			}
			return nil
		})
	}
	if err := b.measure(rowRestart, callsPerSec, contender{cNFSteady, steady},
		contender{cNFRestart, restarted}); err != nil {
		return err
	}
	st := p.Stats()
	r := &result{Values: stalls}
	r.summarize()
	b.record(rowRestart, cNFStall, seconds, r.Median, fmt.Sprintf("median of %d (%.2f–%.2f); reconciles %d, calls sent again %d",
		len(stalls), r.Min, r.Max, st.Reconciles, st.Resent))
	return nil
}

// waitFor polls cond until it returns nil, for at most d.
func waitFor(d time.Duration, cond func() error) error {
	ctx, cancel := context.WithTimeout(bg, d)
	defer cancel()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freePort returns a loopback port free at the time of the call.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
