// B's leg to an h2c app holds a request's head to the app's SETTINGS_MAX_HEADER_LIST_SIZE (RFC 9113
// 6.5.2): a head past it is never sent (the app's nghttp2 would reset the stream, counted against
// B's session), and the caller gets 431 headers_too_large from the inbound hop, not processed and
// not retried elsewhere (every instance would refuse it alike); a gRPC caller reads
// RESOURCE_EXHAUSTED. The session lives on: a request after it is answered.
// Real parts: an HTTP/1.1 caller and a grpc-js caller -> A -> B -> a node:http2 app announcing 2,000.
import * as grpc from "@grpc/grpc-js"
import * as http2 from "node:http2"
import { afterAll, beforeAll, expect, it } from "vitest"
import { RemoteError } from "../../src/mux/meshSession.ts"
import { requestMeta } from "../../src/sidecar/httpEnvelope.ts"
import { meshToH2App } from "../support/h2AppListen.ts"
import { identity } from "../support/grpcRaw.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { rejection, startClient } from "../support/meshTest.ts"
import { call } from "../support/sidecarHarness.ts"

const LIMIT = 2000
const cleanup = new Cleanup()
let port = 0
let bPort = 0
let sessionErrors: ReadonlyArray<string> = []
/** Requests the app read. */
let read = 0

beforeAll(async () => {
  const server = http2.createServer({ settings: { maxHeaderListSize: LIMIT } })
  server.on("stream", (stream) => {
    stream.on("error", () => {})
    read++
    stream.respond({ ":status": 200 })
    stream.end("ok")
  })
  ;({ port, bPort, sessionErrors } = await meshToH2App(cleanup, server))
  // The first stream of B's session goes before the app's SETTINGS (no limit known yet, RFC 9113 6.5.2: unlimited).
  expect((await call(port)).status).toBe(200)
})
afterAll(() => cleanup.run())

it("an HTTP/1.1 caller's head past the app's limit: 431 headers_too_large from the inbound hop, the app reads nothing, the session lives on", async () => {
  const before = read
  const answer = await call(port, { headers: { host: "catalog", "x-pad": "p".repeat(LIMIT) } })
  const { error, hop } = JSON.parse(answer.body.toString()) as { error: string; hop: string }
  const readBy = read - before
  const after = await call(port)
  expect({ status: answer.status, error, hop, read: readBy, after: after.status, sessionErrors }).toStrictEqual({
    status: 431,
    error: "headers_too_large",
    hop: "inbound",
    read: 0,
    after: 200,
    sessionErrors: []
  })
})

it("a peer's request straight to B: headers_too_large, not processed", async () => {
  const client = startClient(cleanup, bPort)
  const before = read
  const error = await rejection(client.stream("/", (async function* () {})(), { meta: requestMeta("GET", "catalog", [["x-pad", "p".repeat(LIMIT)]]), timeoutMs: 5000 }))
  expect(error).toBeInstanceOf(RemoteError)
  expect({ code: (error as RemoteError).code, processed: (error as RemoteError).processed, read: read - before }).toStrictEqual({ code: "headers_too_large", processed: false, read: 0 })
})

it("a grpc-js caller's metadata past the app's limit: RESOURCE_EXHAUSTED", async () => {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "catalog" })
  cleanup.add(() => client.close())
  const metadata = new grpc.Metadata()
  metadata.set("x-pad", "p".repeat(LIMIT))
  const before = read
  const error = await new Promise<grpc.ServiceError | null>((resolve) =>
    client.makeUnaryRequest("/demo.Echo/Unary", identity, identity, Buffer.from("x"), metadata, { deadline: Date.now() + 5000 }, (e) => resolve(e)))
  expect({ code: error?.code, read: read - before }).toStrictEqual({ code: grpc.status.RESOURCE_EXHAUSTED, read: 0 })
})
