// The registry's background redials of a refused endpoint on Effect's TestClock: the registry runs
// inside `it.effect` (its fibers and its clients' on the test's clock); the sockets are real
// (127.0.0.1, port 0) and awaited in real time, bounded. The endpoint is a gate in front of a real
// sidecar B (on the real clock) that resets every connection while shut (test/support/resetGate.ts).
// - A try whose dial fails holds the endpoint out ("refused") and starts the redials: the first
//   50-100 % of 100 ms after that failed dial (not at once: it would meet the same refusal), then
//   50-100 % of 200, 400, 800, 1600, 3200, 5000, 5000 ms apart (REFUSED_REDIAL), each failing one
//   keeping it held.
// - The gate opens: the next redial connects and the endpoint is back in the picks, healthy, with
//   no failure and no ejection, at most the backoff cap later.
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import dc from "node:diagnostics_channel"
import type * as net from "node:net"
import { Supervisor } from "../../src/iip/supervisor.ts"
import { type Endpoint, EndpointRegistry, REFUSED_REDIAL } from "../../src/sidecar/endpoints.ts"
import { balancing } from "../support/bareRegistry.ts"
import { awaitReal, until, useCleanup } from "../support/effectIo.ts"
import { startResetGate } from "../support/resetGate.ts"
import { sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

/** Redial delays' ceilings (the first after the try's failed dial): REFUSED_REDIAL doubling from its base to its cap. */
const ceilings = [100, 200, 400, 800, 1600, 3200, 5000, 5000]
/** The clock's step while waiting for a redial; a redial is seen at most a step (and a few turns) late. */
const STEP_MS = 10

/** A registry on the test's supervisor (its redials on the TestClock), a hold window of 30 s; closed with the test's scope. */
const scopedRegistry = Effect.gen(function*() {
  const supervisor = yield* Supervisor.current
  const registry = new EndpointRegistry({
    node: "test",
    requestTimeoutMs: 1000,
    compress: false,
    maxMetaBytes: 65_535,
    balancing: { ...balancing, restartWindowMs: 30_000 },
    log: () => {},
    supervisor
  })
  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      registry.close()
      supervisor.interruptAll()
    })
  )
  return registry
})

