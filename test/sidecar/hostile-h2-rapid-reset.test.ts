// Rapid reset (CVE-2023-44487) with requests that are whole: an h2c caller that sends a request's
// END_STREAM (on its HEADERS, or on a small body's DATA) and, in the same write, RST_STREAM for it,
// again and again, never waiting for an answer. A request so reset is over before A could send it
// on: nothing of it may go to B (RFC 9113 §8.1; A counts it `cancelled`, one access-log line).
// Measured before (40 pairs, `npx vitest run test/sidecar/hostile-h2-rapid-reset.test.ts`; now 20: RESET): in the
// connection's first read the bodyless ones took B 40 exchanges (the bodies were dropped already:
// hostile-h2-held-reset.test.ts); in a later read, with B's app connection up, B took 40 of every
// kind, and an h2c app began all 40 (bodyless: read whole and answered, its work for a caller
// that never waits; with a body: 40 streams B then reset, 40 of B's per-session budget, appH2.ts),
// an HTTP/1.1 app 1 of each kind. Now B takes none, with either app.
// The first read (node's session takes it whole before any stream's event) and a later one (node
// hands each stream over as its frames are read, before the RST_STREAM after them): outboundH2Call.ts.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { type AccessRecord, type AppView, startCountingMesh } from "../helpers/h2CountingApps.ts"
import { ErrorCode, Flag, frame, Type, rst } from "../helpers/h2Wire.ts"
import { connectRawH2, headerFrames, type RawH2, requestBlock, resetCode, streamOver } from "../helpers/h2RawClient.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { parsePrometheusText, sum } from "../support/prometheusText.ts"
import type { RunningSidecar } from "../support/sidecarHarness.ts"
import { defaultLimits } from "../../src/h2/h2Guards.ts"

/** src/h2's premature-reset rule (h2Guards.ts) applies from this many closed streams: more than half premature ends the session. */
const PREMATURE_MIN_STREAMS = defaultLimits.prematureMinStreams

// What the wait sees is one read: a pair whose RST_STREAM comes in the next read is sent on (its
// caller then cuts it). 20 pairs are at most 2.5 KB (of the declared kind), one read even with
// 4 KiB socket buffers, where 40 (to 5 KB) were split over reads and a pair went on to B.
const RESET = 20

/** What comes before each RST_STREAM: a bodyless request, or a small body whole (held, with no length: heldBody; declaring its length: readBody). */
type Kind = "bodyless" | "held" | "declared"

/**
 * `count` requests of `kind` from stream `first` on, each with its END_STREAM, then its RST_STREAM.
 * Bodyless: GETs reset CANCEL, every fourth from the second a HEAD (node ends a HEAD stream's
 * writable side as it comes, so its reset sets no `aborted`), every fourth from the fourth a GET
 * reset NO_ERROR (the stream closed, not destroyed). With a body: POSTs of 10 bytes, reset CANCEL.
 */
const resetPairs = (kind: Kind, first: number, count: number): Buffer => {
  const parts: Array<Buffer> = []
  for (let i = 0; i < count; i++) {
    const stream = first + 2 * i
    if (kind === "bodyless") parts.push(headerFrames(stream, requestBlock(i % 4 === 1 ? "HEAD" : "GET", `/reset${i}`), true), rst(stream, i % 4 === 3 ? ErrorCode.noError : ErrorCode.cancel))
    else {
      const length: ReadonlyArray<readonly [string, string]> = kind === "declared" ? [["content-length", "10"]] : []
      parts.push(headerFrames(stream, requestBlock("POST", `/reset${i}`, length), false), frame(Type.data, Flag.endStream, stream, Buffer.alloc(10, 7)), rst(stream, ErrorCode.cancel))
    }
  }
  return Buffer.concat(parts)
}

const CASES = (["bodyless", "held", "declared"] as const).flatMap((kind) => (["first", "later"] as const).map((when) => [kind, when] as const))

