// HTTP/2 callers of the outbound listener that grant their streams no window (SETTINGS_INITIAL_
// WINDOW_SIZE 0): each stream's answer waits in sidecar A (a mesh chunk, 64 KiB, in the h2 stream,
// a whole answer of up to 64 KiB, and a mesh window behind it) until the answer idle timeout. HTTP/1.1
// callers that read nothing count their held answers in one budget (maxQueuedBytes; past it new
// requests 503 overloaded); h2c streams counted nowhere (red team, 8 sessions x 256 streams at
// window 0, answers of 2.5 MiB: A's RSS 106 -> 409 MB, every request still taken). Now their unsent
// bytes count in the same budget: past it a new stream is refused 503 overloaded, counted in the
// same gauge and counter, and what a closed stream held is given back.
// Real peers: a node:http app, node:http2 as the caller.
import * as http2 from "node:http2"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Cleanup, readUntil, withTimeout } from "../support/iipRaw.ts"
import { metric } from "../support/eventStreamApp.ts"
import { startMesh } from "../support/sidecarHarness.ts"

const KiB = 1024
const BUDGET = 512 * KiB
const STREAMS = 16

/** A stream's head: its status and mesh error header, or its reset. */
const head = (stream: http2.ClientHttp2Stream): Promise<{ readonly status: number; readonly error: string | undefined }> =>
  new Promise((resolve) => {
    stream.once("response", (headers) => resolve({ status: Number(headers[":status"]), error: headers["x-iip-mesh-error"] as string | undefined }))
    stream.once("close", () => resolve({ status: -1, error: `reset ${stream.rstCode}` }))
  })

describe("h2c callers that take none of their answers", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it(`count in the outbound held-answer budget (maxQueuedBytes ${BUDGET}): past it a new stream is refused 503 overloaded; closed streams give their bytes back`, async () => {
    const { a } = await startMesh(cleanup, (req, res) => {
      if (req.url === "/small") return res.end("ok")
      res.writeHead(200)
      res.end(Buffer.alloc(1024 * KiB, 97))
    }, { a: { maxQueuedBytes: BUDGET } })
    const stalled = http2.connect(`http://127.0.0.1:${a.outboundPort}`, { settings: { initialWindowSize: 0 } })
    cleanup.add(() => stalled.destroy())
    stalled.on("error", () => {})
    const heads = []
    const streams: Array<http2.ClientHttp2Stream> = []
    for (let i = 0; i < STREAMS; i++) {
      const stream = stalled.request({ ":path": `/big${i}`, ":authority": "catalog" })
      stream.on("error", () => {})
      heads.push(head(stream))
      streams.push(stream)
    }
    expect((await withTimeout(Promise.all(heads), 10_000, "the stalled streams' heads")).map((h) => h.status)).toEqual(Array(STREAMS).fill(200))
    // Each holds a mesh chunk (64 KiB) unsent: 16 of them, past the budget.
    const held = await readUntil(() => metric(a, /^iip_mesh_outbound_held_answer_bytes /), (bytes) => bytes > BUDGET, 5_000)
    // Before: 200, and the answer held too.
    const refused = stalled.request({ ":path": "/small", ":authority": "catalog" })
    refused.on("error", () => {})
    expect(await withTimeout(head(refused), 5_000, "the refusal")).toEqual({ status: 503, error: "outbound; reason=overloaded" })
    expect(held.value).toBeGreaterThan(BUDGET)
    expect(await metric(a, /^iip_mesh_outbound_held_answers_refused_total /)).toBe(1)
    // Its streams reset (the refused one too: its 503's body waits for window as well), the bytes
    // they held are given back, and requests are taken again.
    for (const stream of [...streams, refused]) stream.close(http2.constants.NGHTTP2_CANCEL)
    expect((await readUntil(() => metric(a, /^iip_mesh_outbound_held_answer_bytes /), (bytes) => bytes === 0, 5_000)).value).toBe(0)
    const fresh = http2.connect(`http://127.0.0.1:${a.outboundPort}`)
    cleanup.add(() => fresh.destroy())
    fresh.on("error", () => {})
    const ok = fresh.request({ ":path": "/small", ":authority": "catalog" })
    ok.on("error", () => {})
    expect(await withTimeout(head(ok), 5_000, "a fresh caller's answer")).toEqual({ status: 200, error: undefined })
  }, 30_000)
  it("a caller gone with its streams at window 0 (its connection closed): those streams end at once, their held bytes given back and their far requests ended, not kept to the answer idle sweep", async () => {
    const { a, b } = await startMesh(cleanup, (_req, res) => {
      res.writeHead(200)
      res.end(Buffer.alloc(1024 * KiB, 97))
    }, { a: { maxQueuedBytes: BUDGET }, b: { maxQueuedBytes: BUDGET } })
    const stalled = http2.connect(`http://127.0.0.1:${a.outboundPort}`, { settings: { initialWindowSize: 0 } })
    cleanup.add(() => stalled.destroy())
    stalled.on("error", () => {})
    const heads = []
    for (let i = 0; i < STREAMS; i++) {
      const stream = stalled.request({ ":path": `/big${i}`, ":authority": "catalog" })
      stream.on("error", () => {})
      heads.push(head(stream))
    }
    expect((await withTimeout(Promise.all(heads), 10_000, "the stalled streams' heads")).map((h) => h.status)).toEqual(Array(STREAMS).fill(200))
    await readUntil(() => metric(a, /^iip_mesh_outbound_held_answer_bytes /), (bytes) => bytes > 0, 5_000)
    // The caller's connection goes (its FIN): no WINDOW_UPDATE can come any more.
    stalled.destroy()
    // Within 5 s, far below the answer idle sweep (60 s by default).
    expect((await readUntil(() => metric(a, /^iip_mesh_outbound_held_answer_bytes /), (bytes) => bytes === 0, 5_000)).value).toBe(0)
    expect((await readUntil(() => metric(a, /^iip_mesh_requests_in_flight\{direction="outbound"/), (n) => n === 0, 5_000)).value).toBe(0)
    expect((await readUntil(() => metric(b, /^iip_mesh_requests_in_flight\{direction="inbound"/), (n) => n === 0, 5_000)).value).toBe(0)
  }, 30_000)
})
