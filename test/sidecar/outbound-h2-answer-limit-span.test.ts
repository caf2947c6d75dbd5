// The span of a gRPC call whose answer's head was past the caller's SETTINGS_MAX_HEADER_LIST_SIZE
// (outboundH2Call.ts): the caller got RESOURCE_EXHAUSTED (8) from A in place of the app's head, so
// A's span records 8 as rpc.grpc.status_code, not the app's OK it never saw.
// Real parts: node's HTTP/2 client announcing maxHeaderListSize 1,000 -> A -> B -> a node:http2 app.
import * as http2 from "node:http2"
import { afterAll, expect, it } from "vitest"
import { grpcMessage } from "../support/grpcRaw.ts"
import { listenH2App } from "../support/h2AppListen.ts"
import { Cleanup, untilTurn, withTimeout } from "../support/iipRaw.ts"
import { startMesh } from "../support/sidecarHarness.ts"

const cleanup = new Cleanup()
afterAll(() => cleanup.run())

it("A's client span records RESOURCE_EXHAUSTED, the status the caller got", async () => {
  const server = http2.createServer()
  server.on("stream", (stream) => {
    stream.on("error", () => {})
    stream.respond({ ":status": 200, "content-type": "application/grpc", "x-big": "b".repeat(1000) }, { waitForTrailers: true })
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }))
    stream.end(grpcMessage(Buffer.from("answer")))
  })
  const app = await listenH2App(cleanup, server)
  const { a } = await startMesh(cleanup, () => {}, { b: { app: `127.0.0.1:${app.port}`, appProtocol: "h2c" } })
  const session = http2.connect(`http://127.0.0.1:${a.outboundPort}`, { settings: { maxHeaderListSize: 1000 } })
  cleanup.add(() => session.destroy())
  session.on("error", () => {})
  const request = session.request({ ":method": "POST", ":path": "/demo.Echo/Unary", ":authority": "catalog", "content-type": "application/grpc", te: "trailers" })
  request.on("error", () => {})
  request.end(grpcMessage(Buffer.from("hi")))
  const head = await withTimeout(new Promise<http2.IncomingHttpHeaders>((resolve) => request.on("response", resolve)), 5000, "the answer")
  request.resume()
  expect(head["grpc-status"]).toBe("8")
  const traces = a.sidecar.telemetry.traces
  const clientSpan = () => traces.recent(10).flatMap((trace) => traces.get(trace.traceId) ?? []).find((span) => span.kind === "client")
  await untilTurn(() => clientSpan() !== undefined, "A's span")
  expect(clientSpan()!.attributes["rpc.grpc.status_code"]).toBe(8)
})
