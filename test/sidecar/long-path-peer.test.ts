// A peer sidecar (or a plain IIP client) sending sidecar B a path longer than 2,048 bytes, the most
// a packet may carry (the reference's MaxPathLen) and so the most B's answer, which carries the
// request's parsed path, may carry. Mesh: the request is refused bad_request, not processed (the app
// never sees it), its answer on "/" (a mesh caller pairs by request id), and the connection goes
// on. Plain IIP, as the Go reference: the request runs and the connection closes, since no answer
// can be built, but never without a word: one line naming the peer and the reason, at most 20 a
// minute however many connections a peer repeats it on.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { decodeEnvelope, decodeErrorBody, decodeHello, emptyMeta, encodeEnvelope, encodeHello, EnvelopeKind, MeshPath } from "../../src/protocol/mesh.ts"
import { Cleanup, frame, RawClient } from "../support/iipRaw.ts"
import { collectLog, helloOf } from "../support/meshTest.ts"
import { echoRequest, startApp, startSidecar, sidecarConfig } from "../support/sidecarHarness.ts"

const longPath = "/" + "a".repeat(2999)

describe("a path longer than 2,048 bytes from a peer", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  const start = async () => {
    const seen: Array<string> = []
    const app = await startApp(cleanup, (req, res) => {
      seen.push(req.url ?? "")
      echoRequest(req, res)
    })
    const logged = collectLog()
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address }), logged.log)
    return { seen, logged, port: Number(b.inboundAddress.split(":")[1]) }
  }

  it("mesh: refused bad_request, not processed, on a path a packet carries; the connection goes on", async () => {
    const { seen, port } = await start()
    const raw = await RawClient.connect(port, cleanup)
    raw.write(frame(1, MeshPath.hello, 0, encodeHello(helloOf({ node: "hostile" }), false)))
    expect(decodeHello((await raw.next()).data)).toBeDefined()
    for (const [path, id] of [[longPath, 1], [`/é${"é".repeat(1100)}`, 2]] as const) {
      raw.write(frame(1, path, 1, encodeEnvelope(EnvelopeKind.request, 0, id, emptyMeta, Buffer.from("x"), 8192)))
      const refused = await raw.next(5000)
      expect(refused.path).toBe("/")
      const envelope = decodeEnvelope(refused.data, 8192)
      expect(envelope.kind).toBe(EnvelopeKind.error)
      expect(envelope.requestId).toBe(id)
      const error = decodeErrorBody(refused.data.subarray(envelope.bodyOffset))
      expect(error).toMatchObject({ code: "bad_request", processed: false })
      expect(error.message).toContain("2048")
    }
    // At the limit (2,048 bytes) it is served, on the same connection.
    const atLimit = "/" + "b".repeat(2047)
    raw.write(frame(1, atLimit, 1, encodeEnvelope(EnvelopeKind.request, 0, 3, emptyMeta, Buffer.from("x"), 8192)))
    const answered = await raw.next(5000)
    expect(answered.path).toBe(atLimit)
    expect(decodeEnvelope(answered.data, 8192)).toMatchObject({ kind: EnvelopeKind.response, requestId: 3 })
    expect(seen).toEqual([atLimit])
    expect(raw.isClosed).toBe(false)
  })

  it("mesh: a path counted in UTF-8 bytes, not characters: 2,047 and 2,048 bytes of 3-byte characters served, 2,050 refused", async () => {
    const { seen, port } = await start()
    const raw = await RawClient.connect(port, cleanup)
    raw.write(frame(1, MeshPath.hello, 0, encodeHello(helloOf({ node: "multibyte" }), false)))
    expect(decodeHello((await raw.next()).data)).toBeDefined()
    // 683 and 684 UTF-16 units (past the units a path may have before its bytes are counted), 2,047 and 2,048 bytes: served.
    const served = ["/" + "€".repeat(682), "/" + "€".repeat(682) + "a"]
    // 684 units, 2,050 bytes: refused, though as few units as the second.
    const refusedPath = "/" + "€".repeat(683)
    for (const [path, id] of [[served[0]!, 1], [served[1]!, 2], [refusedPath, 3]] as const) {
      // Sent percent-encoded (an origin-form target is ASCII): the answer carries the parsed path, its bytes are what count.
      raw.write(frame(1, encodeURI(path), 1, encodeEnvelope(EnvelopeKind.request, 0, id, emptyMeta, Buffer.from("x"), 8192)))
      const answer = await raw.next(5000)
      const envelope = decodeEnvelope(answer.data, 8192)
      expect(envelope.requestId).toBe(id)
      if (id === 3) {
        expect([answer.path, envelope.kind]).toEqual(["/", EnvelopeKind.error])
        expect(decodeErrorBody(answer.data.subarray(envelope.bodyOffset))).toMatchObject({ code: "bad_request", processed: false })
      } else {
        expect([answer.path, envelope.kind]).toEqual([path, EnvelopeKind.response])
      }
    }
    expect(seen.map((url) => Buffer.byteLength(decodeURIComponent(url)))).toEqual([2047, 2048])
    expect(raw.isClosed).toBe(false)
  })

  it("plain IIP: as the reference, the connection closes (no answer can carry the path), with one bounded line naming the peer and the reason", async () => {
    const { logged, port } = await start()
    const lines = () => logged.events.filter((e) => e.event === "answer-unsendable")
    for (let i = 0; i < 22; i++) {
      const raw = await RawClient.connect(port, cleanup)
      expect((await raw.newChannel()).data.toString()).toContain('"code":0')
      raw.write(frame(1, longPath, 1, "{}"))
      await raw.waitClose(5000)
      expect(raw.packets).toEqual([])
      if (i === 0) {
        expect(lines()).toHaveLength(1)
        const fields = lines()[0]!.fields
        expect(fields.remote).toMatch(/^127\.0\.0\.1:\d+$/)
        expect(fields.reason).toContain("exceeds the 2048-byte limit")
        expect(String(fields.reason).length).toBeLessThan(400)
      }
    }
    // 20 a minute: the 21st and 22nd are counted, not written.
    expect(lines()).toHaveLength(20)
  })
})
