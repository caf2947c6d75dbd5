// The h2c leg's wait for a gRPC answer's trailers (src/sidecar/appH2.ts): an answer holding one
// whole message when the first 1 ms wait ends, of a method not seen to stream, waits longer for its
// trailers and goes back as one mesh message; once a method's answer carried a second message, its
// answers stream as soon as the first wait ends. Sidecar B alone, called in mesh mode, in front of a
// node:http2 app that sends its trailers 8 ms after the message (a paused app, say).
import * as http2 from "node:http2"
import type * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import { HttpMeta } from "../../src/sidecar/httpEnvelope.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { startClient } from "../support/meshTest.ts"
import { LOOPBACK, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const TRAILERS_AFTER_MS = 8

/** A gRPC message: flag byte, 4-byte length, the bytes. */
const frame = (text: string): Buffer => {
  const body = Buffer.from(text)
  const out = Buffer.alloc(5 + body.length)
  out.writeUInt32BE(body.length, 1)
  body.copy(out, 5)
  return out
}

/** Answers `messages` messages (the request's one byte says how many), the first at once, the trailers 8 ms after the last. */
const startApp = async (cleanup: Cleanup): Promise<number> => {
  const app = http2.createServer()
  app.on("stream", (stream) => {
    const parts: Array<Buffer> = []
    stream.on("data", (chunk: Buffer) => parts.push(chunk))
    stream.on("end", () => {
      const messages = Buffer.concat(parts).at(-1) ?? 1
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true })
      stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }))
      stream.write(frame("first"))
      let sent = 1
      const more = () => {
        if (sent < messages) {
          sent++
          stream.write(frame("more"))
          return void setTimeout(more, TRAILERS_AFTER_MS)
        }
        stream.end()
      }
      setTimeout(more, TRAILERS_AFTER_MS)
    })
    stream.on("error", () => {})
  })
  await new Promise<void>((resolve) => app.listen(0, LOOPBACK, resolve))
  cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
  return (app.address() as net.AddressInfo).port
}

/** A call of `path` asking for `messages` messages: whether its answer came whole, and its body. */
const call = async (client: IipClient, path: string, messages: number): Promise<{ readonly whole: boolean; readonly body: Buffer }> => {
  const meta = new Map<string, string>()
    .set(HttpMeta.method, "POST")
    .set(HttpMeta.authority, "inventory")
    .set(HttpMeta.headers, JSON.stringify([["content-type", "application/grpc"]]))
  const reply = await withTimeout(client.stream(path, Buffer.from([0, 0, 0, 0, 1, messages]), { meta, timeoutMs: 5000 }), 5000, "the answer")
  if (reply.stream === undefined) return { whole: true, body: reply.data }
  const parts: Array<Buffer> = []
  for await (const chunk of reply.stream) parts.push(Buffer.from(chunk))
  return { whole: false, body: Buffer.concat(parts) }
}

describe("the h2c leg's wait for a gRPC answer's trailers", () => {
  let cleanup: Cleanup
  let client: IipClient

  beforeEach(async () => {
    cleanup = new Cleanup()
    const appPort = await startApp(cleanup)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${appPort}`, appProtocol: "h2c" }))
    client = startClient(cleanup, b.sidecar.inbound.port)
  })
  afterEach(() => cleanup.run())

  it("holds one whole message whose trailers come late, and streams a method once one of its answers carried a second message", async () => {
    // Trailers 8 ms after the only message: past the first wait, within the longer one.
    const unary = await call(client, "/t.S/Get", 1)
    expect(unary.whole).toBe(true)
    expect(unary.body).toStrictEqual(frame("first"))
    // Two messages: the answer streams, and its method is known to stream from then on.
    const stream = await call(client, "/t.S/Watch", 2)
    expect(stream.whole).toBe(false)
    expect(stream.body).toStrictEqual(Buffer.concat([frame("first"), frame("more")]))
    const again = await call(client, "/t.S/Watch", 1)
    expect(again.whole).toBe(false)
    expect(again.body).toStrictEqual(frame("first"))
    // Another method is not: its one late message is held still.
    expect((await call(client, "/t.S/Get", 1)).whole).toBe(true)
  })
})
