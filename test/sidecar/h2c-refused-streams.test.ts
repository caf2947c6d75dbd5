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
import { FrameFlag, FrameType, h2Frame, rstStream, STATUS_200, startRawH2App } from "../support/h2Raw.ts"
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
 * Eight POSTs in turn through A to two endpoints: B before a raw app that meets each request with
 * `act` (its frames), and B before an echo app. Each answer as `status body x-iip-mesh-error`, and
 * how many requests the raw app got (some: all eight going to the echo app first has a chance of 1
 * in 256, which the callers' checks of the count rule out).
 */
const postsBeside = async (cleanup: Cleanup, act: (socket: net.Socket, stream: number) => void): Promise<{ readonly answers: Array<string>; readonly met: number }> => {
  let met = 0
  const raw = await startRawH2App(cleanup, (socket, stream) => {
    met++
    act(socket, stream)
  })
  const acting = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${raw.port}`, appProtocol: "h2c", tracing: false }))
  const answering = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${await startEchoApp(cleanup, 100)}`, appProtocol: "h2c", tracing: false }))
  const endpoints = [acting, answering].map((b) => ({ address: b.inboundAddress, weight: 1 }))
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { inventory: endpoints } }))
  const answers: Array<string> = []
  for (let i = 0; i < 8; i++) {
    const answer = await post(a.outboundPort, `order ${i}`)
    answers.push(`${answer.status} ${answer.body.toString()} ${answer.headers["x-iip-mesh-error"] ?? ""}`)
  }
  return { answers, met }
}

const ANSWERED = Array.from({ length: 8 }, (_, i) => `200 order ${i} `)

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
    const { answers, met } = await postsBeside(cleanup, (socket, stream) => socket.write(rstStream(stream, REFUSED_STREAM)))
    expect(answers).toStrictEqual(ANSWERED)
    expect(met).toBeGreaterThan(0)
  }, 60_000)

  it("a POST above the last stream id of the app's GOAWAY with an error code is not processed (RFC 9113 §6.8): A sends it to another endpoint", async () => {
    // node destroys B's session on a GOAWAY with an error code before nghttp2 refuses the streams
    // above its last stream id: only the id B keeps (appH2.ts aboveGoaway) says they were not processed.
    const { answers, met } = await postsBeside(cleanup, (socket) => socket.write(goaway(0, PROTOCOL_ERROR)))
    expect(answers).toStrictEqual(ANSWERED)
    expect(met).toBeGreaterThan(0)
  }, 60_000)

  it("a POST whose answer head came before such a GOAWAY was processed: app_failed, not sent to another endpoint", async () => {
    // The head and the GOAWAY in one write: node reads the head first (the 'response' before the
    // session's error), and only a stream with no answer head yet is taken as not processed.
    const { answers, met } = await postsBeside(cleanup, (socket, stream) => socket.write(Buffer.concat([h2Frame(FrameType.headers, FrameFlag.endHeaders, stream, STATUS_200), goaway(0, PROTOCOL_ERROR)])))
    // Each its own echo (it went to the echo app first) or app_failed; as many failed as the app met (none sent on).
    const seen = answers.map((answer, i) => (answer === ANSWERED[i] ? "echoed" : answer.startsWith("502 ") && answer.endsWith(" app; reason=app_failed") ? "app_failed" : answer))
    expect(seen.filter((one) => one !== "echoed" && one !== "app_failed")).toStrictEqual([])
    expect(seen.filter((one) => one === "app_failed").length).toBe(met)
    expect(met).toBeGreaterThan(0)
  }, 60_000)
})
