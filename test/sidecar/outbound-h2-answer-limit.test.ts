// A's answer to an h2c caller held to the caller's SETTINGS_MAX_HEADER_LIST_SIZE (RFC 9113 6.5.2):
// a head or trailers past it never go (the caller's HTTP/2 would reset the stream or end the
// session). A gRPC caller gets RESOURCE_EXHAUSTED in their place (trailers-only for a head, as the
// trailers for trailers), any other caller a 502 head, or a reset (INTERNAL_ERROR) for trailers;
// the mesh's answer is given up (its listener told, not finished; answer_headers_too_large).
// Real peer: node's HTTP/2 client announcing maxHeaderListSize 1,000, against makeH2c on 127.0.0.1.
import * as http2 from "node:http2"
import { afterEach, expect, it } from "vitest"
import type { OutboundCall } from "../../src/sidecar/outboundCall.ts"
import { h2cListening } from "../helpers/h2cListener.ts"
import { grpcMessage } from "../support/grpcRaw.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

const LIMIT = 1000
const BIG = "b".repeat(LIMIT)

interface Seen { head: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders; body: number; rst: number }

/** One request (gRPC or not) to A through node's client with a small header list limit; `answer` gets the call. */
const run = async (grpc: boolean, answer: (call: OutboundCall) => void): Promise<{ seen: Seen; call: OutboundCall; finished: Array<boolean> }> => {
  let got: OutboundCall | undefined
  const finished: Array<boolean> = []
  const { port } = await h2cListening(cleanup, (call) => {
    got = call
    call.onClose((done) => finished.push(done))
    answer(call)
  })
  const session = http2.connect(`http://127.0.0.1:${port}`, { settings: { maxHeaderListSize: LIMIT } })
  cleanup.add(() => session.destroy())
  session.on("error", () => {})
  const request = session.request({ ":method": "POST", ":path": "/demo.Echo/Unary", ...(grpc ? { "content-type": "application/grpc", te: "trailers" } : {}) })
  request.on("error", () => {})
  request.end(grpc ? grpcMessage(Buffer.from("hi")) : "hi")
  const seen = await withTimeout(
    new Promise<Seen>((resolve) => {
      const s: Seen = { head: {}, trailers: {}, body: 0, rst: -1 }
      request.on("response", (h) => (s.head = h))
      request.on("trailers", (t) => (s.trailers = t))
      request.on("data", (chunk: Buffer) => (s.body += chunk.length))
      request.on("close", () => resolve({ ...s, rst: request.rstCode ?? -1 }))
    }),
    5000,
    "the answer"
  )
  return { seen, call: got!, finished }
}

it("a gRPC answer's head past the caller's limit: trailers-only RESOURCE_EXHAUSTED in its place", async () => {
  const { seen, call, finished } = await run(true, (call) => {
    call.writeHead(200, [["content-type", "application/grpc"], ["x-big", BIG]])
    call.end(grpcMessage(Buffer.from("answer")), [["grpc-status", "0"]])
  })
  expect({ status: seen.head[":status"], grpc: seen.head["grpc-status"], big: seen.head["x-big"], body: seen.body, rst: seen.rst }).toStrictEqual({ status: 200, grpc: "8", big: undefined, body: 0, rst: 0 })
  expect(String(seen.head["grpc-message"])).toContain("SETTINGS_MAX_HEADER_LIST_SIZE (1000)")
  expect({ cut: call.cutReason, destroyed: call.destroyed, finished }).toStrictEqual({ cut: "answer_headers_too_large", destroyed: true, finished: [false] })
})

it("a gRPC answer's trailers past the caller's limit: RESOURCE_EXHAUSTED as its trailers, after its message", async () => {
  const { seen, finished } = await run(true, (call) => {
    call.writeHead(200, [["content-type", "application/grpc"]])
    call.end(grpcMessage(Buffer.from("answer")), [["grpc-status", "0"], ["x-big", BIG]])
  })
  expect({ status: seen.head[":status"], body: seen.body, grpc: seen.trailers["grpc-status"], big: seen.trailers["x-big"], rst: seen.rst, finished }).toStrictEqual({
    status: 200,
    body: 5 + 6,
    grpc: "8",
    big: undefined,
    rst: 0,
    finished: [false]
  })
})

it("a streamed answer whose head is past the limit: its writes are refused, the call given up", async () => {
  const writes: Array<boolean> = []
  const { seen, call } = await run(true, (call) => {
    call.writeHead(200, [["content-type", "application/grpc"], ["x-big", BIG]])
    writes.push(call.write(grpcMessage(Buffer.from("one"))), call.write(grpcMessage(Buffer.from("two"))))
  })
  expect({ writes, destroyed: call.destroyed, grpc: seen.head["grpc-status"], body: seen.body }).toStrictEqual({ writes: [false, false], destroyed: true, grpc: "8", body: 0 })
})

it("another caller: a 502 head in place of one past its limit; trailers past it reset the stream", async () => {
  const head = await run(false, (call) => {
    call.writeHead(200, [["x-big", BIG]])
    call.end(Buffer.from("answer"))
  })
  expect({ status: head.seen.head[":status"], error: head.seen.head["x-iip-mesh-error"], body: head.seen.body }).toStrictEqual({ status: 502, error: "outbound; reason=answer_headers_too_large", body: 0 })
  const trailers = await run(false, (call) => {
    call.writeHead(200, [])
    call.end(Buffer.from("answer"), [["x-big", BIG]])
  })
  expect({ status: trailers.seen.head[":status"], rst: trailers.seen.rst, cut: trailers.call.cutReason }).toStrictEqual({ status: 200, rst: http2.constants.NGHTTP2_INTERNAL_ERROR, cut: "answer_headers_too_large" })
})
