// The timers of mesh mode on Effect's TestClock (PROTOCOL.md §11, §14). Servers and clients are
// made with Server.make / Client.make inside `it.effect`, so their keep-alive, drain and redial
// fibers run on the test's clock; sockets are real (127.0.0.1, port 0) and real I/O is awaited
// with Effect.promise, never with the TestClock.
// - Keep-alive: against a hand-played mesh peer that answers the hello and then nothing, the
//   client pings on channel 0 exactly when `intervalMs` of silence has passed and closes the
//   connection, with a reason naming the ping, exactly `timeoutMs` later; with calls waiting, after
//   `busyIntervalMs` and `busyTimeoutMs`, telling `onPeerState` the peer is unresponsive; silence
//   while this side's own reading is paused does not count.
// - Drain: `server.drain(5000)` says go-away at once, keeps a connection with a request in flight
//   open at 4.9 s and closes it at 5 s (the call fails with ConnectionClosed); a connection whose
//   request finishes first closes at the next drain tick once idle, and its call succeeds; with
//   every sleep three times as long as asked, the drain still ends at its deadline.
// - Redial backoff: attempts at a port where nothing listens come after delays within 50-100 % of
//   100, 200, 400, 800, 1000, 1000 ms; and `backoffDelay` unit tests.
// Also pinned: a go-away reaches an idle connection before drain closes it, drain lets a streamed
// answer finish, and a failed redial leaves queued requests waiting.
import { assert, describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import dc from "node:diagnostics_channel"
import * as net from "node:net"
import * as Client from "../../src/iip/client.ts"
import { backoffDelay } from "../../src/iip/clientDial.ts"
import { LogThrottle } from "../../src/iip/log.ts"
import * as Server from "../../src/iip/server.ts"
import { reply } from "../../src/iip/server.ts"
import { ConnectionClosed } from "../../src/mux/errors.ts"
import { decodeEnvelope, EnvelopeFlag, EnvelopeKind, MeshDefaults, MeshPath } from "../../src/protocol/mesh.ts"
import { awaitReal, callHeldAtServer, until, useCleanup } from "../support/effectIo.ts"
import { deferred } from "../support/iipRaw.ts"
import { collectLog, settle, startRawMeshPeer } from "../support/meshTest.ts"

/** A port that nothing listens on: the OS picks it, we close it. */
const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })

