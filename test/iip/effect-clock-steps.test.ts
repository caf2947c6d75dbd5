// The Effect-driven timers of the IIP library when the wall clock is stepped (NTP, an operator, a
// VM resume): servers and clients run on a Clock whose wall time the test steps by an hour while
// its monotonic time and sleeps stay the TestClock's (test/support/wallClock.ts). Real sockets on
// 127.0.0.1, port 0; real I/O awaited with Effect.promise, never with the TestClock.
// - Keep-alive, stepped back: the client still pings after intervalMs of silence and closes the
//   connection timeoutMs after the unanswered ping (not an hour later).
// - Connection timeouts, stepped back: a connection that sends nothing is still closed when
//   firstPacketTimeoutMs passes. Stepped forward: neither it nor an idle connection is closed at
//   once; the silent one goes at firstPacketTimeoutMs, the idle one stays.
// - Drain, stepped back: `server.drain(5000)` still ends at 5 s. Stepped forward: it does not end
//   at once; the busy connection is open at 4.9 s and closed at 5 s.
import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import * as Client from "../../src/iip/client.ts"
import * as Server from "../../src/iip/server.ts"
import { MeshPath } from "../../src/protocol/mesh.ts"
import { awaitReal, callHeldAtServer, until, useCleanup } from "../support/effectIo.ts"
import { frame, RawClient } from "../support/iipRaw.ts"
import { collectLog, settle, startRawMeshPeer } from "../support/meshTest.ts"
import { HOUR_MS, steppedEffectClock } from "../support/wallClock.ts"

/** The test's TestClock with a wall time the test steps; provide `.clock` to the code under test. */
const useSteppedClock = Effect.map(Clock.clockWith(Effect.succeed), steppedEffectClock)

const timeouts = { firstPacketTimeoutMs: 1000, packetTimeoutMs: 2000, idleTimeoutMs: 4000 }

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

describe("connection timeouts with the wall clock stepped", () => {
  /** A server with the connection timeouts on a stepped clock, its log collected. */
  const serverOnSteppedClock = Effect.gen(function*() {
    const cleanup = yield* useCleanup
    const wall = yield* useSteppedClock
    const { events, log } = collectLog()
    const server = yield* Server.make({ ...timeouts, drainTimeoutMs: 0, log }).pipe(Effect.provideService(Clock.Clock, wall.clock))
    return { cleanup, wall, events, server }
  })

  it.effect("stepped back an hour: a connection that sends nothing is still closed when firstPacketTimeoutMs passes", () =>
    Effect.gen(function*() {
      const { cleanup, wall, events, server } = yield* serverOnSteppedClock
      const raw = yield* Effect.promise(() => RawClient.connect(server.address.port, cleanup))
      yield* until(() => server.connectionCount === 1, "the accept")
      wall.step(-HOUR_MS)
      yield* TestClock.adjust("999 millis")
      expect(server.connectionCount).toBe(1)
      yield* TestClock.adjust("1 millis")
      yield* awaitReal(raw.waitClose(), "the close")
      expect(events.map((e) => e.event)).toContain("no-first-packet")
    }))

  it.effect("stepped forward an hour: neither a silent nor an idle connection is closed at once; the silent one goes at firstPacketTimeoutMs", () =>
    Effect.gen(function*() {
      const { cleanup, wall, events, server } = yield* serverOnSteppedClock
      server.handle("/echo", (request) => request.data)
      const idle = yield* Effect.promise(() => RawClient.connect(server.address.port, cleanup))
      yield* Effect.promise(() => idle.newChannel())
      idle.write(frame(1, "/echo", 1, "x"))
      yield* awaitReal(idle.next(), "the echo")
      const silent = yield* Effect.promise(() => RawClient.connect(server.address.port, cleanup))
      yield* until(() => server.connectionCount === 2, "the accepts")
      wall.step(HOUR_MS)
      yield* TestClock.adjust("999 millis")
      expect(server.connectionCount).toBe(2)
      expect(events).toEqual([])
      yield* TestClock.adjust("1 millis")
      yield* awaitReal(silent.waitClose(), "the silent connection to close")
      expect(events.map((e) => e.event)).toEqual(["no-first-packet"])
      expect(idle.isClosed).toBe(false)
    }))
})

describe("drain with the wall clock stepped", () => {
  /** A call held at a server on the stepped clock, and a drain of that server forked on it. */
  const drainingWithCallInFlight = Effect.gen(function*() {
    const wall = yield* useSteppedClock
    const { server, client, call, events } = yield* callHeldAtServer(wall.clock)
    const clientSession = client.meshSessions[0]!
    const goAway = new Promise<void>((resolve) => clientSession.onPeerDraining(resolve))
    const drain = yield* Effect.forkChild(server.drain(5000).pipe(Effect.provideService(Clock.Clock, wall.clock)))
    // The go-away is said once the drain runs: it has read its start time by then.
    yield* awaitReal(goAway, "the go-away at the client")
    return { wall, server, drain, call, events }
  })

  it.effect("stepped back an hour: drain(5000) still ends at 5 s", () =>
    Effect.gen(function*() {
      const { wall, server, drain, call, events } = yield* drainingWithCallInFlight
      wall.step(-HOUR_MS)
      yield* TestClock.adjust("4900 millis")
      expect(server.connectionCount).toBe(1)
      yield* TestClock.adjust("100 millis")
      expect(server.connectionCount).toBe(0)
      yield* Fiber.join(drain)
      expect(events.map((e) => e.event)).toContain("drain-deadline")
      yield* awaitReal(call, "the in-flight call to end")
    }))

  it.effect("stepped forward an hour: drain(5000) does not end at once; the busy connection is open at 4.9 s, closed at 5 s", () =>
    Effect.gen(function*() {
      const { wall, server, drain, call, events } = yield* drainingWithCallInFlight
      wall.step(HOUR_MS)
      yield* TestClock.adjust("4900 millis")
      expect(server.connectionCount).toBe(1)
      expect(drain.pollUnsafe()).toBeUndefined()
      yield* TestClock.adjust("100 millis")
      expect(server.connectionCount).toBe(0)
      yield* Fiber.join(drain)
      expect(events.map((e) => e.event)).toContain("drain-deadline")
      yield* awaitReal(call, "the in-flight call to end")
    }))
})
