// The per-connection share of A's h2c request-body windows (src/sidecar/h2BodyCredit.ts) comes back
// however a body's stream ends: reset by its caller mid-body, its connection destroyed mid-body,
// or its connection closed (GOAWAY) with bodies still open. Then the gauge is 0 and a new
// connection gets its whole share. Real peers: node:http2 callers, a node:http2 app that reads
// nothing until told, two sidecars.
import * as http2 from "node:http2"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { metric } from "../support/eventStreamApp.ts"
import { Cleanup, readUntil, waitFor } from "../support/iipRaw.ts"
import { LOOPBACK, type RunningSidecar, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const KiB = 1024
/** A 1 MiB budget: a connection's share is 4 first windows of 64 KiB. */
const BUDGET = 1024 * KiB
const PER_CONNECTION = BUDGET / 4 / (64 * KiB)

describe("a connection's share of A's h2c body windows comes back", () => {
  let cleanup: Cleanup
  let a: RunningSidecar
  beforeEach(async () => {
    cleanup = new Cleanup()
    // The app never reads a body: each stays at A, holding its window.
    const app = http2.createServer()
    app.on("stream", (stream) => stream.on("error", () => {}))
    await new Promise<void>((resolve) => app.listen(0, LOOPBACK, resolve))
    cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
    const sessions = new Set<http2.ServerHttp2Session>()
    app.on("session", (session) => (sessions.add(session), session.on("error", () => {})))
    cleanup.add(() => sessions.forEach((session) => session.destroy()))
    const port = (app.address() as { port: number }).port
    const b = await startSidecar(cleanup, sidecarConfig({ service: "store", app: `${LOOPBACK}:${port}`, appProtocol: "h2c", tracing: false }))
    a = await startSidecar(cleanup, sidecarConfig({ service: "shop", tracing: false, outboundH2MaxHeldBodyBytes: BUDGET, requestTimeoutMs: 60_000, endpoints: { store: [{ address: b.inboundAddress, weight: 1 }] } }))
  })
  afterEach(() => cleanup.run())

  const granted = () => metric(a, /^iip_mesh_outbound_h2_body_window_bytes /)
  const connect = () => {
    const session = http2.connect(`http://${LOOPBACK}:${a.outboundPort}`)
    session.on("error", () => {})
    cleanup.add(() => session.destroy())
    return session
  }
  /** `count` uploads on `session` that send 32 KiB and stay open: how each one fared. */
  const uploads = (session: http2.ClientHttp2Session, count: number) =>
    Array.from({ length: count }, () => {
      const stream = session.request({ ":method": "POST", ":path": "/upload", ":authority": "store" })
      stream.on("error", () => {})
      const fate = { stream, refused: false }
      stream.on("close", () => (fate.refused = stream.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM))
      stream.write(Buffer.alloc(32 * KiB, 0x61))
      return fate
    })

  it("reset mid-body, connection destroyed mid-body, connection closed: the gauge is 0, a new connection has its whole share", { timeout: 60_000 }, async () => {
    const first = connect()
    const second = connect()
    const third = connect()
    const held = [...uploads(first, PER_CONNECTION), ...uploads(second, PER_CONNECTION), ...uploads(third, PER_CONNECTION)]
    await readUntil(granted, (bytes) => bytes === 3 * PER_CONNECTION * 64 * KiB, 10_000)
    expect(held.some((one) => one.refused)).toBe(false)
    // The first's streams reset by the caller (CANCEL), the second destroyed, the third closed with GOAWAY.
    for (const one of held.slice(0, PER_CONNECTION)) one.stream.close(http2.constants.NGHTTP2_CANCEL)
    second.destroy()
    third.close()
    for (const one of held.slice(2 * PER_CONNECTION)) one.stream.close(http2.constants.NGHTTP2_CANCEL)
    expect((await readUntil(granted, (bytes) => bytes === 0, 10_000)).value).toBe(0)
    // The first connection, its streams gone, has its whole share again, and a new one too.
    const again = uploads(first, PER_CONNECTION + 1)
    const fresh = uploads(connect(), PER_CONNECTION + 1)
    await waitFor(() => again[PER_CONNECTION]!.refused && fresh[PER_CONNECTION]!.refused, 10_000, "each connection's one past its share refused")
    expect((await readUntil(granted, (bytes) => bytes === 2 * PER_CONNECTION * 64 * KiB, 10_000)).value).toBe(2 * PER_CONNECTION * 64 * KiB)
    expect([...again, ...fresh].filter((one) => one.refused).length).toBe(2)
  })
})
