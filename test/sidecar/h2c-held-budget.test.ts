// B's budget for what its h2c leg's answers hold (src/sidecar/heldAnswers.ts). Each stream B opens to
// the app has a 256 KiB window, given back as the mesh takes the answer, and its queue pauses past
// 64 KiB: an answer nobody reads holds ~320 KiB at B, on each of --app-h2-max-streams streams
// (1,024 by default: ~320 MiB) when one caller opens many streaming calls and reads none (alone,
// peerShare's reclaim never runs: nobody else waits). Before, nothing bounded the sum. Now past the
// budget the answers stalled longest are taken back (the app's stream reset, the caller told
// `overloaded`, naming the budget), until under it; a reader that keeps reading is not cut; and the
// count is exact: back to 0 once calls end every way (read to their end, taken back, cancelled,
// past their deadline, failed by the app).
// Real peer: a grpc-js app answering a server stream of 64 KiB messages; the leg driven as the
// inbound side drives it (h2c-leg-churn.test.ts), its answers read, or not, as the mesh would.
import * as grpc from "@grpc/grpc-js"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { type Outcome, PendingOutcome } from "../../src/mux/request.ts"
import { AppH2Leg } from "../../src/sidecar/appH2.ts"
import type { AppH2Request } from "../../src/sidecar/appH2RequestHead.ts"
import { HeldAnswers } from "../../src/sidecar/heldAnswers.ts"
import { InboundObservation } from "../../src/sidecar/observe.ts"
import { makeMetrics } from "../../src/telemetry/metrics.ts"
import { TraceStore } from "../../src/telemetry/traceStore.ts"
import { makeTracing } from "../../src/telemetry/tracing.ts"
import { metric } from "../support/eventStreamApp.ts"
import { grpcMessage, identity, rawMethod, unaryText } from "../support/grpcRaw.ts"
import { Cleanup, frame, waitFor } from "../support/iipRaw.ts"
import { meshDialer } from "../support/budgetAttack.ts"
import { encodeEnvelope, EnvelopeKind } from "../../src/protocol/mesh.ts"
import { HttpMeta } from "../../src/sidecar/httpEnvelope.ts"
import { TestCancel as Cancel } from "../support/testCancel.ts"
import { LOOPBACK, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const MiB = 1024 * 1024
const BUDGET = 2 * MiB
/** Calls nobody reads: ~320 KiB each at B once stalled, 5 MiB in all, past the budget. */
const STALLED = 16
/** Messages of 64 KiB an answer carries (4 MiB), then its trailers. */
const MESSAGES = 64
const MESSAGE = Buffer.alloc(64 * 1024, 0x61)
/** What one stalled answer holds at most at B: its queue's high-water mark and its stream's window. */
const ONE_HELD = 320 * 1024

/** The streamed answer's queue as the mesh reads it; `queued`: what it holds now (its private count, on every version). */
/** A streamed answer (byteQueue.ts): `queued` its queue, `heldBytes` that and the chunk its reader holds (what the budget counts). */
type Body = AsyncIterable<Buffer> & { readonly queued: number; readonly heldBytes: number }

const FEED = { Watch: rawMethod("demo.Feed", "Watch", false, true), Break: rawMethod("demo.Feed", "Break", false, true), Small: rawMethod("demo.Feed", "Small", false, false), Snapshot: rawMethod("demo.Feed", "Snapshot", false, true), Medium: rawMethod("demo.Feed", "Medium", false, false), Short: rawMethod("demo.Feed", "Short", false, true), Late: rawMethod("demo.Feed", "Late", false, true) }
/** What Short answers: 3 messages of MESSAGE, then its end (within the 256 KiB window B gives each stream). */
const SHORT_BYTES = 3 * (64 * 1024 + 5)
/** Snapshot's one message (48 KiB): under the queue's 64 KiB high-water mark, so its stream never pauses. */
const SNAPSHOT = Buffer.alloc(48 * 1024, 0x62)
const FeedClient = grpc.makeGenericClientConstructor(FEED, "Feed")

/** A grpc-js app: Watch streams MESSAGES messages as fast as B's window lets it (or until cancelled); Small answers one; Break fails after 8. */
const startApp = async (cleanup: Cleanup) => {
  const streams = { blocked: new Set<grpc.ServerWritableStream<Buffer, Buffer>>(), over: 0, late: [] as Array<() => void> }
  const server = new grpc.Server()
  const watch = (fail: boolean) => (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
    let sent = 0
    call.on("cancelled", () => {
      streams.blocked.delete(call)
      streams.over++
    })
    const pump = () => {
      streams.blocked.delete(call)
      while (!call.cancelled && sent < MESSAGES) {
        if (fail && sent === 8) return call.emit("error", { code: grpc.status.INTERNAL, details: "broke" })
        sent++
        if (!call.write(MESSAGE)) {
          // Blocked on B's window: what B holds of it now is all it will until B takes more.
          streams.blocked.add(call)
          return void call.once("drain", pump)
        }
      }
      if (!call.cancelled) call.end()
    }
    pump()
  }
  server.addService(
    FEED,
    {
      Watch: watch(false),
      Break: watch(true),
      Small: (_call: unknown, done: grpc.sendUnaryData<Buffer>) => done(null, Buffer.from("small")),
      Medium: (_call: unknown, done: grpc.sendUnaryData<Buffer>) => done(null, Buffer.alloc(60 * 1024, 0x63)),
      Short: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        for (let i = 0; i < 3; i++) call.write(MESSAGE)
        call.end()
      },
      // Its head alone, then Watch's messages once the test says so (`streams.late`): B streams the answer before any of its bytes came.
      Late: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        call.sendMetadata(new grpc.Metadata())
        streams.late.push(() => watch(false)(call))
      },
      // A watch's first answer, then nothing until cancelled (a snapshot, then events that do not come).
      Snapshot: (call: grpc.ServerWritableStream<Buffer, Buffer>) => void call.write(SNAPSHOT)
    }
  )
  const port = await new Promise<number>((resolve, reject) => server.bindAsync(`${LOOPBACK}:0`, grpc.ServerCredentials.createInsecure(), (error, bound) => (error === null ? resolve(bound) : reject(error))))
  cleanup.add(() => new Promise<void>((resolve) => server.tryShutdown(() => resolve())))
  cleanup.add(() => server.forceShutdown())
  return { port, streams }
}

