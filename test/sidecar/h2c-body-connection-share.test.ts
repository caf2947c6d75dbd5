// One caller connection's share of A's budget for its h2c callers' request-body windows
// (src/sidecar/h2BodyCredit.ts). Every gRPC call is a request with a body, so an idle
// bidirectional call (nothing sent, nothing ended) holds its 64 KiB first window for as long as it
// stays open. Before: the budget spanned connections and nothing else, so one client library
// opening budget / 64 KiB idle bidi calls on its one connection left no room, and every other
// caller's calls at A were refused REFUSED_STREAM (grpc-js: UNAVAILABLE "Stream refused by
// server") until it closed them. Now a connection holds at most a quarter of the budget: its own
// calls past it are refused, the others' are admitted, and its admitted calls go on untouched.
// Real peers: grpc-js and node:http2 callers, a grpc-js app, two sidecars.
import * as grpc from "@grpc/grpc-js"
import * as http2 from "node:http2"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { metric } from "../support/eventStreamApp.ts"
import { ECHO, FEED_METHODS, startFeedMesh, WATCH } from "../support/feedMesh.ts"
import { identity } from "../support/grpcRaw.ts"
import { Cleanup, readUntil, waitFor } from "../support/iipRaw.ts"
import { LOOPBACK, type RunningSidecar } from "../support/sidecarHarness.ts"

const KiB = 1024
/** Room for 16 first windows of 64 KiB; a connection's share: 4 of them. */
const BUDGET = 1024 * KiB
const SHARE = BUDGET / 4
/** The idle calls one connection opens: twice what the whole budget has room for. */
const IDLE = 32

const FeedClient = grpc.makeGenericClientConstructor(FEED_METHODS, "Feed")

describe("one h2c caller connection's share of A's request-body windows", () => {
  let cleanup: Cleanup
  let a: RunningSidecar
  /** The bidi calls the app took (each echoes its messages and ends when its caller does). */
  let watching: number
  beforeEach(async () => {
    cleanup = new Cleanup()
    watching = 0
    a = await startFeedMesh(cleanup, BUDGET, () => watching++)
  })
  afterEach(() => cleanup.run())

  /** A grpc-js client on a connection of its own to A (grpc-js shares one between clients otherwise). */
  const client = (): grpc.Client => {
    const made = new FeedClient(`${LOOPBACK}:${a.outboundPort}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "feed", "grpc.use_local_subchannel_pool": 1 })
    cleanup.add(() => made.close())
    return made
  }

  /** A bidi call that sends nothing: how it ended ("<code> <details>"), once it did. */
  const idleCall = (on: grpc.Client) => {
    const call = on.makeBidiStreamRequest(WATCH.path, identity, identity, new grpc.Metadata(), {})
    const outcome = { ended: "" }
    call.on("data", () => {})
    call.on("status", (status: grpc.StatusObject) => (outcome.ended = `${status.code} ${status.details}`))
    call.on("error", () => {})
    cleanup.add(() => call.cancel())
    return { call, outcome }
  }

  const unary = (on: grpc.Client, text: string): Promise<string> =>
    new Promise((resolve) =>
      on.makeUnaryRequest(ECHO.path, identity, identity, Buffer.from(text), new grpc.Metadata(), { deadline: Date.now() + 20_000 }, (error, answer) =>
        resolve(error === null ? answer!.toString() : `${error.code} ${error.details}`)))

  const granted = () => metric(a, /^iip_mesh_outbound_h2_body_window_bytes /)

  it(`${IDLE} idle bidi calls on one grpc-js connection hold at most its share (the rest refused UNAVAILABLE); another connection's calls and a node:http2 upload are answered; the admitted idle calls still work; the windows come back`, { timeout: 60_000 }, async () => {
    const hog = client()
    const idle = Array.from({ length: IDLE }, () => idleCall(hog))
    // Each idle call is admitted (the app takes it) or refused (grpc-js sent it again once, then gave up).
    await waitFor(() => watching + idle.filter((one) => one.outcome.ended !== "").length === IDLE, 20_000, "every idle call admitted or refused")
    const refused = idle.filter((one) => one.outcome.ended !== "")
    for (const one of refused) expect(one.outcome.ended).toBe(`${grpc.status.UNAVAILABLE} Stream refused by server`)
    // Another caller: its calls are answered (before: "14 Stream refused by server", each).
    const other = client()
    const answers = await Promise.all(Array.from({ length: 8 }, (_, i) => unary(other, `hello ${i}`)))
    expect(answers).toStrictEqual(Array.from({ length: 8 }, (_, i) => `hello ${i}`))
    // A node:http2 caller's upload of 512 KiB on a connection of its own (before: NGHTTP2_REFUSED_STREAM).
    const session = http2.connect(`http://${LOOPBACK}:${a.outboundPort}`)
    session.on("error", () => {})
    cleanup.add(() => session.destroy())
    const upload = session.request({ ":method": "POST", ":path": ECHO.path, ":authority": "feed", "content-type": "application/grpc", te: "trailers" })
    upload.on("error", () => {})
    const told = { status: 0, grpcStatus: "", bytes: 0, reset: -1 }
    upload.on("response", (headers) => (told.status = Number(headers[":status"])))
    upload.on("trailers", (trailers) => (told.grpcStatus = String(trailers["grpc-status"])))
    upload.on("data", (chunk: Buffer) => (told.bytes += chunk.length))
    const closed = new Promise<void>((resolve) => upload.on("close", resolve))
    const message = Buffer.alloc(5 + 512 * KiB, 0x61)
    message[0] = 0
    message.writeUInt32BE(512 * KiB, 1)
    upload.end(message)
    await closed
    told.reset = told.status === 0 ? (upload.rstCode ?? -1) : -1
    expect(told).toStrictEqual({ status: 200, grpcStatus: "0", bytes: 5 + 512 * KiB, reset: -1 })

    // Before: the hog had 16 admitted, the whole budget (1 MiB).
    expect(watching).toBe(SHARE / (64 * KiB))
    expect(await granted()).toBe(SHARE)
    // The hog's admitted calls were never cut: each still echoes, then ends OK at its end.
    const admitted = idle.filter((one) => one.outcome.ended === "")
    expect(admitted.length).toBe(SHARE / (64 * KiB))
    const echoed = admitted.map(({ call }) => new Promise<string>((resolve) => call.once("data", (message: Buffer) => resolve(message.toString()))))
    admitted.forEach(({ call }, i) => call.write(Buffer.from(`still ${i}`)))
    expect(await Promise.all(echoed)).toStrictEqual(admitted.map((_, i) => `still ${i}`))
    for (const { call } of admitted) call.end()
    await waitFor(() => admitted.every((one) => one.outcome.ended !== ""), 10_000, "the idle calls ended")
    for (const one of admitted) expect(one.outcome.ended).toBe(`${grpc.status.OK} OK`)
    expect((await readUntil(granted, (bytes) => bytes === 0, 10_000)).value).toBe(0)
  })
})