describe("redials of a refused endpoint (registry, TestClock)", () => {
  it.effect("held at its first refusal, redialled 50-100 % of 100 ms after it doubling to 5 s apart, back at the first redial that connects", () =>
    Effect.gen(function*() {
      expect(REFUSED_REDIAL).toStrictEqual({ baseMs: 100, maxMs: 5000 })
      const cleanup = yield* useCleanup
      const b = yield* Effect.promise(async () => {
        const app = await startApp(cleanup, (req, res) => req.resume().on("end", () => res.end("b")))
        return startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address }))
      })
      const gate = yield* Effect.promise(() => startResetGate(cleanup, "127.0.0.1", b.sidecar.inbound.port))
      // A hold window of 30 s, as the sidecar's default: the 5 s cap applies (half the window is more).
      const registry = yield* scopedRegistry
      const endpoint: Endpoint = { service: "catalog", host: "127.0.0.1", port: gate.port, weight: 1, source: "static" }
      registry.set("catalog", [endpoint])
      const viewOf = () => registry.view()[0]!.endpoints[0]!

      // Every dial to the gate, stamped with the TestClock's time; and when each one's socket closed.
      const clock = yield* TestClock.testClockWith(Effect.succeed)
      const dials: Array<number> = []
      let closed = 0
      const onSocket = (message: unknown) => {
        const socket = (message as { readonly socket: net.Socket }).socket
        dials.push(clock.currentTimeMillisUnsafe())
        socket.once("close", () => closed++)
      }
      yield* Effect.acquireRelease(
        Effect.sync(() => dc.subscribe("net.client.socket", onSocket)),
        () => Effect.sync(() => void dc.unsubscribe("net.client.socket", onSocket))
      )

      // A try: its dial is reset, and the lease ends unreachable, as the outbound side ends it.
      const picked = registry.pick("catalog", {})
      if (picked._tag !== "Picked") throw new Error(picked._tag)
      const client = registry.clientOf(picked.lease.endpoint.endpoint)
      const failed = yield* awaitReal(client.mode().then(() => undefined, (error: unknown) => error), "the first dial")
      expect(failed).toMatchObject({ _tag: "ConnectFailed" })
      registry.endLease(picked.lease, performance.now(), false, true)
      expect(viewOf()).toMatchObject({ health: "refused", refusals: 1, failures: 0, ejections: 0 })

      // Each redial, the first included, waits its backoff on the TestClock after the dial that failed before it.
      expect(dials).toHaveLength(1)
      const delays: Array<number> = []
      for (const ceiling of ceilings) {
        const k = dials.length
        yield* until(() => closed >= k, `redial ${k} to be reset`)
        const failedAt = dials[k - 1]!
        while (dials.length === k && clock.currentTimeMillisUnsafe() - failedAt <= ceiling + 2 * STEP_MS) {
          yield* TestClock.adjust(`${STEP_MS} millis`)
          // Real turns for the woken fiber's dial to reach net.connect.
          yield* awaitReal(new Promise<void>((resolve) => setImmediate(() => setImmediate(resolve))), "a turn")
        }
        expect(dials.length).toBe(k + 1)
        const delay = dials[k]! - failedAt
        delays.push(delay)
        expect(delay).toBeGreaterThanOrEqual(ceiling / 2)
        expect(delay).toBeLessThanOrEqual(ceiling + 2 * STEP_MS)
        expect(viewOf().health).toBe("refused")
      }
      console.log(`[refused-redial-clock] redial delays (TestClock ms): ${delays.join(", ")}`)

      // It listens again: the next redial, at most the cap after the last failed one, connects and it is back.
      yield* until(() => closed >= dials.length, "the last redial to be reset")
      gate.open()
      const lastFailedAt = dials[dials.length - 1]!
      const k = dials.length
      while (dials.length === k && clock.currentTimeMillisUnsafe() - lastFailedAt <= REFUSED_REDIAL.maxMs + 2 * STEP_MS) {
        yield* TestClock.adjust(`${STEP_MS} millis`)
        yield* awaitReal(new Promise<void>((resolve) => setImmediate(() => setImmediate(resolve))), "a turn")
      }
      expect(dials.length).toBeGreaterThan(k)
      const redialAfter = dials[k]! - lastFailedAt
      console.log(`[refused-redial-clock] the redial that connects: ${redialAfter} ms (TestClock) after the last failed one`)
      expect(redialAfter).toBeLessThanOrEqual(REFUSED_REDIAL.maxMs + 2 * STEP_MS)
      yield* until(() => viewOf().health === "healthy", "the endpoint back in")
      expect(viewOf()).toMatchObject({ health: "healthy", refusals: 1, failures: 0, ejections: 0 })
      expect(client.stats.connections).toBe(1)
    }))

  it.effect("an endpoint that stays down is redialled for one hold window, then not until a try meets it again", () =>
    Effect.gen(function*() {
      const cleanup = yield* useCleanup
      // Nothing listens behind the gate's port once it is closed: every dial is refused at once.
      const gate = yield* Effect.promise(() => startResetGate(cleanup, "127.0.0.1", 1))
      const registry = yield* scopedRegistry
      registry.set("catalog", [{ service: "catalog", host: "127.0.0.1", port: gate.port, weight: 1, source: "static" }])
      const clock = yield* TestClock.testClockWith(Effect.succeed)
      const dials: Array<number> = []
      let closed = 0
      const onSocket = (message: unknown) => {
        dials.push(clock.currentTimeMillisUnsafe())
        ;(message as { readonly socket: net.Socket }).socket.once("close", () => closed++)
      }
      yield* Effect.acquireRelease(
        Effect.sync(() => dc.subscribe("net.client.socket", onSocket)),
        () => Effect.sync(() => void dc.unsubscribe("net.client.socket", onSocket))
      )
      const picked = registry.pick("catalog", {})
      if (picked._tag !== "Picked") throw new Error(picked._tag)
      const failed = yield* awaitReal(registry.clientOf(picked.lease.endpoint.endpoint).mode().then(() => undefined, (error: unknown) => error), "the first dial")
      expect(failed).toMatchObject({ _tag: "ConnectFailed" })
      registry.endLease(picked.lease, performance.now(), false, true)

      // Two hold windows of the test's clock, a step at a time, each redial let fail before the next step.
      for (let t = 0; t < 60_000; t += 50) {
        yield* until(() => closed >= dials.length, "the last dial to be reset")
        yield* TestClock.adjust("50 millis")
        yield* awaitReal(new Promise<void>((resolve) => setImmediate(() => setImmediate(resolve))), "a turn")
      }
      const redials = dials.slice(1)
      console.log(`[refused-redial-clock] redials of an endpoint that stays down (TestClock ms): ${redials.join(", ")}`)
      // The backoff's steps add up past the window within about ten redials; none is scheduled after that.
      expect(redials.length).toBeGreaterThanOrEqual(6)
      expect(redials.length).toBeLessThanOrEqual(14)
      expect(redials[redials.length - 1]!).toBeLessThanOrEqual(30_000)
    }))
})