describe("keep-alive on the TestClock", () => {
  it.effect("pings after intervalMs of silence and closes the connection timeoutMs after an unanswered ping", () =>
    Effect.gen(function*() {
      const cleanup = yield* useCleanup
      const peer = yield* Effect.promise(() => startRawMeshPeer(cleanup))
      const { events, log } = collectLog()
      const client = yield* Client.make({ host: "127.0.0.1", port: peer.port, maxConnections: 1, keepAlive: { intervalMs: 1000, timeoutMs: 500 }, log })
      // Any call makes the client dial; the peer never answers it.
      const pending = settle(client.call("/never-answered", "x", { timeoutMs: 0 }))
      yield* awaitReal(peer.take((p) => p.path === "/never-answered", 5000, "the call"), "the call at the peer")
      const session = client.meshSessions[0]!
      const closedWith = deferred<string>()
      session.onClosed((error) => closedWith.resolve(error.message))

      // A ping is a call on the client's control channel: it shows up there synchronously.
      yield* TestClock.adjust("999 millis")
      expect(session.ownControl.outstanding).toBe(0)
      yield* TestClock.adjust("1 millis")
      expect(session.ownControl.outstanding).toBe(1)
      const ping = yield* awaitReal(peer.take((p) => p.path === MeshPath.ping, 5000, "the ping"), "the ping at the peer")
      expect(ping.status).toBe(1)
      expect(ping.channelId).toBe(0)
      const envelope = decodeEnvelope(ping.data, MeshDefaults.maxMetaBytes)
      expect(envelope.kind).toBe(EnvelopeKind.request)
      expect(envelope.flags & EnvelopeFlag.oneway).toBe(0)
      expect(ping.data.length - envelope.bodyOffset).toBe(8)

      // Unanswered: open at 499 ms, closed at 500 ms, with the ping as the reason.
      yield* TestClock.adjust("499 millis")
      expect(session.closed).toBe(false)
      expect(client.stats.connections).toBe(1)
      yield* TestClock.adjust("1 millis")
      expect(session.closed).toBe(true)
      expect(session.connection.closeError?.message).toContain("peer stopped answering: no answer to a ping within 500 ms")
      expect(yield* awaitReal(closedWith.promise, "the close")).toContain("no answer to a ping within 500 ms")
      expect(client.stats.connections).toBe(0)
      const result = yield* awaitReal(pending, "the pending call to fail")
      assert(!result.ok)
      expect(result.error).toBeInstanceOf(ConnectionClosed)
      expect((result.error as ConnectionClosed).message).toContain("ping")
      expect((result.error as ConnectionClosed).sent).toBe(true)
      expect(events.filter((e) => e.event === "protocol-violation")).toEqual([])
    }))

  it.effect("with calls waiting, pings after busyIntervalMs of silence and closes busyTimeoutMs later, telling onPeerState; an idle connection waits for intervalMs", () =>
    Effect.gen(function*() {
      const cleanup = yield* useCleanup
      const peer = yield* Effect.promise(() => startRawMeshPeer(cleanup))
      const states: Array<string> = []
      const keepAlive = { intervalMs: 15_000, timeoutMs: 5_000, busyIntervalMs: 1_000, busyTimeoutMs: 2_000 }
      const client = yield* Client.make({ host: "127.0.0.1", port: peer.port, maxConnections: 1, keepAlive, onPeerState: (s) => void states.push(s), log: () => {} })
      // Idle (connected, nothing asked): no ping at the busy interval.
      yield* awaitReal(client.mode(), "the connection")
      const session = client.meshSessions[0]!
      yield* TestClock.adjust("5 seconds")
      expect(session.ownControl.outstanding).toBe(0)
      // A call the peer never answers: the next silent second brings a ping.
      const pending = settle(client.call("/never-answered", "x", { timeoutMs: 0 }))
      yield* awaitReal(peer.take((p) => p.path === "/never-answered", 5000, "the call"), "the call at the peer")
      yield* TestClock.adjust("1 second")
      expect(session.ownControl.outstanding).toBe(1)
      yield* awaitReal(peer.take((p) => p.path === MeshPath.ping, 5000, "the ping"), "the ping at the peer")
      yield* TestClock.adjust("1999 millis")
      expect(session.closed).toBe(false)
      expect(states).toEqual([])
      yield* TestClock.adjust("1 millis")
      expect(session.closed).toBe(true)
      expect(session.connection.closeError?.message).toContain("no answer to a ping within 2000 ms")
      expect(states).toEqual(["unresponsive"])
      const result = yield* awaitReal(pending, "the pending call to fail")
      assert(!result.ok)
      expect(result.error).toBeInstanceOf(ConnectionClosed)
    }))

  it.effect("with calls waiting, silence while this side has paused its own reading is not the peer's: no close then, the count starts on resume", () =>
    Effect.gen(function*() {
      const cleanup = yield* useCleanup
      const peer = yield* Effect.promise(() => startRawMeshPeer(cleanup))
      const keepAlive = { intervalMs: 15_000, timeoutMs: 5_000, busyIntervalMs: 1_000, busyTimeoutMs: 2_000 }
      const client = yield* Client.make({ host: "127.0.0.1", port: peer.port, maxConnections: 1, keepAlive, log: () => {} })
      yield* awaitReal(client.mode(), "the connection")
      const session = client.meshSessions[0]!
      const pending = settle(client.call("/never-answered", "x", { timeoutMs: 0 }))
      yield* awaitReal(peer.take((p) => p.path === "/never-answered", 5000, "the call"), "the call at the peer")
      // Paused (as a budget or a congested writer pauses it): a minute of silence closes nothing.
      session.connection.pauseReading()
      yield* TestClock.adjust("60 seconds")
      expect(session.closed).toBe(false)
      // Resumed: the busy interval counts from here, then the unanswered ping closes as usual.
      session.connection.resumeReading()
      yield* TestClock.adjust("1 second")
      yield* awaitReal(peer.take((p) => p.path === MeshPath.ping, 5000, "the ping"), "the ping at the peer")
      yield* TestClock.adjust("2 seconds")
      expect(session.closed).toBe(true)
      expect(session.connection.closeError?.message).toContain("no answer to a ping within 2000 ms")
      yield* awaitReal(pending, "the pending call to fail")
    }))

  it.effect("does not ping while packets keep arriving", () =>
    Effect.gen(function*() {
      const server = yield* Server.make({ keepAlive: false, drainTimeoutMs: 0, log: () => {} })
      server.handle("/echo", (request) => request.data)
      const client = yield* Client.make({ host: "127.0.0.1", port: server.address.port, maxConnections: 1, keepAlive: { intervalMs: 1000, timeoutMs: 500 }, log: () => {} })
      expect((yield* Effect.promise(() => client.call("/echo", "a", { timeoutMs: 0 }))).toString()).toBe("a")
      const session = client.meshSessions[0]!
      for (let i = 0; i < 5; i++) {
        yield* TestClock.adjust("600 millis")
        // An answer within each interval: the connection is not silent, so no ping goes out.
        expect((yield* Effect.promise(() => client.call("/echo", `b${i}`, { timeoutMs: 0 }))).toString()).toBe(`b${i}`)
        expect(session.ownControl.outstanding).toBe(0)
      }
      expect(session.closed).toBe(false)
      expect(session.lastRttMs).toBeUndefined()
    }))
})

