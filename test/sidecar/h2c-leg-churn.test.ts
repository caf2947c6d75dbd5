// B's h2c leg (appH2.ts, appH2Exchange.ts, appH2Session.ts) under churn: 5,000 calls to a
// node:http2 app that answers some at once, holds some past their deadline, holds others until
// their caller cancels, resets some itself, and now and then sends GOAWAY on its session; B's
// resets (over a thousand a session) drain sessions for nghttp2's reset budget too. Every
// call must end exactly once, and once all have, every count the leg keeps of places (its open
// streams, the current session's, long-lived ones, those waiting, the drains for resets) must be
// back at zero and no stream left open on any session: a leak there starves the app after N calls.
// And a session whose stream ids are spent is left for a new one (each call was refused on it).
import * as http2 from "node:http2"
import type * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { type Outcome, PendingOutcome } from "../../src/mux/request.ts"
import { AppH2Leg } from "../../src/sidecar/appH2.ts"
import type { AppH2Request } from "../../src/sidecar/appH2RequestHead.ts"
import { InboundObservation } from "../../src/sidecar/observe.ts"
import { makeMetrics } from "../../src/telemetry/metrics.ts"
import { TraceStore } from "../../src/telemetry/traceStore.ts"
import { makeTracing } from "../../src/telemetry/tracing.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { TestCancel as Cancel } from "../support/testCancel.ts"
import { LOOPBACK } from "../support/sidecarHarness.ts"

/** Reads a streamed answer to its end or its error. */
const drain = async (body: AsyncIterable<Uint8Array>): Promise<void> => {
  try {
    for await (const _chunk of body);
  } catch {
    // Its error is the call's end, counted by its outcome.
  }
}

/** Counts every settle: PendingOutcome keeps the first, a second one would be a call ended twice. */
class CountedOutcome extends PendingOutcome {
  settled = 0
  override settle(outcome: Outcome): void {
    this.settled++
    super.settle(outcome)
  }
}

/** The leg's counts of places, read from its private fields (nothing public names them all). */
const countsOf = (leg: AppH2Leg) => {
  const l = leg as unknown as {
    openStreams: number
    currentStreams: number
    longStreams: number
    holding: Set<unknown>
    resetDrains: Map<unknown, number>
    sessions: Set<{ connection: { openStreams?: number; streams?: Map<number, unknown> } }>
  }
  const streamsOnSessions = [...l.sessions].reduce((sum, session) => sum + ((session.connection as unknown as { streams: Map<number, unknown> }).streams.size), 0)
  return { open: l.openStreams, current: l.currentStreams, long: l.longStreams, holding: l.holding.size, waiting: leg.waitingStreams, drains: l.resetDrains.size, streamsOnSessions }
}

/**
 * A leg to the app listening on `app` (32 places), closed at cleanup, and `send`: one GET of `path`
 * through it as the inbound side makes it (`timeLeftMs`, `cancel`), its outcome to `pending`.
 */
const legTo = (cleanup: Cleanup, app: http2.Http2Server) => {
  const leg = new AppH2Leg(LOOPBACK, (app.address() as net.AddressInfo).port, undefined, 5000, 32)
  cleanup.add(() => leg.close())
  const tracing = makeTracing({ service: "catalog", store: new TraceStore(), env: {} })
  cleanup.add(() => tracing.shutdown())
  const telemetry = { tracing, metrics: makeMetrics(), traces: new TraceStore() }
  const send = (path: string, timeLeftMs: number, cancel: Cancel, pending: PendingOutcome) => {
    const request: AppH2Request = { method: "GET", path, authority: "catalog", headers: [], body: Buffer.alloc(0), timeLeftMs, maxMetaBytes: 8192, plain: false, trailers: true }
    leg.forward(request, new InboundObservation(telemetry, "catalog", "GET", path, [], "127.0.0.1:40000"), cancel, pending)
  }
  return { leg, send }
}

