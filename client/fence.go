package client

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsfleet/natsfleet/codec"
)

// fences are the workers the pools of one connection declared lost, each with the highest call number the
// connection had given when it did: a worker that was frozen or cut off asks (wire.FenceToken) before it starts the
// calls it holds, and starts none numbered at or below its fence, since their futures have failed already. A worker
// that never asks (it was not away) has nothing to fear: it was declared lost only because it was away.
type fences struct {
	mu    sync.Mutex
	below map[string]uint64 // by worker ID
	order []fenced          // oldest first, to bound the set
}

type fenced struct {
	id string
	at time.Time
}

const (
	// maxFences and fenceAge bound what a connection remembers: a worker away longer than fenceAge, or fenced
	// before thousands of others, has been stopped by its lease or can no longer be told its fence.
	maxFences = 4096
	fenceAge  = 10 * time.Minute
)

// fence records that worker id was declared lost with calls up to below.
func (f *fences) fence(id string, below uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.below == nil {
		f.below = make(map[string]uint64)
	}
	now := time.Now()
	for len(f.order) > 0 && (len(f.order) >= maxFences || now.Sub(f.order[0].at) > fenceAge) {
		delete(f.below, f.order[0].id)
		f.order = f.order[1:]
	}
	if _, ok := f.below[id]; !ok {
		f.order = append(f.order, fenced{id, now})
	}
	f.below[id] = max(f.below[id], below)
}

// of returns worker id's fence, 0 for none.
func (f *fences) of(id string) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.below[id]
}

// answerFence answers a worker asking for its fence.
func (m *replyMux) answerFence(msg *nats.Msg) {
	if msg.Reply == "" {
		return
	}
	b, err := codec.Msgpack.Marshal(m.fences.of(string(msg.Data)))
	if err == nil {
		_ = msg.Respond(b)
	}
}
