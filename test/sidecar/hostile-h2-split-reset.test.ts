// Rapid reset (CVE-2023-44487) split over reads: an h2c caller sends whole requests (HEADERS with
// END_STREAM) in one read and their RST_STREAMs in the next. A sent each on at the end of the first
// read's turn (outboundH2Call.ts's wait sees one read only), so each reached the far app, which
// began work nobody waits for, and the reset then cut it there. The caller is never bounded by its
// concurrent streams (each is freed at once). Measured before (`npx vitest run
// test/sidecar/hostile-h2-split-reset.test.ts`): one request a read, the app began 1,0xx of them on
// one session before node ended it with GOAWAY INTERNAL_ERROR (nghttp2's reset bound); 20 a read,
// the same. Now A ends the session with GOAWAY ENHANCE_YOUR_CALM too_many_premature_resets once it
// had PREMATURE_MIN_STREAMS streams and more than half of them were reset by the caller before any
// answer, within a second of their start (outboundH2Premature.ts): the app begins at most that many.
// The split is made by a PING after the requests: its ACK is written as A parses that read, so a
// reset written once the ACK is here is read after that read's turn ended (A runs in this process).
import * as http2 from "node:http2"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { ErrorCode, Flag, frame, rst, Type } from "../helpers/h2Wire.ts"
import { connectRawH2, headerFrames, type RawH2, requestBlock, resetCode, streamOver } from "../helpers/h2RawClient.ts"
import { listenH2App } from "../support/h2AppListen.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { parsePrometheusText, sum } from "../support/prometheusText.ts"
import { LOOPBACK, type RunningSidecar, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"
import { defaultLimits } from "../../src/h2/h2Guards.ts"

/** src/h2's premature-reset rule (h2Guards.ts): the ratio applies from this many closed streams; the budget. */
const PREMATURE_MIN_STREAMS = defaultLimits.prematureMinStreams
const PREMATURE_RESET_BURST = defaultLimits.prematureResets.burst
const PREMATURE_RESETS_PER_SECOND = defaultLimits.prematureResets.perSecond

/** What the app saw: streams begun, and of them those cut (B reset them) before any answer. */
interface Seen {
  begun: number
  cut: number
}

/** An h2c app that never answers a path under /split (work begun for a caller that does not wait), and answers any other 200 at once. */
const startHangingApp = async (cleanup: Cleanup, seen: Seen): Promise<number> => {
  const server = http2.createServer()
  server.on("stream", (stream, headers) => {
    stream.on("error", () => {})
    if (!String(headers[":path"]).startsWith("/split")) return void stream.respond({ ":status": 200 }, { endStream: true })
    seen.begun++
    stream.on("aborted", () => seen.cut++)
  })
  return (await listenH2App(cleanup, server)).port
}

/** A PING whose payload is `n`; its ACK carries it back. */
const ping = (n: number): Buffer => {
  const payload = Buffer.alloc(8)
  payload.writeUInt32BE(n, 4)
  return frame(Type.ping, 0, 0, payload)
}
const pingAcked = (n: number) => (frames: ReadonlyArray<{ type: number; flags: number; payload: Buffer }>): boolean =>
  frames.some((f) => f.type === Type.ping && (f.flags & Flag.ack) !== 0 && f.payload.readUInt32BE(4) === n)

const over = (raw: RawH2) => (): boolean => raw.isClosed() || raw.frames.some((f) => f.type === Type.goaway)

describe("requests reset in the read after the one their END_STREAM came in (split-read rapid reset)", () => {
  let cleanup: Cleanup
  let seen: Seen
  let a: RunningSidecar
  let b: RunningSidecar
  /** A's log lines naming a session it ended. */
  let ended: Array<Record<string, unknown>>
  beforeEach(async () => {
    ended = []
    cleanup = new Cleanup()
    seen = { begun: 0, cut: 0 }
    const port = await startHangingApp(cleanup, seen)
    b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: `${LOOPBACK}:${port}`, appProtocol: "h2c", tracing: false }))
    a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }), (event, fields) => {
      if (event === "h2-session-ended") ended.push(fields)
    })
  })
  afterEach(() => cleanup.run())

  it.each([1, 20])(
    `%i request(s) a read, their resets in the next: the session ends with GOAWAY ENHANCE_YOUR_CALM too_many_premature_resets once the app began at most ${PREMATURE_MIN_STREAMS}; a new session is served`,
    async (perRead) => {
      const raw = await connectRawH2(cleanup, a.outboundPort, true)
      // Each write at once: Nagle held a write behind the last one's ACK, which the kernel delays (40 ms a round).
      raw.socket.setNoDelay(true)
      // Up to 3,000 streams (node's own bound ends the session past ~1,000 reset ones).
      let next = 1
      for (let round = 0; next < 6000 && !over(raw)(); round++) {
        const streams = Array.from({ length: perRead }, (_, i) => next + 2 * i)
        next += 2 * perRead
        raw.socket.write(Buffer.concat([...streams.map((s) => headerFrames(s, requestBlock("GET", `/split${s}`), true)), ping(round)]))
        await raw.until((frames) => pingAcked(round)(frames) || over(raw)(), `round ${round}'s PING ACK`)
        raw.socket.write(Buffer.concat(streams.map((s) => rst(s, ErrorCode.cancel))))
      }
      await raw.until(over(raw), "the GOAWAY")
      const goaway = raw.frames.find((f) => f.type === Type.goaway)
      expect({ code: goaway?.payload.readUInt32BE(4), debug: goaway?.payload.subarray(8).toString() }).toEqual({ code: ErrorCode.enhanceYourCalm, debug: "too_many_premature_resets" })
      // A client reads the last GOAWAY: none after it says NO_ERROR.
      expect(raw.frames.filter((f) => f.type === Type.goaway).map((f) => f.payload.readUInt32BE(4))).not.toContain(ErrorCode.noError)
      await waitFor(() => a.sidecar.inFlight() === 0 && b.sidecar.inFlight() === 0, 10_000, "both sidecars to hold no request")
      // Every request the app began was cut (none left running), and it began no more than the rule's minimum.
      await waitFor(() => seen.cut === seen.begun, 10_000, "the app to see every begun request cut")
      expect(seen.begun).toBeLessThanOrEqual(PREMATURE_MIN_STREAMS)
      expect(seen.begun).toBeGreaterThan(PREMATURE_MIN_STREAMS / 2)
      const atA = parsePrometheusText((await a.sidecar.telemetry.metrics.text()).body)
      expect(sum(atA, "iip_mesh_h2_sessions_ended_total", { reason: "too_many_premature_resets" })).toBe(1)
      expect(sum(atA, "iip_mesh_h2_sessions_ended_total")).toBe(1)
      expect(ended).toEqual([{ reason: "too_many_premature_resets", remote: "127.0.0.1" }])
      const fresh = await connectRawH2(cleanup, a.outboundPort, true)
      fresh.socket.write(headerFrames(1, requestBlock("GET", "/after"), true))
      await fresh.until(streamOver(1), "the new session's answer")
      expect(resetCode(fresh.frames, 1)).toBeUndefined()
    },
    120_000
  )

  // Half of the streams answered (cheap ones, each waited for), half reset in the read after their
  // END_STREAM: never more than half premature, so the ratio never ends the session. Before the
  // budget of premature resets, only nghttp2's reset bound did, which A raises to a backstop
  // (100,000 at once): measured, the app began 1,980 of 2,000 split requests on one session in 7.6 s,
  // which stayed open; with nghttp2's bound at its default (main's), 1,300 in 9 s (1,000 and 33 a
  // second). 20 of each a round.
  it(`answered requests, then as many reset in the next read, again and again: the session ends (too_many_premature_resets) once the app began about ${PREMATURE_RESET_BURST}`, async () => {
    // Before the session is made: its budget earns back from then (A runs in this process, on this clock).
    const began = performance.now()
    const raw = await connectRawH2(cleanup, a.outboundPort, true)
    raw.socket.setNoDelay(true)
    const perRound = 20
    let next = 1
    for (let round = 0; round < (2 * PREMATURE_RESET_BURST) / perRound && !over(raw)(); round++) {
      const answered = Array.from({ length: perRound }, (_, i) => next + 2 * i)
      const split = answered.map((s) => s + 2 * perRound)
      next += 4 * perRound
      raw.socket.write(Buffer.concat(answered.map((s) => headerFrames(s, requestBlock("GET", `/now${s}`), true))))
      await raw.until((frames) => answered.every((s) => streamOver(s)(frames)) || over(raw)(), `round ${round}'s answers`)
      raw.socket.write(Buffer.concat([...split.map((s) => headerFrames(s, requestBlock("GET", `/split${s}`), true)), ping(round)]))
      await raw.until((frames) => pingAcked(round)(frames) || over(raw)(), `round ${round}'s PING ACK`)
      raw.socket.write(Buffer.concat(split.map((s) => rst(s, ErrorCode.cancel))))
    }
    await raw.until(over(raw), "the GOAWAY")
    const seconds = (performance.now() - began) / 1000
    const goaway = raw.frames.find((f) => f.type === Type.goaway)
    expect({ code: goaway?.payload.readUInt32BE(4), debug: goaway?.payload.subarray(8).toString() }).toEqual({ code: ErrorCode.enhanceYourCalm, debug: "too_many_premature_resets" })
    await waitFor(() => seen.cut === seen.begun, 10_000, "the app to see every begun request cut")
    // The budget, and what it earned back while the attack ran, one more for the reset that ran it
    // out; and the rest of that reset's round: the round's requests all went on (and began at the
    // app) once their read was parsed, before any of its resets came, so when the budget runs out
    // at one of them up to perRound - 1 others began that it never counted. Each round's resets
    // come in a read of their own (after the PING ACK); a reset read over 1 s after its request
    // would not be premature, and is not allowed for here.
    expect(seen.begun).toBeLessThanOrEqual(PREMATURE_RESET_BURST + Math.ceil(seconds * PREMATURE_RESETS_PER_SECOND) + 1 + (perRound - 1))
    expect(seen.begun).toBeGreaterThan(PREMATURE_MIN_STREAMS)
  }, 120_000)
})
