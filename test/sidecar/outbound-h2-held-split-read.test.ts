// A held request body (HTTP/2, no content-length, under the 64 KiB whole-body limit) whose
// END_STREAM comes in the next read of the same turn: A reads a socket 64 KiB at a time, and reads
// again in the same turn when a read filled its buffer (a busy caller's calls cut anywhere). Held to
// the turn's end it was whole then: it goes whole, and a try refused unprocessed (the far app down)
// is made again on another endpoint. Decided at the end of its first read it streamed on instead,
// and a streamed body is never tried again: the caller got the refusal.
// Made here by one write of a HEADERS with a 6,000-byte field and a 60,000-byte body: the first
// 64 KiB read ends a few hundred bytes before the body's end.
import * as http2 from "node:http2"
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Flag, frame, Type } from "../helpers/h2Wire.ts"
import { connectRawH2, headerFrames, literal, requestBlock, streamOver } from "../helpers/h2RawClient.ts"
import { listenH2App } from "../support/h2AppListen.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { LOOPBACK, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const BODY = 60_000
const CALLS = 8

describe("A held body whose END_STREAM comes in the next read of the same turn", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it(`goes whole: a try the far app refused is made again on the other endpoint (${CALLS} calls, all answered)`, async () => {
    const app = http2.createServer()
    app.on("stream", (stream) => {
      stream.on("error", () => {})
      let length = 0
      stream.on("data", (chunk: Buffer) => (length += chunk.length))
      stream.on("end", () => {
        stream.respond({ ":status": 200 })
        stream.end(`ok:${length}`)
      })
    })
    const { port } = await listenH2App(cleanup, app)
    const closed = net.createServer()
    await new Promise<void>((resolve) => closed.listen(0, LOOPBACK, resolve))
    const deadPort = (closed.address() as net.AddressInfo).port
    await new Promise<void>((resolve) => closed.close(() => resolve()))
    const down = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: `${LOOPBACK}:${deadPort}`, appProtocol: "h2c" }))
    const up = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: `${LOOPBACK}:${port}`, appProtocol: "h2c" }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [down, up].map((b) => ({ address: b.inboundAddress, weight: 1 })) } }))
    const answers: Array<string> = []
    for (let i = 0; i < CALLS; i++) {
      const raw = await connectRawH2(cleanup, a.outboundPort, true)
      const body = Buffer.alloc(BODY, 0x61)
      const write = Buffer.concat([
        headerFrames(1, Buffer.concat([requestBlock("POST", "/upload"), literal("x-pad", "p".repeat(6000))]), false),
        frame(Type.data, 0, 1, body.subarray(0, 16_384)),
        frame(Type.data, 0, 1, body.subarray(16_384, 32_768)),
        frame(Type.data, 0, 1, body.subarray(32_768, 49_152)),
        frame(Type.data, Flag.endStream, 1, body.subarray(49_152))
      ])
      expect(write.length).toBeGreaterThan(65_536)
      raw.socket.write(write)
      await raw.until(streamOver(1), "the answer")
      answers.push(Buffer.concat(raw.frames.filter((f) => f.stream === 1 && f.type === Type.data).map((f) => f.payload)).toString())
      raw.socket.destroy()
    }
    expect(answers).toEqual(Array(CALLS).fill(`ok:${BODY}`))
  })
})
