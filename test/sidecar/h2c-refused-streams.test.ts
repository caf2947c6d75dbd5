// Streams an h2c app refuses (RFC 9113 §8.7: RST_STREAM(REFUSED_STREAM) means the request was not
// processed), at sidecar B (src/sidecar/appH2.ts, appH2Exchange.ts). B opens one stream on a new
// session until the app's SETTINGS say how many it takes, and a refusal that still comes ends the
// request as not processed, which A may retry on another endpoint. Before, a burst on a new session
// went out at once (up to --app-h2-max-streams), an app announcing 1 refused the rest, and each
// came back app_failed marked processed (POSTs not retried): both tests failed.
import * as http2 from "node:http2"
import type * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { h2Frame, rstStream, startRawH2App } from "../support/h2Raw.ts"
import { call, LOOPBACK, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const REFUSED_STREAM = 7
const PROTOCOL_ERROR = 1
const GOAWAY = 7

/** A GOAWAY frame naming `lastStream` and the error code. */
const goaway = (lastStream: number, code: number): Buffer => {
  const payload = Buffer.alloc(8)
  payload.writeUInt32BE(lastStream, 0)
  payload.writeUInt32BE(code, 4)
  return h2Frame(GOAWAY, 0, 0, payload)
}

/** A node:http2 app (closed at cleanup) that announces `maxConcurrentStreams` and answers each request with its body: its port. */
const startEchoApp = async (cleanup: Cleanup, maxConcurrentStreams: number): Promise<number> => {
  const app = http2.createServer({ settings: { maxConcurrentStreams } }, (req, res) => {
    const parts: Array<Buffer> = []
    req.on("data", (chunk: Buffer) => parts.push(chunk))
    req.on("end", () => res.end(Buffer.concat(parts)))
  })
  await new Promise<void>((resolve) => app.listen(0, LOOPBACK, resolve))
  cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
  return (app.address() as net.AddressInfo).port
}

const post = (port: number, body: string) =>
  call(port, { method: "POST", path: "/orders", headers: { host: "inventory", "content-length": String(body.length) }, body: Buffer.from(body) })

/**
 * Eight POSTs in turn through A to two endpoints: B before a raw app that answers each request with
 * `refuse` (a request it did not process), and B before an echo app. Each must be answered by the
 * echo app (A sent it there, first or after the refusal); the refusals made (some: all eight going to
 * the echo app first has a chance of 1 in 256, which the caller's check of the count rules out).
 */
const postsBeside = async (cleanup: Cleanup, refuse: (socket: net.Socket, stream: number) => void): Promise<number> => {
  let refusals = 0
  const refusing = await startRawH2App(cleanup, (socket, stream) => {
    refusals++
    refuse(socket, stream)
  })
  const refuser = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${refusing.port}`, appProtocol: "h2c", tracing: false }))
  const answering = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${await startEchoApp(cleanup, 100)}`, appProtocol: "h2c", tracing: false }))
  const endpoints = [refuser, answering].map((b) => ({ address: b.inboundAddress, weight: 1 }))
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { inventory: endpoints } }))
  for (let i = 0; i < 8; i++) {
    const answer = await post(a.outboundPort, `order ${i}`)
    expect(`${answer.status} ${answer.body.toString()} ${answer.headers["x-iip-mesh-error"] ?? ""}`).toBe(`200 order ${i} `)
  }
  return refusals
}

describe("streams an h2c app refuses", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("a burst of POSTs on a new session to an app that takes 1 stream at a time: every one answered", async () => {
    const appPort = await startEchoApp(cleanup, 1)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${appPort}`, appProtocol: "h2c", appH2MaxStreams: 8, tracing: false }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { inventory: [{ address: b.inboundAddress, weight: 1 }] } }))
    const answers = await withTimeout(Promise.all(Array.from({ length: 6 }, (_, i) => post(a.outboundPort, `order ${i}`))), 20_000, "the six answers")
    expect(answers.map((answer) => `${answer.status} ${answer.body.toString()} ${answer.headers["x-iip-mesh-error"] ?? ""}`)).toStrictEqual(
      Array.from({ length: 6 }, (_, i) => `200 order ${i} `)
    )
  }, 60_000)

  it("a POST the app refuses with REFUSED_STREAM is not processed: A sends it to another endpoint", async () => {
    const refusals = await postsBeside(cleanup, (socket, stream) => socket.write(rstStream(stream, REFUSED_STREAM)))
    expect(refusals).toBeGreaterThan(0)
  }, 60_000)

  it("a POST above the last stream id of the app's GOAWAY with an error code is not processed (RFC 9113 §6.8): A sends it to another endpoint", async () => {
    // node destroys B's session on a GOAWAY with an error code before nghttp2 refuses the streams
    // above its last stream id: only the id B keeps (appH2.ts aboveGoaway) says they were not processed.
    const refusals = await postsBeside(cleanup, (socket) => socket.write(goaway(0, PROTOCOL_ERROR)))
    expect(refusals).toBeGreaterThan(0)
  }, 60_000)
})
