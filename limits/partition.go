package limits

import "strings"

// partitionSep separates a shared set's name from a partition in the KV key
// of the partition's state: <name>._p.<partition, escaped>.
const partitionSep = "._p."

// sweepPerUse is how many other partitions each use of a table looks at to
// forget those that may go. Looking at more than one per use keeps the table
// within a small factor of the partitions in use, since a use adds at most
// one.
const sweepPerUse = 2

// partitions is a table of per-partition values that forgets the ones that
// may go, looking at a few per use, round robin.
type partitions[T comparable] struct {
	index   map[string]int // name -> position in entries
	entries []partEntry[T]
	next    int // the position the next sweep starts at
}

type partEntry[T comparable] struct {
	name string
	v    T
}

func (p *partitions[T]) get(name string) (T, bool) {
	if i, ok := p.index[name]; ok {
		return p.entries[i].v, true
	}
	var zero T
	return zero, false
}

func (p *partitions[T]) put(name string, v T) {
	if p.index == nil {
		p.index = make(map[string]int)
	}
	p.index[name] = len(p.entries)
	p.entries = append(p.entries, partEntry[T]{name, v})
}

func (p *partitions[T]) len() int { return len(p.entries) }

// each calls f on every value.
func (p *partitions[T]) each(f func(T)) {
	for _, e := range p.entries {
		f(e.v)
	}
}

// sweep looks at the next sweepPerUse entries other than keep and removes
// those forget says may go.
func (p *partitions[T]) sweep(keep T, forget func(T) bool) {
	for range sweepPerUse {
		if len(p.entries) == 0 {
			return
		}
		if p.next >= len(p.entries) {
			p.next = 0
		}
		e := p.entries[p.next]
		if e.v == keep || !forget(e.v) {
			p.next++
			continue
		}
		// Swap-remove; the entry moved into next is looked at next.
		last := len(p.entries) - 1
		p.entries[p.next] = p.entries[last]
		p.index[p.entries[p.next].name] = p.next
		p.entries[last] = partEntry[T]{}
		p.entries = p.entries[:last]
		delete(p.index, e.name)
	}
}

// partitionKey is the KV key of a partition's state. Bytes that KV keys do
// not allow, and '.', '/' and '=', are escaped as "=XX" (hexadecimal), so
// that every partition name has its own key and none forms extra tokens.
func partitionKey(set, part string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(set) + len(partitionSep) + len(part))
	b.WriteString(set)
	b.WriteString(partitionSep)
	for i := 0; i < len(part); i++ {
		c := part[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			b.WriteByte(c)
		default:
			b.WriteByte('=')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		}
	}
	return b.String()
}