describe.each(["http1", "h2c"] as const)("requests reset in the read their END_STREAM came in, an %s app behind B", (appProtocol) => {
  let cleanup: Cleanup
  let view: AppView
  let a: RunningSidecar
  let b: RunningSidecar
  let access: Array<AccessRecord>
  beforeEach(async () => {
    cleanup = new Cleanup()
    ;({ view, a, b, access } = await startCountingMesh(cleanup, appProtocol))
  })
  afterEach(() => cleanup.run())

  /** A whole GET on `stream`, answered 200 to its end. */
  const whole = async (raw: RawH2, stream: number, path: string): Promise<void> => {
    raw.socket.write(headerFrames(stream, requestBlock("GET", path), true))
    await raw.until(streamOver(stream), `${path}'s answer`)
    expect(resetCode(raw.frames, stream)).toBeUndefined()
  }

  it.each(CASES)(`${RESET} %s requests so reset in the connection's %s read reach neither B nor the app; the session serves a whole request after`, async (kind, when) => {
    // "later": B's connection to the app is up (a whole request first), as it is for a caller
    // that attacks a busy service: what A sends on reaches the app at once.
    let raw: RawH2
    if (when === "first") raw = await connectRawH2(cleanup, a.outboundPort, false, resetPairs(kind, 1, RESET))
    else {
      raw = await connectRawH2(cleanup, a.outboundPort, true)
      await whole(raw, 1, "/warm")
      raw.socket.write(resetPairs(kind, 3, RESET))
    }
    const clean = 3 + 2 * RESET
    await whole(raw, clean, "/whole")
    await waitFor(() => a.sidecar.inFlight() === 0 && b.sidecar.inFlight() === 0, 5000, "both sidecars to hold no request")
    const requestsAtB = sum(parsePrometheusText((await b.sidecar.telemetry.metrics.text()).body), "iip_mesh_requests_total", { direction: "inbound" })
    const warm = when === "first" ? [] : ["/warm"]
    expect({ requestsAtB, begun: view.begun, cut: view.cut }).toEqual({ requestsAtB: warm.length + 1, begun: [...warm, "/whole"], cut: [] })
    const atA = parsePrometheusText((await a.sidecar.telemetry.metrics.text()).body)
    expect(sum(atA, "iip_mesh_request_errors_total", { direction: "outbound", reason: "cancelled" })).toBe(RESET)
    expect(sum(atA, "iip_mesh_request_errors_total", { direction: "outbound" })).toBe(RESET)
    // One access record each: the cancellation, no try made.
    for (let i = 0; i < RESET; i++) {
      expect(access.filter((r) => r.uri === `/reset${i}`)).toEqual([expect.objectContaining({ status: 502, attempts: 0, error: { hop: "outbound", reason: "cancelled" } })])
    }
    for (const path of [...warm, "/whole"]) expect(access.filter((r) => r.uri === path)).toEqual([expect.objectContaining({ status: 200, attempts: 1 })])
    expect(raw.frames.some((f) => f.type === Type.goaway)).toBe(false)
  })
})

