// Request heads cross the mesh whole. Large ones (issue 13, point 8): PROTOCOL.md §17.1 has
// sidecars accept 60 KiB of metadata, so a request with ~12 KiB of headers (under node's 16 KiB
// head limit at the outbound listener) must reach the app, not fail with 400 because the caller's
// client advertised the library's 8 KiB. A target holding "%00": B answers a mesh request on its
// parsed path (PROTOCOL.md §5), where "%00" is a NUL no packet may carry; the app ran the request
// and answered, and the caller got 502 handler_failed instead. Its answer now goes on the path as it came.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Cleanup } from "../support/iipRaw.ts"
import { call, echoed, echoRequest, type Mesh, startMesh } from "../support/sidecarHarness.ts"

describe("request heads through two sidecars", () => {
  const cleanup = new Cleanup()
  let mesh: Mesh

  beforeAll(async () => {
    mesh = await startMesh(cleanup, echoRequest, { a: { tracing: false }, b: { tracing: false } })
  })
  afterAll(() => cleanup.run())

  it("a request with ~12 KiB of headers reaches the app through two sidecars", async () => {
    const headers: Record<string, string> = { host: "catalog" }
    for (let i = 0; i < 12; i++) headers[`x-big-${i}`] = String(i).repeat(1000).slice(0, 1000)
    const answer = await call(mesh.a.outboundPort, { path: "/big", headers })
    expect(answer.status).toBe(200)
    const seen = echoed(answer)
    for (let i = 0; i < 12; i++) expect(seen.headers[`x-big-${i}`]).toBe(headers[`x-big-${i}`])
  })

  it.each([["GET", "/file%00.txt"], ["POST", "/a/%00/b?q=%00"]])("%s %s reaches the app as sent and its answer reaches the caller", async (method, path) => {
    const answer = await call(mesh.a.outboundPort, { method, path, headers: { host: "catalog", "content-length": "2" }, body: "hi" })
    expect(answer.headers["x-iip-mesh-error"]).toBeUndefined()
    expect(answer.status).toBe(200)
    expect(echoed(answer).url).toBe(path)
    expect(echoed(answer).body).toBe("hi")
  })

  it("a target holding %00 whose answer streams (past one 64 KiB chunk) gets it whole", async () => {
    const body = "z".repeat(200_000)
    const answer = await call(mesh.a.outboundPort, { method: "POST", path: "/big%00", headers: { host: "catalog", "content-length": String(body.length) }, body })
    expect(answer.headers["x-iip-mesh-error"]).toBeUndefined()
    expect(answer.status).toBe(200)
    expect(echoed(answer).url).toBe("/big%00")
    expect(echoed(answer).body).toBe(body)
  })
})
