// A request target holding "%00" crosses the mesh whole. B answers a mesh request on its parsed
// path (PROTOCOL.md §5), where "%00" is a NUL no packet may carry: the app ran the request and
// answered, and the caller got 502 handler_failed instead of that answer. Its answer now goes on
// the path as it came.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Cleanup } from "../support/iipRaw.ts"
import { call, echoed, echoRequest, type Mesh, startMesh } from "../support/sidecarHarness.ts"

describe("a request target holding %00", () => {
  const cleanup = new Cleanup()
  let mesh: Mesh

  beforeAll(async () => {
    mesh = await startMesh(cleanup, echoRequest, { a: { tracing: false }, b: { tracing: false } })
  })
  afterAll(() => cleanup.run())

  it.each([["GET", "/file%00.txt"], ["POST", "/a/%00/b?q=%00"]])("%s %s reaches the app as sent and its answer reaches the caller", async (method, path) => {
    const answer = await call(mesh.a.outboundPort, { method, path, headers: { host: "catalog", "content-length": "2" }, body: "hi" })
    expect(answer.headers["x-iip-mesh-error"]).toBeUndefined()
    expect(answer.status).toBe(200)
    expect(echoed(answer).url).toBe(path)
    expect(echoed(answer).body).toBe("hi")
  })

  it("a streamed answer (past one 64 KiB chunk) comes back whole", async () => {
    const body = "z".repeat(200_000)
    const answer = await call(mesh.a.outboundPort, { method: "POST", path: "/big%00", headers: { host: "catalog", "content-length": String(body.length) }, body })
    expect(answer.headers["x-iip-mesh-error"]).toBeUndefined()
    expect(answer.status).toBe(200)
    expect(echoed(answer).url).toBe("/big%00")
    expect(echoed(answer).body).toBe(body)
  })
})
