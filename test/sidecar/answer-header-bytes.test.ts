// Header bytes 0x80-0xff (obs-text, RFC 9110 §5.5) in an app's answer reach the calling app as the
// app sent them, through B (appPool.ts: llhttp's Latin-1 strings; appH2.ts: node:http2's), the mesh
// envelope (UTF-8 of those strings, decoded back to them) and A (http1Call.ts writes its heads
// Latin-1), as a request's do on the way in: an answer held whole, a chunked one with a trailer, one
// that streams, and an h2c app's. A guard: it passed on main when written (f50343a), where the
// reported re-encoding (`e9 ff` reaching the caller as `c3 a9 c3 bf`) did not reproduce.
import * as http2 from "node:http2"
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Cleanup, startRawServer, withTimeout } from "../support/iipRaw.ts"
import { LOOPBACK, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const OBS_TEXT = Buffer.from([0xe9, 0xff])
const OBS_FIELD = Buffer.concat([Buffer.from("\r\nx-obs: "), OBS_TEXT, Buffer.from("\r\n")])
const UTF8_OF_E9 = Buffer.from([0xc3, 0xa9])

/** Everything `port` sends back to `request` until it closes the connection. */
const rawExchange = (cleanup: Cleanup, port: number, request: Buffer): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    const socket = net.connect(port, LOOPBACK, () => socket.write(request))
    cleanup.add(() => socket.destroy())
    const parts: Array<Buffer> = []
    socket.on("data", (chunk: Buffer) => parts.push(chunk))
    socket.on("error", reject)
    socket.on("close", () => resolve(Buffer.concat(parts)))
  })

const answerHead = (framing: string) => Buffer.concat([Buffer.from("HTTP/1.1 200 OK\r\nx-obs: "), OBS_TEXT, Buffer.from(`\r\n${framing}\r\n\r\n`)])

const ANSWERS: Record<string, Buffer> = {
  "held whole": Buffer.concat([answerHead("content-length: 2"), Buffer.from("ok")]),
  "chunked, with an obs-text trailer": Buffer.concat([answerHead("transfer-encoding: chunked\r\ntrailer: x-obs"), Buffer.from("2\r\nok\r\n0\r\nx-obs: "), OBS_TEXT, Buffer.from("\r\n\r\n")]),
  streamed: Buffer.concat([answerHead("content-length: 300000"), Buffer.alloc(300_000, 0x61)])
}

/** A, then B in front of the app on `appPort`; a raw caller's request with an obs-text header through them: the bytes it got back. */
const throughPair = async (cleanup: Cleanup, appPort: number, appProtocol?: "h2c"): Promise<Buffer> => {
  const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${appPort}`, ...(appProtocol === undefined ? {} : { appProtocol }), tracing: false }))
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { inventory: [{ address: b.inboundAddress, weight: 1 }] } }))
  const request = Buffer.concat([Buffer.from("GET /stock HTTP/1.1\r\nhost: inventory\r\nte: trailers\r\nx-obs: "), OBS_TEXT, Buffer.from("\r\nconnection: close\r\n\r\n")])
  return withTimeout(rawExchange(cleanup, a.outboundPort, request), 10_000, "the answer")
}

describe("obs-text header bytes through A and B", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  for (const [kind, answer] of Object.entries(ANSWERS)) {
    it(`an HTTP/1.1 app's answer ${kind}: e9 ff reach the caller as e9 ff, and the request's reach the app`, async () => {
      const requestHeads: Array<Buffer> = []
      const app = await startRawServer(cleanup, (socket) => {
        const parts: Array<Buffer> = []
        socket.on("data", (chunk: Buffer) => {
          parts.push(chunk)
          const head = Buffer.concat(parts)
          if (head.indexOf("\r\n\r\n") < 0) return
          requestHeads.push(head)
          socket.end(answer)
        })
      })
      const got = await throughPair(cleanup, app.port)
      expect(got.subarray(0, 15).toString("latin1")).toBe("HTTP/1.1 200 OK")
      expect(got.indexOf(OBS_FIELD)).toBeGreaterThan(0)
      const lastChunk = Buffer.concat([Buffer.from("0"), OBS_FIELD, Buffer.from("\r\n")])
      if (kind.startsWith("chunked")) expect(got.subarray(-lastChunk.length).toString("hex")).toBe(lastChunk.toString("hex"))
      expect(got.indexOf(UTF8_OF_E9)).toBe(-1)
      expect(requestHeads).toHaveLength(1)
      expect(requestHeads[0]!.indexOf(OBS_FIELD)).toBeGreaterThan(0)
    }, 30_000)
  }

  it("an h2c app's answer: e9 ff reach the caller as e9 ff, and the request's reach the app", async () => {
    const requestValues: Array<string | undefined> = []
    const app = http2.createServer((req, res) => {
      requestValues.push(req.headers["x-obs"] as string | undefined)
      res.setHeader("x-obs", OBS_TEXT.toString("latin1"))
      res.end("ok")
    })
    await new Promise<void>((resolve) => app.listen(0, LOOPBACK, resolve))
    cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
    const got = await throughPair(cleanup, (app.address() as net.AddressInfo).port, "h2c")
    expect(got.indexOf(OBS_FIELD)).toBeGreaterThan(0)
    expect(got.indexOf(UTF8_OF_E9)).toBe(-1)
    expect(requestValues).toStrictEqual([OBS_TEXT.toString("latin1")])
  }, 30_000)
})
