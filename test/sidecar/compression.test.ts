// Body compression between sidecars (`compress: true`, for slow links): two sidecars that both
// compress agree on zstd, a JSON-like request and answer arrive intact, and far fewer bytes cross
// the IIP connection than with compression off (counted on the caller sidecar's socket to the
// peer).
import { afterEach, describe, expect, it } from "vitest"
import type * as http from "node:http"
import type * as net from "node:net"
import { jsonLike } from "../helpers/jsonLike.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { call, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

/** An app that answers with what it was sent. */
const mirror: http.RequestListener = (req, res) => {
  const parts: Array<Buffer> = []
  req.on("data", (chunk: Buffer) => parts.push(chunk))
  req.on("end", () => {
    const body = Buffer.concat(parts)
    res.writeHead(200, { "content-type": "application/json", "content-length": body.length })
    res.end(body)
  })
}

const BODY = jsonLike(48 * 1024)

/** Caller sidecar A -> sidecar B -> mirror app; returns the bytes A's connection to B wrote and read. */
const roundTrip = async (cleanup: Cleanup, compress: boolean) => {
  const app = await startApp(cleanup, mirror)
  const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, compress }))
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", compress, endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
  const answer = await call(a.outboundPort, { method: "POST", path: "/mirror", headers: { host: "catalog", "content-type": "application/json" }, body: BODY })
  const endpoint = a.sidecar.registry.endpointsOf("catalog")[0]!
  const sessions = a.sidecar.registry.clientOf(endpoint).meshSessions
  const socket = sessions[0]!.connection.socket as unknown as net.Socket
  return { answer, codec: sessions[0]!.codec, written: socket.bytesWritten, read: socket.bytesRead }
}

describe("compression between sidecars", () => {
  const cleanup = new Cleanup()
  afterEach(() => cleanup.run())

  it("both compressing: zstd agreed, the body arrives intact both ways, a fraction of the bytes on the wire", async () => {
    const on = await roundTrip(cleanup, true)
    expect(on.answer.status).toBe(200)
    expect(on.answer.body.equals(BODY)).toBe(true)
    expect(on.codec).toBe("zstd")
    const off = await roundTrip(cleanup, false)
    expect(off.answer.body.equals(BODY)).toBe(true)
    console.log(`[compression] ${BODY.length} B JSON-like body each way: ${off.written} B written / ${off.read} B read off, ${on.written} / ${on.read} compressed`)
    expect(on.written).toBeLessThan(off.written / 3)
    expect(on.read).toBeLessThan(off.read / 3)
  })
})
