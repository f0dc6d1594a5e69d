package client

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/natsfleet/natsfleet/codec"
	"github.com/natsfleet/natsfleet/internal/actor"
	"github.com/natsfleet/natsfleet/internal/wire"
)

// replyMux receives the replies of every call made on one connection through one wildcard subscription, and routes
// them to their calls by the last token of the reply subject. Pending calls live in sharded maps so concurrent
// callers and the reply goroutine rarely meet on a lock.
type replyMux struct {
	nc     *nats.Conn
	id     string // call IDs are id + counter, unique in the fleet
	prefix string // reply subjects are prefix + counter (base 36)
	sub    *nats.Subscription
	next   atomic.Uint64 // reply subject counters
	ids    atomic.Uint64 // call ID counters
	shards [muxShards]muxShard
	refs   int // guarded by muxes
	// batch holds the entries of the reply batch being delivered; only the subscription's goroutine touches it.
	batch  []wire.BatchReply
	fences fences
}

const muxShards = 64

type muxShard struct {
	mu sync.Mutex
	m  map[uint64]*call
	_  [40]byte // keep shards on separate cache lines
}

var muxes = struct {
	sync.Mutex
	m map[*nats.Conn]*replyMux
}{m: make(map[*nats.Conn]*replyMux)}

// acquireMux returns the connection's mux, creating it on first use; releaseMux drops it after its last user.
func acquireMux(nc *nats.Conn) (*replyMux, error) {
	muxes.Lock()
	defer muxes.Unlock()
	if m := muxes.m[nc]; m != nil {
		m.refs++
		return m, nil
	}
	m := &replyMux{nc: nc, id: nuid.Next() + "-", refs: 1}
	m.prefix = nc.NewInbox() + "."
	for i := range m.shards {
		m.shards[i].m = make(map[uint64]*call)
	}
	sub, err := nc.Subscribe(m.prefix+"*", m.onReply)
	if err != nil {
		return nil, fmt.Errorf("client: subscribe to replies: %w", err)
	}
	// Pipelined calls can have far more replies in flight than the default limits allow; the pools' in-flight caps
	// bound them instead.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("client: reply subscription limits: %w", err)
	}
	m.sub = sub
	muxes.m[nc] = m
	return m, nil
}

func releaseMux(m *replyMux) {
	muxes.Lock()
	defer muxes.Unlock()
	m.refs--
	if m.refs > 0 {
		return
	}
	delete(muxes.m, m.nc)
	_ = m.sub.Unsubscribe()
}

// appendCallID appends the ID of the call numbered n: unique in the fleet.
func (m *replyMux) appendCallID(b []byte, n uint64) []byte {
	return strconv.AppendUint(append(b, m.id...), n, 36)
}

// appendReply appends the reply subject that ends with counter n.
func (m *replyMux) appendReply(b []byte, n uint64) []byte {
	return strconv.AppendUint(append(b, m.prefix...), n, 36)
}

// register files c under a new ID and returns the counter its reply subject ends with.
func (m *replyMux) register(c *call) uint64 {
	n := m.next.Add(1)
	c.rc.muxN.Store(n)
	s := &m.shards[n%muxShards]
	s.mu.Lock()
	s.m[n] = c
	s.mu.Unlock()
	return n
}

// filed returns the counter c's reply subject ends with: the one it is filed under, or a new one. A call sent again
// (a reconcile found it never arrived) keeps its entry, so a late reply to its first copy still finds it.
func (m *replyMux) filed(c *call) uint64 {
	if n := c.rc.muxN.Load(); n != 0 {
		return n
	}
	return m.register(c)
}

func (m *replyMux) lookup(n uint64, remove bool) *call {
	s := &m.shards[n%muxShards]
	s.mu.Lock()
	c := s.m[n]
	if remove && c != nil {
		delete(s.m, n)
	}
	s.mu.Unlock()
	if remove && c != nil {
		c.rc.muxN.CompareAndSwap(n, 0) // a retry may have filed it again since
	}
	return c
}

// forget removes c's entry, if it still has one: a reply that removed it saves the completion a second lookup.
func (m *replyMux) forget(c *call) {
	if n := c.rc.muxN.Swap(0); n != 0 {
		m.lookup(n, true)
	}
}

func (m *replyMux) onReply(msg *nats.Msg) {
	tok := msg.Subject[len(m.prefix):]
	if tok == wire.FenceToken {
		m.answerFence(msg)
		return
	}
	if tok == wire.ReplyBatchToken && msg.Header.Get(wire.HeaderBatch) != "" {
		batch, err := wire.DecodeBatchReplies(m.batch[:0], msg.Data)
		if err == nil {
			var last *call
			for _, r := range batch {
				if n, err := strconv.ParseUint(r.Token, 36, 64); err == nil {
					if c := m.deliver(n, r.Status, r.Load, codec.Msgpack, r.Body); c != nil {
						last = c
					}
				}
			}
			repliedTo(last, len(batch))
		} // else the calls it answered fail when their worker is found lost
		clear(batch) // the bodies belong to the calls now
		m.batch = batch[:0]
		return
	}
	n, err := strconv.ParseUint(tok, 36, 64)
	if err != nil {
		return
	}
	status, ct := wire.ReadReply(msg)
	var cd codec.Codec
	if status == wire.StatusOK || status == wire.StatusError {
		if cd, err = codec.ForContentType(ct); err != nil {
			if c := m.lookup(n, true); c != nil {
				c.rc.w.Load().fail(c, fmt.Errorf("client: reply to %s: %w", c.method, err))
			}
			return
		}
	}
	repliedTo(m.deliver(n, status, msg.Header.Get(wire.HeaderLoad), cd, msg.Data), 1)
}

// repliedTo tells the transport of c, the last call a reply message answered, that the message answered n calls.
func repliedTo(c *call, n int) {
	if c != nil {
		c.rc.w.Load().t.replied(n)
	}
}

// deliver hands one reply (alone in its message or out of a batch) to call n, and returns the call it answered, if
// any. load is the reply's wire.HeaderLoad, from a standing worker.
func (m *replyMux) deliver(n uint64, status, load string, cd codec.Codec, data []byte) *call {
	if status == wire.StatusProgress {
		c := m.lookup(n, false)
		if c == nil || c.Progress == nil {
			return nil
		}
		var ev wire.Progress
		if err := codec.Msgpack.Unmarshal(data, &ev); err == nil {
			c.Progress(ev)
		}
		return nil
	}
	c := m.lookup(n, true)
	if c == nil {
		return nil // cancelled, lost or timed out already
	}
	w := c.rc.w.Load()
	if load != "" && w.standing {
		w.replyLoad(c, load)
	}
	switch status {
	case wire.StatusOK:
		if data == nil {
			data = []byte{}
		}
		w.replied(c, cd, data, nil)
	case wire.StatusError:
		var e wire.Error
		if err := cd.Unmarshal(data, &e); err != nil {
			w.fail(c, fmt.Errorf("client: error reply to %s unreadable: %w", c.method, err))
			return c
		}
		w.replied(c, cd, nil, actor.Registry.RemoteError(e))
	case wire.StatusNoResponders:
		// The call never reached the worker: gone, or not back on the server yet after a reconnect. It stays in
		// flight; the reconcile at the worker's next heartbeat sends it again, and a worker that sends none is
		// lost within three intervals, failing it.
		w.rec.needed.Store(true)
	default:
		w.fail(c, fmt.Errorf("client: reply to %s without %s header", c.method, wire.HeaderStatus))
	}
	return c
}