describe("B's h2c leg under churn", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("5,000 calls answered, past their deadline, cancelled, reset by the app, and app GOAWAYs: each ends once, every count back at zero", { timeout: 60_000 }, async () => {
    let streams = 0
    const app = http2.createServer({ settings: { maxConcurrentStreams: 64 } })
    const sessions = new Set<http2.ServerHttp2Session>()
    app.on("session", (session) => {
      sessions.add(session)
      session.on("close", () => sessions.delete(session))
      session.on("error", () => {})
    })
    app.on("stream", (stream, headers) => {
      stream.on("error", () => {})
      const n = streams++
      // Every 2,500th stream: the app sends GOAWAY on its session (the streams open there finish).
      if (n % 2500 === 2499) stream.session?.goaway(0, stream.id)
      const kind = String(headers[":path"]).slice(1)
      if (kind === "ok") {
        stream.respond({ ":status": 200 })
        stream.end("ok")
      } else if (kind === "reset") stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR)
      else if (kind === "late") {
        // Answered after the caller's deadline: B resets it first.
        const timer = setTimeout(() => {
          if (!stream.closed) stream.respond({ ":status": 200 }, { endStream: true })
        }, 200)
        stream.once("close", () => clearTimeout(timer))
      } else if (kind === "stream") {
        // A head and a first chunk, then nothing: the caller cancels it while it streams.
        stream.respond({ ":status": 200 })
        stream.write(Buffer.alloc(70_000, 0x61))
      }
      // "held": nothing until the caller cancels.
    })
    await new Promise<void>((resolve) => app.listen(0, LOOPBACK, resolve))
    cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
    cleanup.add(() => sessions.forEach((session) => session.destroy()))

    const { leg, send } = legTo(cleanup, app)
    const kinds = ["ok", "late", "held", "reset", "stream"] as const
    const outcomes: Array<CountedOutcome> = []
    let ended = 0
    const total = 5000
    let sent = 0
    await new Promise<void>((done) => {
      const one = () => {
        if (sent === total) return
        const kind = kinds[sent % kinds.length]!
        sent++
        const pending = new CountedOutcome()
        outcomes.push(pending)
        const cancel = new Cancel()
        send(`/${kind}`, kind === "late" ? 50 : 10_000, cancel, pending)
        // Held and streaming calls are cancelled soon after, in a later turn.
        if (kind === "held" || kind === "stream") setTimeout(() => cancel.fire(), 5)
        void Promise.resolve(pending).then((outcome) => {
          // An answer that began to stream (its turn's hold over before its end: a loaded machine)
          // is read as the mesh's sender reads it, but for the "stream" calls', cancelled unread.
          if (kind !== "stream" && !(outcome instanceof Uint8Array) && outcome._tag === "Reply" && !(outcome.body instanceof Uint8Array)) void drain(outcome.body)
          ended++
          if (ended === total) done()
          else setImmediate(one)
        })
      }
      // 48 calls at a time: past the leg's 32 places, so some wait for one.
      for (let i = 0; i < 48; i++) one()
    })
    expect(outcomes.filter((outcome) => outcome.settled !== 1).length).toBe(0)
    // Each way of ending happened, and sessions were drained for their resets and after GOAWAYs.
    const ends = new Set<string>()
    for (const outcome of outcomes) {
      const out = await outcome
      ends.add(out instanceof Uint8Array ? "bytes" : out._tag === "Failure" ? out.code : "reply")
    }
    expect([...ends].sort()).toEqual(expect.arrayContaining(["app_failed", "cancelled", "deadline_exceeded", "reply"]))
    expect((leg as unknown as { sessionsRotated: number }).sessionsRotated).toBeGreaterThan(0)
    // A session drained for its resets closes once its last stream is over (its socket's close ends the drain).
    await waitFor(() => countsOf(leg).streamsOnSessions === 0 && countsOf(leg).open === 0 && countsOf(leg).drains === 0, 5000, "every stream over")
    expect(countsOf(leg)).toStrictEqual({ open: 0, current: 0, long: 0, holding: 0, waiting: 0, drains: 0, streamsOnSessions: 0 })
    // Nor a byte or an answer left counted in the held answers' budget (heldAnswers.ts): every way
    // of ending let go of what it held (the "stream" calls' answers were never read, then cancelled).
    await waitFor(() => leg.held.bytes === 0 && leg.held.counted === 0, 5000, "the held answers' counts back to 0")
    expect({ bytes: leg.held.bytes, whole: leg.held.whole, counted: leg.held.counted }).toEqual({ bytes: 0, whole: 0, counted: 0 })
    // A call made after the churn is answered at once: no place leaked.
    const after = new CountedOutcome()
    send("/ok", 5000, new Cancel(), after)
    expect(await after).toMatchObject({ _tag: "Reply" })
  })

  it("a session out of stream ids (2^31-1 reached) is left for a fresh one: the calls after it are answered, not refused for ever", async () => {
    const app = http2.createServer()
    const sessions = new Set<http2.ServerHttp2Session>()
    app.on("session", (session) => sessions.add(session))
    app.on("stream", (stream) => {
      stream.on("error", () => {})
      stream.respond({ ":status": 200 })
      stream.end("ok")
    })
    await new Promise<void>((resolve) => app.listen(0, LOOPBACK, resolve))
    cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
    cleanup.add(() => sessions.forEach((session) => session.destroy()))
    const { leg, send } = legTo(cleanup, app)
    const get = async () => {
      const pending = new PendingOutcome()
      send("/ok", 5000, new Cancel(), pending)
      const outcome = await pending
      return outcome instanceof Uint8Array ? "bytes" : outcome._tag === "Failure" ? outcome.message : "reply"
    }
    expect(await get()).toBe("reply")
    // The session's next stream is its last (2^31-1): as if a billion calls had gone over it.
    const first = [...(leg as unknown as { sessions: Set<{ connection: unknown }> }).sessions][0]!
    ;(first.connection as { nextId: number }).nextId = 2 ** 31 - 1
    expect(await get()).toBe("reply")
    expect([await get(), await get()]).toEqual(["reply", "reply"])
    expect(sessions.size).toBe(2)
  })
})
