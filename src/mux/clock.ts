// The clock of every local deadline and duration in the mux and the layers above it (the session's
// deadline heap, the writer's lane-held envelopes, the client's queue, the sidecar's requests):
// monotonic, so a wall clock stepped by NTP, an operator or a VM resume neither stretches a
// pending deadline by the step nor fires it early. Wall time (Date.now()) is kept only where a wall
// time is meant: log and span timestamps, certificates, the HTTP Date header, the access log.
// Deadlines never travel on the wire in these terms: the wire carries what is left (PROTOCOL.md §14).
// The global performance, not node:perf_hooks' binding: tests fake the global (vi.useFakeTimers,
// "performance") to drive deadlines. Read so, a whole-ms reading costs what Date.now() did (Node 24,
// ~48 ns here; the binding's would be ~6 ns less, but no test could move it).
// Effect code (keep-alive, connection timeouts, drains) measures on its fiber's Clock instead, so
// TestClock drives it: on that Clock's monotonic time, since Effect's currentTimeMillis is Date.now().
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"

/**
 * Now, in whole ms on the monotonic clock (performance.now(), counted from this process's start).
 * Whole ms as Date.now() gave, so deadlines stay integers wherever they are compared, subtracted,
 * written or logged. Never 0 once any code of ours runs (the process took ms to load it), so 0
 * still means "no deadline" / "not read" where the callers use it so.
 */
export const monotonicMs = (): number => Math.floor(performance.now())

const NANOS_PER_MS = 1_000_000n

/** `clock`'s monotonic time in whole ms (TestClock.adjust moves it; a wall clock step does not). */
export const monotonicMillisOf = (clock: Clock.Clock): number => Number(clock.monotonicTimeNanosUnsafe() / NANOS_PER_MS)

/** The fiber's Clock's monotonic time in whole ms: what Effect code measures elapsed time with. */
export const monotonicMillis: Effect.Effect<number> = Clock.clockWith((clock) => Effect.sync(() => monotonicMillisOf(clock)))