describe("a flood of requests reset in the read their END_STREAM came in", () => {
  let cleanup: Cleanup
  let view: AppView
  let a: RunningSidecar
  let b: RunningSidecar
  beforeEach(async () => {
    cleanup = new Cleanup()
    ;({ view, a, b } = await startCountingMesh(cleanup, "h2c"))
  })
  afterEach(() => cleanup.run())

  // Each such reset is premature (before any answer, at once, no deadline asked): at PREMATURE_MIN_STREAMS
  // of them, all of the session's streams, the premature-reset rule (src/h2's guard) ends it.
  it(`ends the session with GOAWAY ENHANCE_YOUR_CALM too_many_premature_resets at ${PREMATURE_MIN_STREAMS}; a new session is served`, async () => {
    const raw = await connectRawH2(cleanup, a.outboundPort, true)
    const over = (): boolean => raw.isClosed() || raw.frames.some((f) => f.type === Type.goaway)
    // In writes of RESET pairs (each one read: a pair split over two goes on to B), bodyless and held
    // by turns, each taken by the kernel before the next, up to 5,000 pairs.
    let pairs = 0
    while (pairs < 5000 && !over()) {
      const batch = resetPairs(pairs % (2 * RESET) === 0 ? "bodyless" : "held", 1 + 2 * pairs, RESET)
      await new Promise<void>((resolve) => raw.socket.write(batch, () => resolve()))
      pairs += RESET
      // A's turn to read it: the next write once A has parsed this one (its PING answered would say so; a turn of this process is enough, A runs in it).
      await new Promise((resolve) => setImmediate(resolve))
    }
    await raw.until(over, "the GOAWAY")
    const goaway = raw.frames.find((f) => f.type === Type.goaway)
    expect(goaway?.payload.readUInt32BE(4)).toBe(ErrorCode.enhanceYourCalm)
    expect(goaway?.payload.subarray(8).toString()).toBe("too_many_premature_resets")
    // And so does any GOAWAY after it (node's destroy sends one more): a client reads the last one.
    expect(raw.frames.filter((f) => f.type === Type.goaway).map((f) => f.payload.readUInt32BE(4))).not.toContain(ErrorCode.noError)
    // Counted for the operator, once for the session.
    await waitFor(() => a.sidecar.inFlight() === 0 && b.sidecar.inFlight() === 0, 5000, "both sidecars to hold no request")
    const atA = parsePrometheusText((await a.sidecar.telemetry.metrics.text()).body)
    expect(sum(atA, "iip_mesh_h2_sessions_ended_total", { reason: "too_many_premature_resets" })).toBe(1)
    expect(sum(atA, "iip_mesh_h2_sessions_ended_total")).toBe(1)
    // Ended by the reset of the PREMATURE_MIN_STREAMS-th stream: A took that many (each `cancelled`),
    // and the session's end cut any other of the read it came in.
    const cancelled = sum(atA, "iip_mesh_request_errors_total", { direction: "outbound", reason: "cancelled" })
    expect(cancelled).toBeGreaterThanOrEqual(PREMATURE_MIN_STREAMS)
    expect(cancelled).toBeLessThanOrEqual(PREMATURE_MIN_STREAMS + RESET)
    // None of the flood reached the app but a pair split over two reads (its RST_STREAM read after A
    // sent it on, cut then): none with the usual socket buffers, a few with 4 KiB ones.
    expect(view.begun.filter((path) => path !== "/after").length).toBeLessThan(RESET)
    const fresh = await connectRawH2(cleanup, a.outboundPort, true)
    fresh.socket.write(headerFrames(1, requestBlock("GET", "/after"), true))
    await fresh.until(streamOver(1), "the new session's answer")
    expect(resetCode(fresh.frames, 1)).toBeUndefined()
    expect(view.whole).toContain("/after")
  })
})

describe("a session the premature-reset rule ends while another of its requests is still coming in", () => {
  let cleanup: Cleanup
  let a: RunningSidecar
  let access: Array<AccessRecord>
  beforeEach(async () => {
    cleanup = new Cleanup()
    ;({ a, access } = await startCountingMesh(cleanup, "h2c"))
  })
  afterEach(() => cleanup.run())

  // The session's end destroys its streams: one whose declared body A still gathers (readBody) ends
  // as a caller gone (502 `cancelled`, as a session A destroys without a code ends it), not as a
  // failure beyond A (`upstream_failed`): the GOAWAY's code goes to the caller, not as an error into its streams.
  it("ends the request whose body A gathers `cancelled`, not `upstream_failed`", async () => {
    const raw = await connectRawH2(cleanup, a.outboundPort, true)
    raw.socket.write(Buffer.concat([headerFrames(1, requestBlock("POST", "/gathering", [["content-length", "10"]]), false), frame(Type.data, 0, 1, Buffer.alloc(5, 7))]))
    await waitFor(() => a.sidecar.inFlight() === 1, 5000, "A to gather /gathering's body")
    raw.socket.write(resetPairs("bodyless", 3, PREMATURE_MIN_STREAMS + 100))
    await raw.until(() => raw.isClosed() || raw.frames.some((f) => f.type === Type.goaway), "the GOAWAY")
    await waitFor(() => a.sidecar.inFlight() === 0, 5000, "A to hold no request")
    expect(access.filter((r) => r.uri === "/gathering")).toEqual([expect.objectContaining({ status: 502, attempts: 0, error: { hop: "outbound", reason: "cancelled" } })])
  })
})