describe("drain on the TestClock", () => {
  it.effect("says go-away at once, keeps a busy connection open at 4.9 s, closes it at 5 s; the in-flight call fails with ConnectionClosed", () =>
    Effect.gen(function*() {
      const { server, client, call, events } = yield* callHeldAtServer()
      const clientSession = client.meshSessions[0]!
      const serverSession = [...server.meshSessions][0]!
      const goAway = new Promise<void>((resolve) => clientSession.onPeerDraining(resolve))
      const clientClosed = new Promise<void>((resolve) => clientSession.onClosed(() => resolve()))

      const drain = yield* Effect.forkChild(server.drain(5000))
      yield* awaitReal(goAway, "the go-away at the client")
      expect(clientSession.peerDraining).toBe(true)
      expect(serverSession.localDraining).toBe(true)

      yield* TestClock.adjust("4900 millis")
      expect(serverSession.closed).toBe(false)
      expect(server.connectionCount).toBe(1)
      expect(clientSession.closed).toBe(false)
      expect(drain.pollUnsafe()).toBeUndefined()

      yield* TestClock.adjust("100 millis")
      expect(serverSession.closed).toBe(true)
      yield* Fiber.join(drain)
      expect(events.map((e) => e.event)).toContain("drain-deadline")
      yield* awaitReal(clientClosed, "the client to see the close")
      const result = yield* awaitReal(call, "the in-flight call to fail")
      assert(!result.ok)
      expect(result.error).toBeInstanceOf(ConnectionClosed)
      expect((result.error as ConnectionClosed).sent).toBe(true)
      expect(client.stats.connections).toBe(0)
    }))

  it.effect("keeps its deadline by the clock when each sleep takes longer than asked (a loaded machine): done at 5 s, not after 500 sleeps", () =>
    Effect.gen(function*() {
      const { server, call, events } = yield* callHeldAtServer()
      const clock = yield* Clock.Clock
      // Every sleep lasts three times what it asked, as the drain's 10 ms ticks do on a busy machine.
      const slowSleeps: Clock.Clock = { ...clock, currentTimeMillis: clock.currentTimeMillis, sleep: (duration) => clock.sleep(Duration.times(duration, 3)) }
      const drain = yield* Effect.forkChild(server.drain(5000).pipe(Effect.provideService(Clock.Clock, slowSleeps)))
      yield* TestClock.adjust("5100 millis")
      expect(drain.pollUnsafe()).toBeDefined()
      expect(events.map((e) => e.event)).toContain("drain-deadline")
      yield* awaitReal(call, "the in-flight call to end")
    }))

  it.effect("closes a connection as soon as its in-flight request finished before the deadline, and that call succeeds", () =>
    Effect.gen(function*() {
      const started = deferred()
      const gate = deferred<string>()
      const server = yield* Server.make({ keepAlive: false, drainTimeoutMs: 0, log: () => {} })
      server.handle("/slow", async () => {
        started.resolve()
        return await gate.promise
      })
      const client = yield* Client.make({ host: "127.0.0.1", port: server.address.port, maxConnections: 1, keepAlive: false, log: () => {} })
      const call = settle(client.call("/slow", "x", { timeoutMs: 0 }))
      yield* awaitReal(started.promise, "the handler to start")
      const clientSession = client.meshSessions[0]!
      const serverSession = [...server.meshSessions][0]!
      const goAway = new Promise<void>((resolve) => clientSession.onPeerDraining(resolve))
      const clientClosed = new Promise<void>((resolve) => clientSession.onClosed(() => resolve()))
      const clock = yield* TestClock.testClockWith(Effect.succeed)
      const drainStartedAt = clock.currentTimeMillisUnsafe()

      const drain = yield* Effect.forkChild(server.drain(5000))
      yield* awaitReal(goAway, "the go-away at the client")
      yield* TestClock.adjust("1 second")
      expect(serverSession.closed).toBe(false) // still serving

      gate.resolve("slow answer")
      const result = yield* awaitReal(call, "the call to succeed")
      assert(result.ok)
      expect(result.value.toString()).toBe("slow answer")
      // Idle now: the next drain tick (every 10 ms) closes it, long before the deadline.
      yield* TestClock.adjust("10 millis")
      expect(serverSession.closed).toBe(true)
      expect(serverSession.connection.closeError?.message).toContain("drained")
      yield* Fiber.join(drain)
      expect(clock.currentTimeMillisUnsafe() - drainStartedAt).toBeLessThan(5000)
      yield* awaitReal(clientClosed, "the client to see the close")
      expect(client.stats.connections).toBe(0)
    }))

  // A graceful close writes what was queued in the same tick (the go-away) before its FIN.
  it.effect("an idle mesh connection receives the go-away before drain closes it", () =>
    Effect.gen(function*() {
      const server = yield* Server.make({ keepAlive: false, drainTimeoutMs: 0, log: () => {} })
      server.handle("/echo", (request) => request.data)
      const client = yield* Client.make({ host: "127.0.0.1", port: server.address.port, maxConnections: 1, keepAlive: false, log: () => {} })
      expect((yield* Effect.promise(() => client.call("/echo", "a", { timeoutMs: 0 }))).toString()).toBe("a")
      const clientSession = client.meshSessions[0]!
      const closed = new Promise<string>((resolve) => clientSession.onClosed((error) => resolve(error.message)))
      const goAway = new Promise<void>((resolve) => clientSession.onPeerDraining(resolve))
      const drain = yield* Effect.forkChild(server.drain(5000))
      yield* awaitReal(goAway, "the client to see the go-away")
      // Its answer to the go-away is on the way back (real I/O): step the drain's 10 ms checks until it closes.
      const serverSession = [...server.meshSessions][0]!
      yield* until(() => serverSession.goAwayAcknowledged, "the server to get the go-away answered")
      yield* TestClock.adjust("10 millis")
      const reason = yield* awaitReal(closed, "the client to see the close")
      yield* Fiber.join(drain)
      expect({ goAwaySeen: clientSession.peerDraining, reason }).toMatchObject({ goAwaySeen: true })
    }))

  // An answer still streaming out counts as running: drain waits for it (PROTOCOL.md §11).
  it.effect("lets an answer that is still streaming out finish before it closes the connection", () =>
    Effect.gen(function*() {
      const TOTAL = 8 * 1024 * 1024
      const server = yield* Server.make({ keepAlive: false, drainTimeoutMs: 0, log: () => {} })
      server.handle("/firehose", () =>
        reply(
          (async function*() {
            for (let i = 0; i < TOTAL / 65536; i++) yield Buffer.alloc(65536, i & 0xff)
          })()
        )
      )
      const client = yield* Client.make({ host: "127.0.0.1", port: server.address.port, maxConnections: 1, keepAlive: false, log: () => {} })
      const answer = yield* awaitReal(client.stream("/firehose", Buffer.from("go"), { timeoutMs: 0 }), "the answer to start")
      const serverSession = [...server.meshSessions][0]!
      const drain = yield* Effect.forkChild(server.drain(5000))
      const read = yield* awaitReal(
        settle(
          (async () => {
            let bytes = 0
            for await (const chunk of answer.stream!) bytes += chunk.length
            return bytes
          })()
        ),
        "the streamed answer",
        30_000
      )
      expect(read.ok ? read.value : `failed: ${(read.error as Error).message}`).toBe(TOTAL)
      // Once the answer is out, the next drain tick closes the idle connection.
      yield* TestClock.adjust("10 millis")
      expect(serverSession.closed).toBe(true)
      yield* Fiber.join(drain)
    }))
})

