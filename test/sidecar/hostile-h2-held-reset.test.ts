// An h2c caller that resets its stream (RST_STREAM CANCEL) while A still holds its body
// (outboundH2Call.ts: a body that may end within its head's turn is held, to travel whole) gets
// nothing sent on: no head to B, no stream or request at the app. Before, A sent the head of one
// with no content-length on (the body as one that broke off; one declaring a length is gathered by
// readBody, which failed before any try): nothing reached the app whole, but each was an exchange
// at B and, had B opened the app's stream before the cancel came, an app stream B then reset, one
// of its per-session reset budget to an h2c app (appH2.ts). Measured before: B took 21 requests
// (iip_mesh_requests_total inbound) for the 40 reset and the 1 whole, with either app; now 1.
// A body that streamed (the turn ended before its end: its head went on) keeps its behaviour: its
// reset reaches the app as a cut request. Both with an HTTP/1.1 app and an h2c app behind B.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { type AccessRecord, type AppView, startCountingMesh } from "../helpers/h2CountingApps.ts"
import { ErrorCode, Flag, frame, rst, Type } from "../helpers/h2Wire.ts"
import { connectRawH2, headerFrames, requestBlock, resetCode, streamOver } from "../helpers/h2RawClient.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { parsePrometheusText, sum } from "../support/prometheusText.ts"
import type { RunningSidecar } from "../support/sidecarHarness.ts"

describe.each(["http1", "h2c"] as const)("an h2c caller's reset while A holds its body, an %s app behind B", (appProtocol) => {
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

  /** Requests B took from the mesh (each counted once it ended). */
  const requestsAtB = async (): Promise<number> => sum(parsePrometheusText((await b.sidecar.telemetry.metrics.text()).body), "iip_mesh_requests_total", { direction: "inbound" })

  it("40 requests reset with their body held (HEADERS, part of the body, RST_STREAM CANCEL in one write; half declaring a length) reach neither B nor the app; the session serves a whole one after", async () => {
    const raw = await connectRawH2(cleanup, a.outboundPort, false)
    const attack: Array<Buffer> = []
    for (let i = 0; i < 40; i++) {
      const stream = 1 + 2 * i
      const length: ReadonlyArray<readonly [string, string]> = i % 2 === 0 ? [["content-length", "100"]] : []
      attack.push(headerFrames(stream, requestBlock("POST", `/held${i}`, length), false), frame(Type.data, 0, stream, Buffer.alloc(10, 7)), rst(stream, ErrorCode.cancel))
    }
    raw.socket.write(Buffer.concat(attack))
    const clean = 81
    raw.socket.write(Buffer.concat([headerFrames(clean, requestBlock("POST", "/whole"), false), frame(Type.data, Flag.endStream, clean, Buffer.from("whole"))]))
    await raw.until(streamOver(clean), "the whole request's answer")
    expect(resetCode(raw.frames, clean)).toBeUndefined()
    // Whatever A sent on has reached B and ended there once neither sidecar holds a request.
    await waitFor(() => a.sidecar.inFlight() === 0 && b.sidecar.inFlight() === 0, 5000, "both sidecars to hold no request")
    expect(await requestsAtB()).toBe(1)
    // A counts each as its caller's cancellation, whether held (no length) or gathered (a length): no upstream failure.
    const atA = parsePrometheusText((await a.sidecar.telemetry.metrics.text()).body)
    expect(sum(atA, "iip_mesh_request_errors_total", { direction: "outbound", reason: "cancelled" })).toBe(40)
    expect(sum(atA, "iip_mesh_request_errors_total", { direction: "outbound" })).toBe(40)
    // One access record each (its span ends in the same call, outboundAccess.ts): the cancellation, no try made.
    const outbound = access.filter((r) => r.uri.startsWith("/held") || r.uri === "/whole")
    expect(outbound.length).toBe(41)
    for (let i = 0; i < 40; i++) {
      expect(outbound.filter((r) => r.uri === `/held${i}`)).toEqual([expect.objectContaining({ status: 502, attempts: 0, error: { hop: "outbound", reason: "cancelled" } })])
    }
    expect(outbound.filter((r) => r.uri === "/whole")).toEqual([expect.objectContaining({ status: 200, attempts: 1 })])
    expect(view.begun).toEqual(["/whole"])
    expect(view.whole).toEqual(["/whole"])
    expect(raw.frames.some((f) => f.type === Type.goaway)).toBe(false)
  })

  it("a body that streamed on (its head sent before the reset) is still cut at the app when its caller resets it", async () => {
    const raw = await connectRawH2(cleanup, a.outboundPort, false)
    raw.socket.write(Buffer.concat([headerFrames(1, requestBlock("POST", "/streamed"), false), frame(Type.data, 0, 1, Buffer.alloc(10, 7))]))
    await waitFor(() => view.begun.length === 1, 5000, "the streamed request's head at the app")
    raw.socket.write(rst(1, ErrorCode.cancel))
    await waitFor(() => view.cut.length === 1, 5000, "the app to see the request cut")
    expect(view).toEqual({ begun: ["/streamed"], cut: ["/streamed"], whole: [] })
  })
})
