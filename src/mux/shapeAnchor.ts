// Keeps the hidden classes of the objects every request makes alive while the process is idle, so
// that a full collection taken then (cli/memoryRelease.ts's release after a burst, V8's own memory
// reducer) does not throw away the optimized code of the request path.
//
// Why: V8 holds the hidden class ("map") a class's instances end up with only through its instances
// and weak links (the transition from the constructor's initial map, feedback vectors, the maps
// optimized code checks against). With no request in flight nothing holds it, and a full collection
// then clears it and marks every function whose TurboFan code embeds it for deoptimization
// ("embedded weak objects cleared": forward, tryOnce, writeAnswer, send, answer, finishCall, pick,
// lease ... ~30 of the request path's functions at A after one release, --trace-deopt-verbose). The
// next burst then ran in baseline code until it tiered up again. Anchoring the newest instance of
// each class the request path makes keeps those maps: after a release 9-13 functions marked at A
// (half of them node's own stream internals, whose objects we cannot hold) and 7 at B; at 1,000
// req/s for 10 s after a 6 s quiet gap, CPU a request A 225-266 / B 232-238 µs against 269-314 /
// 281-295 without, p50 0.61-0.65 against 0.74-0.78 ms (two alternated pairs each).
//
// The cost is one store per anchored object a request, and the newest instance's objects kept until
// the next one replaces them (one request's: its head and a held body of at most 64 KiB). A class
// whose instances carry a payload that may be large (a plain IIP packet holds up to 16 MiB) anchors
// through `keep`, which passes over an instance carrying more than MAX_KEPT_PAYLOAD_BYTES: the map
// does not depend on the payload's size, so the newest small instance stands for it.

/** The most payload an anchored instance may carry (`keep`). */
export const MAX_KEPT_PAYLOAD_BYTES = 64 * 1024

/** Holds the newest instance of one class, so its hidden class outlives an idle full collection. */
export class ShapeAnchor<T extends object> {
  newest: T | undefined = undefined

  /** Anchors `instance` unless it carries more than MAX_KEPT_PAYLOAD_BYTES of payload. */
  keep(instance: T, payloadBytes: number): void {
    if (payloadBytes <= MAX_KEPT_PAYLOAD_BYTES) this.newest = instance
  }
}
