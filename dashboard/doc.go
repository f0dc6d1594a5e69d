// Package dashboard is a live picture of a natsfleet fleet in a browser: which agents are up and what capacity they
// have left, which pools run which workers and how busy and healthy those are, and how close every shared limit is
// to its capacity, over the last minutes. cmd/dashboard serves it:
//
//	dashboard --nats nats://127.0.0.1:4222 --addr 127.0.0.1:8080
//
// and a program that has an HTTP server of its own can mount it:
//
//	d, err := dashboard.New(nc, dashboard.Options{})
//	if err != nil {
//		return err
//	}
//	defer d.Close()
//	mux.Handle("/fleet/", http.StripPrefix("/fleet", d))
//
// # What it reads
//
// Only what the fleet already carries over NATS; it adds no state and writes nothing:
//
//   - agents: every Refresh it asks {prefix}.agent.discover, as fleet pools do, for each agent's capacity, free
//     slots, kinds and workers;
//   - workers: their heartbeats on {prefix}.hb.{kind}.{id} (pool, agent, index, calls in flight and completed,
//     interval, stopping), and every Refresh their answers to a stats request on {prefix}.w.{id}.ctl, which add the
//     errors;
//   - pools: the workers grouped by the pool their heartbeats name (standing workers by kind), and the keepalive a
//     pool publishes on {prefix}.pool.{id}.alive;
//   - shared limits: a watch of the limits bucket (limits.DefaultBucket), each key's value read with
//     limits.ReadState, sampled every Refresh into a history of Options.History.
//
// A worker is alive while its last heartbeat is at most two intervals old, late up to three, then lost (its pool
// declares it lost then too); one whose last heartbeat said it is stopping is stopping, and goes from the list
// after three intervals. A lost worker, an agent that stopped answering discovery and a silent pool stay listed
// for Options.Forget. A set whose limits are per partition shows, for each limit, its busiest partition and how many
// partitions hold state. Process-mode and fleet-mode pools' own limits (client.Options.Limits) live in a set named
// after the pool, and the page links the two.
//
// The credentials the dashboard connects with need to subscribe to the heartbeats and keepalives, to request on the
// agents' discovery and the workers' control subjects, and to read the limits bucket.
//
// # The page
//
// One page drawn from html/template with an embedded script and style sheet, no build step and no library: tables
// for the agents and each pool's workers, and for each shared limit its utilisation now and a small SVG chart of it
// over History. It updates at every Refresh through server-sent events (/events), and /snapshot.json serves the
// same Snapshot for scripts.
package dashboard
