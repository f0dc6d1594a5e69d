package balancer

import "testing"

// Take records a call as Pick does, on the slot asked for, when it is live and has room; it never changes the slot.
func TestTake(t *testing.T) {
	t.Parallel()
	for _, alg := range []Algorithm{RoundRobin, Random, LeastActive, LeastTotal} {
		t.Run(string(alg), func(t *testing.T) {
			t.Parallel()
			b := mustNew(t, alg, 3, Options{Seed: 7})
			if !b.Take(1, 2) || !b.Take(1, 2) {
				t.Fatal("Take refused a live slot with room")
			}
			if b.Take(1, 2) {
				t.Fatal("Take went past the cap")
			}
			if got := b.Active(1); got != 2 {
				t.Fatalf("slot 1 has %d calls in flight, want 2", got)
			}
			b.Done(1)
			if !b.Take(1, 2) {
				t.Fatal("Take refused a slot a Done freed")
			}
			b.Remove(2)
			if b.Take(2, 0) || b.Take(3, 0) || b.Take(-1, 0) {
				t.Fatal("Take recorded a call on a removed or unknown slot")
			}
			if st := b.Stats(); st.TotalDispatched != 3 {
				t.Fatalf("total_dispatched %d, want 3", st.TotalDispatched)
			}
			// Under the cap slot 1 is full; Pick must see it as a taken slot.
			for range 4 {
				s, ok := b.Pick(2)
				if ok && s == 1 {
					t.Fatal("Pick chose the full slot 1")
				}
				if ok {
					b.Done(s)
				}
			}
			if err := checkInvariants(b); err != nil {
				t.Fatal(err)
			}
		})
	}
}
