package client

import "container/heap"

// callQueue is the pool's waiting line, ordered by each call's rank: its arrival time moved earlier by its priority
// times Options.PriorityAging. Equal priorities keep arrival order, a higher priority overtakes calls that arrived
// up to (difference × PriorityAging) before it, and no call is overtaken by a call that arrives later than that:
// a steady stream of high-priority calls delays a low one by a bounded time, never forever. The rank is fixed at
// arrival, so a heap keeps push and pop at O(log n) however long the line grows.
type callQueue struct{ h callHeap }

func (q *callQueue) len() int     { return len(q.h) }
func (q *callQueue) push(c *call) { heap.Push(&q.h, c) }
func (q *callQueue) pop() *call   { return heap.Pop(&q.h).(*call) }
func (q *callQueue) peek() *call  { return q.h[0] }

type callHeap []*call

func (h callHeap) Len() int { return len(h) }
func (h callHeap) Less(i, j int) bool {
	if h[i].rank != h[j].rank {
		return h[i].rank < h[j].rank
	}
	return h[i].seq < h[j].seq
}
func (h callHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *callHeap) Push(x any)   { *h = append(*h, x.(*call)) }
func (h *callHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return c
}
