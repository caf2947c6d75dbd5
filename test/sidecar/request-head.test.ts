// Large request heads cross the mesh (issue 13, point 8): PROTOCOL.md §17.1 has sidecars accept
// 60 KiB of metadata, so a request with ~12 KiB of headers (under node's 16 KiB head limit at the
// outbound listener) must reach the app, not fail with 400 because the caller's client advertised
// the library's 8 KiB.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Cleanup } from "../support/iipRaw.ts"
import { call, echoed, echoRequest, type Mesh, startMesh } from "../support/sidecarHarness.ts"

describe("request heads larger than 8 KiB", () => {
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
})