/** The leg (64 places, the budget given), and `send`: one gRPC call of `method` through it, its outcome. */
const legTo = (cleanup: Cleanup, port: number, budget = BUDGET) => {
  const held = new HeldAnswers(budget)
  const leg = new AppH2Leg(LOOPBACK, port, undefined, 60_000, 64, undefined, held)
  cleanup.add(() => leg.close())
  const tracing = makeTracing({ service: "feed", store: new TraceStore(), env: {} })
  cleanup.add(() => tracing.shutdown())
  const telemetry = { tracing, metrics: makeMetrics(), traces: new TraceStore() }
  const send = (method: string, timeLeftMs = 30_000, cancel = new Cancel()): PendingOutcome => {
    const path = `/demo.Feed/${method}`
    const headers: Array<readonly [string, string]> = [["content-type", "application/grpc"], ["te", "trailers"]]
    const request: AppH2Request = { method: "POST", path, authority: "feed", headers, body: grpcMessage(Buffer.alloc(0)), timeLeftMs, maxMetaBytes: 8192, plain: false, trailers: true }
    const pending = new PendingOutcome()
    leg.forward(request, new InboundObservation(telemetry, "feed", "POST", path, headers, "127.0.0.1:40000"), cancel, pending)
    return pending
  }
  return { leg, held, send }
}

/** The streamed body of a reply (the test fails on anything else). */
const bodyOf = (outcome: Outcome): Body => {
  if (outcome instanceof Uint8Array || outcome._tag !== "Reply" || outcome.body instanceof Uint8Array) throw new Error(`not a streamed reply: ${JSON.stringify(outcome)}`)
  return outcome.body as unknown as Body
}

