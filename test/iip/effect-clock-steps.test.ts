// The Effect-driven timers of the IIP library when the wall clock is stepped (NTP, an operator, a
// VM resume): servers and clients run on a Clock whose wall time the test steps by an hour while
// its monotonic time and sleeps stay the TestClock's (test/support/wallClock.ts). Real sockets on
// 127.0.0.1, port 0; real I/O awaited with Effect.promise, never with the TestClock.
// - Keep-alive, stepped back: the client still pings after intervalMs of silence and closes the
//   connection timeoutMs after the unanswered ping (not an hour later).
import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect } from "effect"
import { TestClock } from "effect/testing"
import * as Client from "../../src/iip/client.ts"
import { MeshPath } from "../../src/protocol/mesh.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { settle, startRawMeshPeer } from "../support/meshTest.ts"
import { HOUR_MS, steppedEffectClock } from "../support/wallClock.ts"

const useCleanup = Effect.acquireRelease(
  Effect.sync(() => new Cleanup()),
  (cleanup) => Effect.promise(() => cleanup.run())
)

/** Real I/O, bounded in real time. */
const awaitReal = <A>(promise: Promise<A>, what: string, timeoutMs = 5000) => Effect.promise(() => withTimeout(promise, timeoutMs, what))

/** The test's TestClock with a wall time the test steps; provide `.clock` to the code under test. */
const useSteppedClock = Effect.map(Clock.clockWith(Effect.succeed), steppedEffectClock)

describe("keep-alive with the wall clock stepped", () => {
  it.effect("stepped back an hour: still pings after intervalMs of silence and closes timeoutMs after the unanswered ping", () =>
    Effect.gen(function*() {
      const cleanup = yield* useCleanup
      const wall = yield* useSteppedClock
      const peer = yield* Effect.promise(() => startRawMeshPeer(cleanup))
      const client = yield* Client.make({ host: "127.0.0.1", port: peer.port, maxConnections: 1, keepAlive: { intervalMs: 1000, timeoutMs: 500 }, log: () => {} }).pipe(
        Effect.provideService(Clock.Clock, wall.clock)
      )
      const pending = settle(client.call("/never-answered", "x", { timeoutMs: 0 }))
      yield* awaitReal(peer.take((p) => p.path === "/never-answered", 5000, "the call"), "the call at the peer")
      const session = client.meshSessions[0]!
      wall.step(-HOUR_MS)
      yield* TestClock.adjust("999 millis")
      expect(session.ownControl.outstanding).toBe(0)
      yield* TestClock.adjust("1 millis")
      expect(session.ownControl.outstanding).toBe(1)
      yield* awaitReal(peer.take((p) => p.path === MeshPath.ping, 5000, "the ping"), "the ping at the peer")
      yield* TestClock.adjust("499 millis")
      expect(session.closed).toBe(false)
      yield* TestClock.adjust("1 millis")
      expect(session.closed).toBe(true)
      expect(session.connection.closeError?.message).toContain("no answer to a ping within 500 ms")
      yield* awaitReal(pending, "the pending call to fail")
    }))
})
