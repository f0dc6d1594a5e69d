// Package actor runs the calls of one worker with actor semantics: one at a time in arrival order, or concurrently
// for an asyncio worker, with stop, abort and cancellation. It is the engine under every worker, in-process (package
// client's thread, asyncio and sync pools) and served over NATS (package fleet), and it is the contract between
// them: a call becomes a Task, which names a Method; package fleet implements Method (the registered kinds' methods,
// called by reflection or directly) and installs Registry, through which package client starts in-process workers of
// a kind it knows by name.
package actor
