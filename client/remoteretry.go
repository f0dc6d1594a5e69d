package client

import (
	"time"

	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/fleet"
)

// replied takes the outcome of a call the worker answered: it completes the call or, when its retry policy says so,
// sends it again to the same worker. Retries of remote calls are driven from here because predicates cannot travel
// to another process; the call keeps its balancer slot meanwhile, so the pool's statistics count it once.
func (w *remoteWorker) replied(c *call, cd codec.Codec, raw []byte, err error) {
	rp := c.Retry
	if rp == nil {
		w.resolve(c, cd, raw, err)
		return
	}
	rc := c.rc
	rc.attempt++
	if err == nil && rp.Until != nil {
		var v any
		if derr := cd.Unmarshal(raw, &v); derr != nil {
			err = derr
		} else if uerr := rp.Until(v); uerr != nil {
			if rc.verr == nil {
				rc.verr = &fleet.ValidationError{Method: c.method}
			}
			rc.verr.Results = append(rc.verr.Results, v)
			rc.verr.Errors = append(rc.verr.Errors, uerr)
			err = rc.verr
		}
	}
	if err == nil || int(rc.attempt) >= rp.Attempts || (err != rc.verr && rp.Retry != nil && !rp.Retry(err)) {
		w.resolve(c, cd, raw, err)
		return
	}
	d := time.Duration(0)
	if rp.Wait != nil {
		d = rp.Wait(int(rc.attempt))
	}
	ctx := c.pool.ctx
	go func() {
		var serr error
		if rp.Sleep != nil {
			serr = rp.Sleep(ctx, d)
		} else {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				serr = ctx.Err()
			}
			t.Stop()
		}
		if serr != nil {
			w.fail(c, err)
			return
		}
		if !c.settled() {
			w.publish(c, 0)
		}
	}()
}

// resolve completes a call with its encoded result (raw, in codec cd) or an error.
func (w *remoteWorker) resolve(c *call, cd codec.Codec, raw []byte, err error) {
	w.done(c)
	c.completeRemote(cd, raw, err)
}