/** Reads `body` to its end or its error: the bytes read and the error's code and message, if any. */
const readAll = async (body: Body): Promise<{ read: number; code?: string; message?: string }> => {
  let read = 0
  try {
    for await (const chunk of body) read += chunk.length
    return { read }
  } catch (error) {
    const { code, message } = error as { code: string; message: string }
    return { read, code, message }
  }
}

describe("B's budget for what its h2c answers hold", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it(`${STALLED} streaming calls nobody reads hold no more than the budget (${BUDGET} bytes); the stalled longest are taken back, a reader that keeps reading is not; every count back to 0`, { timeout: 60_000 }, async () => {
    const { port, streams } = await startApp(cleanup)
    const { leg, held, send } = legTo(cleanup, port)
    // A reader that keeps reading, from before the stalls to after them.
    const reader = bodyOf(await send("Watch"))
    const reading = readAll(reader)
    const stalled: Array<Body> = []
    for (let i = 0; i < STALLED; i++) stalled.push(bodyOf(await send("Watch")))
    // Each stalled answer's app stream waits on B's window (what B holds of it is all it will), or was taken back.
    const heldNow = () => stalled.reduce((sum, body) => sum + body.queued, 0)
    // Until B holds past the budget (before: nothing took any back), or took some back and holds
    // near the budget, the others' app streams waiting on B's window.
    let most = 0
    await waitFor(() => {
      most = Math.max(most, heldNow())
      return most > BUDGET || (held.takenBack > 0 && heldNow() > BUDGET - ONE_HELD && streams.blocked.size + streams.over >= STALLED)
    }, 20_000, "the stalled answers to fill B's budget")
    // Before: 16 answers of ~320 KiB, 5 MiB held (no budget). Now within the budget, and counted exactly.
    expect(most).toBeLessThanOrEqual(BUDGET)
    expect(heldNow()).toBeLessThanOrEqual(BUDGET)
    expect(held.bytes).toBe(heldNow() + reader.heldBytes)
    // Another caller's call is still answered.
    const small = await send("Small")
    expect(small).toMatchObject({ _tag: "Reply" })
    // The reader read its whole answer: never taken back.
    expect(await reading).toEqual({ read: MESSAGES * (MESSAGE.length + 5) })
    // The stalled callers taken back read why (nothing of what they never read comes first), the budget named.
    const ends = await Promise.all(stalled.map(async (body) => (body.queued === 0 ? await readAll(body) : undefined)))
    const takenBack = ends.filter((end) => end?.code === "overloaded")
    expect(takenBack.length).toBe(held.takenBack)
    expect(takenBack[0]!.read).toBe(0)
    expect(takenBack[0]!.message).toMatch(/taken back at the inbound sidecar: the answers of its app held \d+ bytes their callers had not read, past --app-h2-max-held-bytes 2097152; this one held \d+, and it waited \d+ ms on its reader, which took none of it/)
    // Those kept are read to their end now.
    const kept = stalled.filter((_body, i) => ends[i] === undefined)
    expect(kept.length).toBeGreaterThan(0)
    for (const end of await Promise.all(kept.map(readAll))) expect(end).toEqual({ read: MESSAGES * (MESSAGE.length + 5) })
    // Other ways to end, each while its answer holds bytes: cancelled, past its deadline, failed by the app.
    const cancel = new Cancel()
    const cancelled = bodyOf(await send("Watch", 30_000, cancel))
    const late = bodyOf(await send("Watch", 1_500))
    const broken = bodyOf(await send("Break"))
    await waitFor(() => cancelled.queued > 0 && late.queued > 0 && broken.queued > 0, 5_000, "the three answers to hold bytes")
    cancel.fire()
    expect((await readAll(cancelled)).code).toBe("cancelled")
    // Unread past its deadline: what it held is let go of then (nobody had begun reading it).
    await waitFor(() => late.queued === 0, 5_000, "the late call's deadline")
    expect((await readAll(late)).code).toBe("deadline_exceeded")
    expect((await readAll(broken)).read).toBe(8 * (MESSAGE.length + 5))
    // Every count back to 0: no byte, no answer left counted.
    await waitFor(() => held.bytes === 0 && held.counted === 0, 5_000, "the budget's counts to be back to 0")
    expect({ bytes: held.bytes, counted: held.counted, waiting: leg.waitingStreams }).toEqual({ bytes: 0, counted: 0, waiting: 0 })
  })

  it("an answer that streamed before its first byte, whose reader took none of it, is taken back as one that took none, ahead of a reader that took one chunk", { timeout: 30_000 }, async () => {
    const { port, streams } = await startApp(cleanup)
    // Room for one stalled answer (its stream's window, 256 KiB, held), not two.
    const { held, send } = legTo(cleanup, port, 384 * 1024)
    // Its head alone came: B streams it (the wait for a whole answer is over), nothing queued, nobody waiting on it yet.
    const stalled = bodyOf(await send("Late"))
    streams.late.shift()!()
    await waitFor(() => streams.blocked.size === 1, 10_000, "the stalled answer's app stream to wait on B's window")
    // The other's reader waits for a chunk as its bytes start, takes that one and no more.
    const slow = bodyOf(await send("Late"))
    const chunks = slow[Symbol.asyncIterator]()
    const first = chunks.next()
    streams.late.shift()!()
    const taken = (await first).value!.length
    await waitFor(() => held.takenBack === 1, 10_000, "one answer taken back")
    const end = await readAll(stalled)
    expect(end.code).toBe("overloaded")
    expect(end.message).toMatch(/it waited \d+ ms on its reader, which took none of it, the longest of those held/)
    // The one that took a chunk is kept, and reads on to its end.
    let rest = 0
    for (let next = await chunks.next(); next.done !== true; next = await chunks.next()) rest += next.value.length
    expect(taken + rest).toBe(MESSAGES * (MESSAGE.length + 5))
  })

  it("answers nobody reads that hold less than a queue's high-water mark are taken back before a reader that keeps reading", { timeout: 60_000 }, async () => {
    const { port } = await startApp(cleanup)
    const { held, send } = legTo(cleanup, port)
    // Snapshots nobody reads, just under the budget together: each one's stream never pauses.
    const idle: Array<Body> = []
    for (let i = 0; i < 40; i++) idle.push(bodyOf(await send("Snapshot")))
    await waitFor(() => idle.every((body) => body.queued === SNAPSHOT.length + 5), 10_000, "the snapshots to be held at B")
    expect(held.bytes).toBeLessThan(BUDGET)
    // A reader that keeps reading a large answer: the app outruns it now and then (its stream pauses).
    const reader = await readAll(bodyOf(await send("Watch")))
    expect({ reader, takenBack: held.takenBack > 0 }).toEqual({ reader: { read: MESSAGES * (MESSAGE.length + 5) }, takenBack: true })
    for (const body of idle) await body[Symbol.asyncIterator]().return?.()
  })

  it("through the mesh: grpc-js callers that pause their server streams are told why once they read on, B holds no more than its budget, another pod's call is answered", { timeout: 60_000 }, async () => {
    const { port, streams } = await startApp(cleanup)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "feed", app: `${LOOPBACK}:${port}`, appProtocol: "h2c", appH2MaxHeldBytes: BUDGET, requestTimeoutMs: 30_000 }))
    const endpoints = { feed: [{ address: b.inboundAddress, weight: 1 }] }
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints, requestTimeoutMs: 30_000 }))
    const other = await startSidecar(cleanup, sidecarConfig({ service: "store2", endpoints, requestTimeoutMs: 30_000 }))
    const staller = new FeedClient(`${LOOPBACK}:${a.outboundPort}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "feed" })
    const honest = new FeedClient(`${LOOPBACK}:${other.outboundPort}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "feed" })
    cleanup.add(() => staller.close())
    cleanup.add(() => honest.close())
    // Calls whose reader pauses at once: A takes a mesh window of each (1 MiB), then B holds the rest.
    const calls = Array.from({ length: STALLED }, () => {
      const call = staller.makeServerStreamRequest(FEED.Watch.path, identity, identity, Buffer.alloc(0), new grpc.Metadata(), { deadline: Date.now() + 50_000 })
      call.pause()
      let read = 0
      const ended = new Promise<{ read: number; code: number; details: string; meshError: Array<grpc.MetadataValue> }>((resolve) => {
        call.on("data", (message: Buffer) => (read += message.length))
        call.on("error", (error: grpc.ServiceError) => resolve({ read, code: error.code, details: error.details, meshError: error.metadata.get("x-iip-mesh-error") }))
        call.on("status", (status: grpc.StatusObject) => status.code === grpc.status.OK && resolve({ read, code: 0, details: "", meshError: [] }))
      })
      return { call, ended }
    })
    // B's gauge, polled until it took some back and holds near its budget: never past it.
    let most = 0
    let held = 0
    let takenBack = 0
    const polledUntil = performance.now() + 20_000
    for (;;) {
      held = await metric(b, /^iip_mesh_app_h2_held_bytes /)
      most = Math.max(most, held)
      takenBack = await metric(b, /^iip_mesh_app_h2_held_taken_back_total /)
      if (takenBack > 0 && held > BUDGET - ONE_HELD && streams.blocked.size + streams.over >= STALLED) break
      if (performance.now() > polledUntil) throw new Error(`B took back ${takenBack} answers in 20 s, holding at most ${most} bytes`)
      await new Promise<void>((resolve) => setTimeout(resolve, 5))
    }
    expect(most).toBeGreaterThan(0)
    expect(most).toBeLessThanOrEqual(BUDGET)
    // Another pod's call is answered meanwhile.
    expect(await unaryText(honest, FEED.Small.path, "hi", new grpc.Metadata())).toBe("small")
    // The stalled callers read on: those taken back get what A had taken of theirs, then why: RESOURCE_EXHAUSTED (the
    // app ran the call, a budget ran out: grpc-js and retry policies do not retry it; UNAVAILABLE invited a retry of
    // a processed call), the budget named; the rest their whole answer.
    for (const { call } of calls) call.resume()
    const ends = await Promise.all(calls.map(({ ended }) => ended))
    const cut = ends.filter((end) => end.code !== 0)
    expect(cut.length).toBe(await metric(b, /^iip_mesh_app_h2_held_taken_back_total /))
    expect(cut.map((end) => end.code)).toEqual(cut.map(() => grpc.status.RESOURCE_EXHAUSTED))
    expect(cut.map((end) => end.meshError)).toEqual(cut.map(() => ["inbound; reason=overloaded"]))
    expect(cut[0]!.read).toBeLessThan(MESSAGES * MESSAGE.length)
    expect(cut[0]!.details).toMatch(/taken back at the inbound sidecar: the answers of its app held \d+ bytes their callers had not read, past --app-h2-max-held-bytes 2097152/)
    expect(ends.filter((end) => end.code === 0).every((end) => end.read === MESSAGES * MESSAGE.length)).toBe(true)
    await waitFor(() => streams.blocked.size === 0, 5_000, "no app stream left waiting")
    expect(await metric(b, /^iip_mesh_app_h2_held_bytes /)).toBe(0)
  })

  it("a caller's mesh connection lost while B holds its unread answers: B's count back to 0, every app stream cancelled", { timeout: 60_000 }, async () => {
    const { port, streams } = await startApp(cleanup)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "feed", app: `${LOOPBACK}:${port}`, appProtocol: "h2c", requestTimeoutMs: 30_000 }))
    // A hand-played mesh dialer that grants one byte of each stream and never more: B holds the rest.
    const dialer = await meshDialer(Number(b.inboundAddress.split(":").pop()), cleanup, { streamWindow: 1 })
    const meta = new Map<string, string>()
      .set(HttpMeta.method, "POST")
      .set(HttpMeta.authority, "feed")
      .set(HttpMeta.headers, JSON.stringify([["content-type", "application/grpc"], ["te", "trailers"]]))
    for (let channel = 1; channel <= 8; channel++) dialer.write(frame(1, FEED.Watch.path, channel, encodeEnvelope(EnvelopeKind.request, 0, channel, meta, grpcMessage(Buffer.alloc(0)), 8192)))
    // Until B holds two messages of each at least (past its queue's high-water mark: paused).
    const heldAtB = () => metric(b, /^iip_mesh_app_h2_held_bytes /)
    const polledUntil = performance.now() + 10_000
    while ((await heldAtB()) < 8 * 2 * MESSAGE.length) {
      if (performance.now() > polledUntil) throw new Error(`B holds ${await heldAtB()} bytes after 10 s`)
      await new Promise<void>((resolve) => setTimeout(resolve, 5))
    }
    expect(streams.over).toBe(0)
    dialer.socket.destroy()
    await waitFor(() => streams.over === 8, 10_000, "the app's 8 streams to be cancelled")
    expect(await heldAtB()).toBe(0)
  })

  it("answers the app ended that nobody reads are taken back too: B holds no more than the budget, each counted once", { timeout: 60_000 }, async () => {
    const { port } = await startApp(cleanup)
    const { held, send } = legTo(cleanup, port)
    // 16 answers of 3 messages (192 KiB, within the stream's window): the app ends each, nobody reads them.
    const unread: Array<Body> = []
    for (let i = 0; i < STALLED; i++) unread.push(bodyOf(await send("Short")))
    await waitFor(() => held.takenBack > 0 && held.counted === unread.filter((body) => body.queued > 0).length && unread.every((body) => body.queued === 0 || body.queued === SHORT_BYTES), 10_000, "the answers to be held at B, or taken back")
    expect(held.bytes).toBeLessThanOrEqual(BUDGET)
    const ends = await Promise.all(unread.map(readAll))
    const takenBack = ends.filter((end) => end.code === "overloaded")
    expect({ takenBack: takenBack.length, whole: ends.length - takenBack.length }).toEqual({ takenBack: held.takenBack, whole: ends.filter((end) => end.code === undefined && end.read === SHORT_BYTES).length })
    expect(takenBack.every((end) => end.read === 0)).toBe(true)
    await waitFor(() => held.bytes === 0 && held.counted === 0, 5_000, "the budget's counts to be back to 0")
  })

  it("unary answers gathered whole, past the budget together, take back no answer: the reader that keeps reading reads all", { timeout: 60_000 }, async () => {
    const { port } = await startApp(cleanup)
    // 1 MiB: the reader's answer alone holds ~320 KiB at most; 18 of the unary answers gathered at once pass it.
    const budget = MiB
    const { held, send } = legTo(cleanup, port, budget)
    // The most held, seen as each byte of an answer gathered whole is counted.
    let most = 0
    let whole = 0
    Object.defineProperty(held, "whole", {
      get: () => whole,
      set: (value: number) => {
        whole = value
        most = Math.max(most, held.bytes)
      }
    })
    const reading = readAll(bodyOf(await send("Watch")))
    // Waves of 60 unary answers of 60 KiB at once (3.6 MiB gathered whole at most), each read at once.
    for (let wave = 0; wave < 20; wave++) {
      const calls = Array.from({ length: 60 }, async () => {
        const outcome = await send("Medium")
        if (outcome instanceof Uint8Array || outcome._tag !== "Reply" || outcome.body instanceof Uint8Array) return
        await readAll(outcome.body as unknown as Body)
      })
      await Promise.all(calls)
    }
    expect(most).toBeGreaterThan(budget)
    expect({ reader: await reading, takenBack: held.takenBack }).toEqual({ reader: { read: MESSAGES * (MESSAGE.length + 5) }, takenBack: 0 })
  })
})
