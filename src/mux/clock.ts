// The clock of every local deadline and duration in the mux and the layers above it (the session's
// deadline heap, the writer's lane-held envelopes, the client's queue, the sidecar's requests):
// monotonic, so a wall clock stepped by NTP, an operator or a VM resume neither stretches a
// pending deadline by the step nor fires it early. Wall time (Date.now()) is kept only where a wall
// time is meant: log and span timestamps, certificates, the HTTP Date header, the access log.
// Deadlines never travel on the wire in these terms: the wire carries what is left (PROTOCOL.md §14).
// The global performance, not node:perf_hooks' binding: tests fake the global (vi.useFakeTimers,
// "performance") to drive deadlines. Read so, a whole-ms reading costs what Date.now() did (Node 24,
// ~48 ns here; the binding's would be ~6 ns less, but no test could move it).

/**
 * Now, in whole ms on the monotonic clock (performance.now(), counted from this process's start).
 * Whole ms as Date.now() gave, so deadlines stay integers wherever they are compared, subtracted,
 * written or logged. Never 0 once any code of ours runs (the process took ms to load it), so 0
 * still means "no deadline" / "not read" where the callers use it so.
 */
export const monotonicMs = (): number => Math.floor(performance.now())
