package balancer

import "math/bits"

// bitset is a fixed-universe set of slot indices that also keeps its size, so
// "is any slot eligible" is O(1) and the searches below touch one word per 64
// slots at worst (64 words at 4,096 slots).
type bitset struct {
	words []uint64
	n     int // universe: indices 0..n-1
	count int // members
}

func (s *bitset) grow(n int) {
	for len(s.words)*64 < n {
		s.words = append(s.words, 0)
	}
	s.n = n
}

func (s *bitset) has(i int) bool { return s.words[i>>6]&(1<<(uint(i)&63)) != 0 }

func (s *bitset) set(i int) {
	w, m := i>>6, uint64(1)<<(uint(i)&63)
	if s.words[w]&m == 0 {
		s.words[w] |= m
		s.count++
	}
}

func (s *bitset) clear(i int) {
	w, m := i>>6, uint64(1)<<(uint(i)&63)
	if s.words[w]&m != 0 {
		s.words[w] &^= m
		s.count--
	}
}

// nextFrom returns the first member at or after i in circular order, or -1
// when the set is empty. i must be in [0, n).
func (s *bitset) nextFrom(i int) int {
	if s.count == 0 {
		return -1
	}
	w := i >> 6
	// Members at or after i in i's own word, then the following words, then
	// wrap around to the words before i's and finally the low part of i's.
	if word := s.words[w] & (^uint64(0) << (uint(i) & 63)); word != 0 {
		return w<<6 + bits.TrailingZeros64(word)
	}
	for k := w + 1; k < len(s.words); k++ {
		if s.words[k] != 0 {
			return k<<6 + bits.TrailingZeros64(s.words[k])
		}
	}
	for k := 0; k <= w; k++ {
		if s.words[k] != 0 {
			return k<<6 + bits.TrailingZeros64(s.words[k])
		}
	}
	return -1 // unreachable while count is accurate
}

// nth returns the k-th member (0-based) in index order; k must be < count.
func (s *bitset) nth(k int) int {
	for w, word := range s.words {
		c := bits.OnesCount64(word)
		if k >= c {
			k -= c
			continue
		}
		for ; k > 0; k-- {
			word &= word - 1 // drop the lowest member
		}
		return w<<6 + bits.TrailingZeros64(word)
	}
	return -1 // unreachable while k < count
}