describe("redial backoff", () => {
  it("backoffDelay: 50-100 % of min(maxMs, baseMs * 2^failures)", () => {
    const options = { baseMs: 100, maxMs: 1000 }
    const ceilings = [100, 200, 400, 800, 1000, 1000, 1000]
    ceilings.forEach((ceiling, failures) => {
      expect(backoffDelay(failures, options, 0)).toBe(ceiling / 2)
      expect(backoffDelay(failures, options, 1)).toBe(ceiling)
      expect(backoffDelay(failures, options, 0.5)).toBe(Math.round(ceiling * 0.75))
      for (let r = 0; r < 1; r += 0.01) {
        const delay = backoffDelay(failures, options, r)
        expect(delay).toBeGreaterThanOrEqual(ceiling / 2)
        expect(delay).toBeLessThanOrEqual(ceiling)
      }
    })
    // No overflow however many failures: the cap holds.
    expect(backoffDelay(1e6, options, 1)).toBe(1000)
    expect(backoffDelay(1e6, { baseMs: 100, maxMs: 5000 }, 0)).toBe(2500)
    expect(backoffDelay(0, { baseMs: 100, maxMs: 50 }, 1)).toBe(50) // maxMs below baseMs caps the first delay too
  })

  /**
   * A client for a port where nothing listens, with every connection attempt (net.connect, seen
   * through the `net.client.socket` diagnostics channel) and every `connect-failed` event stamped
   * with the TestClock's time. The event is the redial fiber's own report of a failed attempt, made
   * just before it sleeps: the waits key on the failure count it carries, and the client gets a
   * throttle that lets every line out (its default one, 10 lines a minute of real time, passed
   * six; one as the registry's, 5 for repeats, hid the sixth and the test waited for it in vain).
   */
  const deadEndClient = Effect.gen(function*() {
    const port = yield* Effect.promise(freePort)
    const clock = yield* TestClock.testClockWith(Effect.succeed)
    const attempts: Array<number> = []
    const onSocket = () => void attempts.push(clock.currentTimeMillisUnsafe())
    yield* Effect.acquireRelease(
      Effect.sync(() => dc.subscribe("net.client.socket", onSocket)),
      () => Effect.sync(() => void dc.unsubscribe("net.client.socket", onSocket))
    )
    const failures: Array<{ readonly at: number; readonly failures: number }> = []
    const waiters = new Map<number, () => void>()
    const client = yield* Client.make({
      host: "127.0.0.1",
      port,
      maxConnections: 1,
      keepAlive: false,
      reconnect: { baseMs: 100, maxMs: 1000 },
      connectFailedLines: new LogThrottle(Number.MAX_SAFE_INTEGER, 60_000),
      log: (event, fields) => {
        if (event !== "connect-failed") return
        const failed = fields.failures as number
        failures.push({ at: clock.currentTimeMillisUnsafe(), failures: failed })
        waiters.get(failed)?.()
      }
    })
    /** Waits (real I/O, bounded) for the n-th failed attempt, as the client counts them. */
    const failure = (n: number) =>
      awaitReal(
        new Promise<void>((resolve) => (failures.some((f) => f.failures >= n) ? resolve() : waiters.set(n, resolve))),
        `failed attempt ${n}`
      )
    return { client, attempts, failures, failure }
  })

  it.effect("redials with delays within 50-100 % of 100, 200, 400, 800, 1000, 1000 ms while a request waits", () =>
    Effect.gen(function*() {
      const { client, attempts, failures, failure } = yield* deadEndClient
      const outcomes: Array<unknown> = []
      client.send("/x", Buffer.from("x"), { timeoutMs: 60_000 }, (error) => void outcomes.push(error))
      expect(attempts).toEqual([0]) // the first attempt goes out at once
      const ceilings = [100, 200, 400, 800, 1000, 1000]
      const delays: Array<number> = []
      for (let k = 1; k <= ceilings.length; k++) {
        const ceiling = ceilings[k - 1]!
        yield* failure(k)
        expect(failures[k - 1]!.failures).toBe(k)
        // The redial fiber now sleeps from the time of that failure. Step the clock 10 ms at a time
        // (shorter than any delay, so one step can never hold two attempts) until the next attempt.
        const failedAt = failures[k - 1]!.at
        const clock = yield* TestClock.testClockWith(Effect.succeed)
        while (attempts.length === k && clock.currentTimeMillisUnsafe() - failedAt <= ceiling) yield* TestClock.adjust("10 millis")
        expect(attempts.length).toBe(k + 1)
        // Each attempt is stamped with the clock at the moment its sleep woke: the exact delay.
        const delay = attempts[k]! - failedAt
        delays.push(delay)
        expect(delay).toBeGreaterThanOrEqual(ceiling / 2)
        expect(delay).toBeLessThanOrEqual(ceiling)
      }
      console.log(`[mesh-clock] redial delays (TestClock ms) after failures 1..6: ${delays.join(", ")}`)
      expect(outcomes).toEqual([]) // the request is still waiting for a connection
      expect(client.stats.queued).toBe(1)
    }))

  // A failed attempt does not fail queued requests: they wait, within their own timeout, for the
  // next attempt.
  it.effect("a call queued with timeoutMs 60_000 keeps waiting after the first failed attempt, and the client tries again", () =>
    Effect.gen(function*() {
      const { client, attempts, failure } = yield* deadEndClient
      const call = settle(client.call("/x", "x", { timeoutMs: 60_000 }))
      expect(attempts).toEqual([0])
      yield* failure(1)
      yield* TestClock.adjust("100 millis")
      expect(attempts.length).toBe(2)
      expect(client.stats.queued).toBe(1)
      client.close()
      const result = yield* Effect.promise(() => call)
      assert(!result.ok)
      expect(result.error).toBeInstanceOf(ConnectionClosed) // failed by close(), not by the first attempt
    }))
})
