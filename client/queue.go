package client

import "container/heap"

// callQueue is the pool's waiting line, ordered by each call's rank: its arrival time moved earlier by its priority
// times Options.PriorityAging. Equal priorities keep arrival order, a higher priority overtakes calls that arrived
// up to (difference × PriorityAging) before it, and no call is overtaken by a call that arrives later than that:
// a steady stream of high-priority calls delays a low one by a bounded time, never forever. The rank is fixed at
// arrival, so a heap keeps push and pop at O(log n) however long the line grows.
//
// While no waiting call has a priority, ranks follow arrival and the line is a plain FIFO, which costs less than
// the heap; the first call with a priority moves the line into the heap until it empties.
type callQueue struct {
	fifo []queued
	head int
	h    callHeap
}

// queued is a call waiting in the line. Its place lives here, not in the call record, which every call carries
// whether it waits or not.
type queued struct {
	c    *call
	rank int64  // arrival time (ns) less priority × aging
	seq  uint64 // arrival order among equal ranks
}

func (q *callQueue) len() int { return len(q.fifo) - q.head + len(q.h) }

// push adds c, which arrived at rank with sequence number seq.
func (q *callQueue) push(c *call, rank int64, seq uint64) {
	e := queued{c, rank, seq}
	if len(q.h) == 0 && c.priority == 0 {
		q.fifo = append(q.fifo, e)
		return
	}
	for _, f := range q.fifo[q.head:] {
		heap.Push(&q.h, f)
	}
	clear(q.fifo)
	q.fifo, q.head = q.fifo[:0], 0
	heap.Push(&q.h, e)
}

func (q *callQueue) pop() *call {
	if len(q.h) > 0 {
		return heap.Pop(&q.h).(queued).c
	}
	c := q.fifo[q.head].c
	q.fifo[q.head] = queued{}
	q.head++
	if q.head == len(q.fifo) {
		q.fifo, q.head = q.fifo[:0], 0
	}
	return c
}

func (q *callQueue) peek() *call {
	if len(q.h) > 0 {
		return q.h[0].c
	}
	return q.fifo[q.head].c
}

type callHeap []queued

func (h callHeap) Len() int { return len(h) }
func (h callHeap) Less(i, j int) bool {
	if h[i].rank != h[j].rank {
		return h[i].rank < h[j].rank
	}
	return h[i].seq < h[j].seq
}
func (h callHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *callHeap) Push(x any)   { *h = append(*h, x.(queued)) }
func (h *callHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = queued{}
	*h = old[:len(old)-1]
	return e
}
