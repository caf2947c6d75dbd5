// The sidecar's inbound listener takes its budgets, limits and timeouts from its configuration
// (issue 13, points 3-5; README settings table): app <- sidecar B <- sidecar A, with B set to 4
// channels per connection, 64 KiB whole bodies and a 300 ms first-packet timeout.
// - a raw dialer declaring maxChannels 2^31-1 is told 4 in B's hello answer;
// - a 200 KiB body in one packet is refused bad_request, not processed, and the connection goes on;
// - a connection that says nothing is closed when the first-packet timeout passes;
// - meanwhile A's calls through B reach the app, a streamed 1 MiB body included.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { decodeEnvelope, decodeErrorBody, decodeHello, emptyMeta, encodeEnvelope, encodeHello, EnvelopeKind, MeshPath } from "../../src/protocol/mesh.ts"
import { Cleanup, frame, RawClient } from "../support/iipRaw.ts"
import { helloOf } from "../support/meshTest.ts"
import { call, echoed, echoRequest, startMesh } from "../support/sidecarHarness.ts"

describe("the sidecar's inbound limits come from its configuration", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  it("channels, whole-body limit and first-packet timeout as configured; legitimate calls through it still answered", async () => {
    const mesh = await startMesh(cleanup, echoRequest, {
      b: { maxChannelsPerConnection: 4, maxWholeBodyBytes: 64 * 1024, firstPacketTimeoutMs: 300 }
    })
    const port = Number(mesh.b.inboundAddress.split(":")[1])

    const silent = await RawClient.connect(port, cleanup)
    const started = performance.now()

    const raw = await RawClient.connect(port, cleanup)
    raw.write(frame(1, MeshPath.hello, 0, encodeHello(helloOf({ node: "greedy", maxChannels: 0x7fff_ffff, maxMetaBytes: 60 * 1024 }), false)))
    expect(decodeHello((await raw.next()).data)?.maxChannels).toBe(4)
    raw.write(frame(1, "/big", 1, encodeEnvelope(EnvelopeKind.request, 0, 1, emptyMeta, Buffer.alloc(200 * 1024), 8192)))
    const refused = (await raw.next(5000)).data
    const envelope = decodeEnvelope(refused, 60 * 1024)
    expect(envelope.kind).toBe(EnvelopeKind.error)
    const error = decodeErrorBody(refused.subarray(envelope.bodyOffset))
    expect(error.code).toBe("bad_request")
    expect(error.processed).toBe(false)
    expect(mesh.app.seen).toEqual([])

    await silent.waitClose(5000)
    expect(performance.now() - started).toBeGreaterThanOrEqual(250)
    expect(raw.isClosed).toBe(false)

    const small = await call(mesh.a.outboundPort, { path: "/hello", headers: { host: "catalog" } })
    expect(small.status).toBe(200)
    const body = Buffer.alloc(1024 * 1024, 0x61)
    const large = await call(mesh.a.outboundPort, { method: "POST", path: "/upload", headers: { host: "catalog" }, body })
    expect(large.status).toBe(200)
    expect(echoed(large).url).toBe("/upload")
    expect(echoed(large).body).toHaveLength(body.length)
  })
})
