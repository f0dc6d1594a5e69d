// Package testutil holds the helpers natsfleet's tests share: embedded NATS servers (alone or as a cluster on
// loopback), connections, polling until a condition holds, and a buffer safe for concurrent writers. Every server
// and connection it makes is closed when the test ends, and a server's JetStream store lives in t.TempDir().
package testutil
