// One caller connection to A's outbound h2c listener carrying uploads the far app never reads:
// their stream windows grow (src/sidecar/h2BodyCredit.ts) while the mesh takes them, then each
// holds up to its window at A. The connection's own window (src/h2/h2ReceiveFlow.ts) must not
// close on them: an upload the app reads on the same connection has to arrive whole. And their
// windows' credit comes back however they end (reset by the caller, the connection gone).
// node:http2 caller, node:http app, two sidecars.
import * as http2 from "node:http2"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { metric } from "../support/eventStreamApp.ts"
import { startBodyApp } from "../support/bodyApp.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { LOOPBACK, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const MiB = 1024 * 1024
const STALLED = 16

describe("A's h2c body windows on one caller connection", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  /** App (/upload read and answered its length, anything else parked unread), B, A; `count` uploads of 32 MiB to park on one connection; A's window gauge read every 10 ms. */
  const stall = async (count: number) => {
    const { app, parked } = await startBodyApp(cleanup)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "store", app: app.address }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "shop", endpoints: { store: [{ address: b.inboundAddress, weight: 1 }] }, requestTimeoutMs: 30_000 }))
    // The caller holds its unsent bodies (node counts them in maxSessionMemory, MB).
    const session = http2.connect(`http://${LOOPBACK}:${a.outboundPort}`, { maxSessionMemory: 1024 })
    session.on("error", () => {})
    cleanup.add(() => session.destroy())
    const body = Buffer.alloc(32 * MiB, 0x61)
    const streams = Array.from({ length: count }, (_, i) => {
      const stream = session.request({ ":method": "POST", ":path": `/stall/${i}`, ":authority": "store" })
      stream.on("error", () => {})
      stream.end(body)
      return stream
    })
    const seen = { granted: 0 }
    const watch = setInterval(() => void metric(a, /^iip_mesh_outbound_h2_body_window_bytes /).then((bytes) => (seen.granted = bytes)), 10)
    cleanup.add(() => clearInterval(watch))
    await waitFor(() => parked.length === count, 20_000, "the stalled uploads at the app")
    return { session, streams, seen }
  }

  it(`${STALLED} uploads the app never reads, their windows grown, and one it reads on the same connection: that one arrives whole`, { timeout: 60_000 }, async () => {
    const { session, seen } = await stall(STALLED)
    // Their windows grew (the mesh took ~1 MiB of most of them) past 8 MiB: the growth its share of
    // A's budget allows one connection (half of a quarter of 64 MiB), 16 first windows besides.
    await waitFor(() => seen.granted >= 8 * MiB, 30_000, "the stalled bodies' windows grown past 8 MiB")
    const honest = session.request({ ":method": "POST", ":path": "/upload", ":authority": "store" })
    let status = 0
    let body = ""
    honest.on("response", (headers) => (status = Number(headers[":status"])))
    honest.setEncoding("utf8")
    honest.on("data", (chunk: string) => (body += chunk))
    honest.on("error", () => {})
    const closed = new Promise<void>((resolve) => honest.on("close", () => resolve()))
    honest.end(Buffer.alloc(2 * MiB, 0x62))
    // Before: the stalled bodies held 12 MiB at A (4 MiB held, then the 8 MiB connection window), the
    // connection let nothing more in, and this upload was answered 408 at its body deadline.
    await closed
    expect(status).toBe(200)
    expect(body).toBe(String(2 * MiB))
  })

  it("stalled bodies' windows come back when their caller resets them, and when its connection goes: the gauge back to 0", { timeout: 60_000 }, async () => {
    const { session, streams, seen } = await stall(8)
    await waitFor(() => seen.granted >= 8 * 64 * 1024, 20_000, "the stalled bodies' windows granted")
    const before = seen.granted
    // Four reset by their caller mid-body (RST_STREAM CANCEL): their windows come back at once.
    for (const stream of streams.slice(0, 4)) stream.close(http2.constants.NGHTTP2_CANCEL)
    await waitFor(() => seen.granted > 0 && seen.granted < before, 10_000, "the reset bodies' windows back")
    // The connection gone mid-body: the rest come back.
    session.destroy()
    await waitFor(() => seen.granted === 0, 10_000, "A's body windows back to 0")
  })
})
