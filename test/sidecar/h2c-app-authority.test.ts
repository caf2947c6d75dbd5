// What B sends an h2c app (appH2*.ts) must be a request the app's HTTP/2 server takes: nghttp2
// (node's, grpc-js's) resets a stream whose :authority or :path breaks RFC 9113's rules
// (PROTOCOL_ERROR) and counts each such stream against the client, and node's server ends the
// client's whole session past 1,000 of them (maxSessionInvalidFrames: ERR_HTTP2_TOO_MANY_INVALID_FRAMES,
// GOAWAY INTERNAL_ERROR): every stream on it fails, other callers' too. A Host that HTTP/1.1 takes
// ("catalog:80@x": userinfo, which :authority may not carry, §8.3.1; a space) routes at A by its host
// and went to the app as :authority: measured before, 1,100 such requests ended B's session to the
// app. A now refuses such a Host itself (400 bad_target: no authority, protocol/authority.ts); a
// peer may still send one to B, which refuses it before the app (bad_request, not processed), and
// the app's session lives on.
// Real parts: an HTTP/1.1 caller -> A -> B -> a node:http2 app; a raw mesh peer -> B -> the app.
import * as http2 from "node:http2"
import { afterAll, beforeAll, expect, it } from "vitest"
import { RemoteError } from "../../src/mux/meshSession.ts"
import { requestMeta } from "../../src/sidecar/httpEnvelope.ts"
import { meshToH2App } from "../support/h2AppListen.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { rejection, startClient } from "../support/meshTest.ts"
import { call } from "../support/sidecarHarness.ts"

const cleanup = new Cleanup()
let port = 0
/** B's inbound port, for a peer's request straight to it. */
let bPort = 0
/** The app's sessions (B's) its server ended for an error. */
let sessionErrors: ReadonlyArray<string> = []
/** Requests the app read, by :authority. */
const authorities: Array<string> = []

beforeAll(async () => {
  const server = http2.createServer()
  server.on("stream", (stream, headers) => {
    stream.on("error", () => {})
    authorities.push(String(headers[":authority"]))
    stream.respond({ ":status": 200 })
    stream.end("ok")
  })
  ;({ port, bPort, sessionErrors } = await meshToH2App(cleanup, server))
})
afterAll(() => cleanup.run())

const HOSTS = ["catalog:80@x", "catalog: 80", "catalog:80\"", "catalog:\u00e98"]

it.each(HOSTS)("a Host HTTP/1.1 takes but :authority may not carry (%j): refused bad_target at A, the app reads nothing", async (host) => {
  const before = authorities.length
  const answer = await call(port, { headers: { host } })
  const { error, hop } = JSON.parse(answer.body.toString()) as { error: string; hop: string }
  expect({ status: answer.status, error, hop, read: authorities.length - before }).toStrictEqual({ status: 400, error: "bad_target", hop: "outbound", read: 0 })
})

it.each(HOSTS)("a peer's request whose authority is %j: refused bad_request at B, not processed, the app reads nothing", async (host) => {
  const client = startClient(cleanup, bPort)
  const before = authorities.length
  const error = await rejection(client.stream("/", (async function* () {})(), { meta: requestMeta("GET", host, []), timeoutMs: 5000 }))
  expect(error).toBeInstanceOf(RemoteError)
  expect({ code: (error as RemoteError).code, processed: (error as RemoteError).processed, read: authorities.length - before }).toStrictEqual({ code: "bad_request", processed: false, read: 0 })
})

it("1,100 peer requests whose authority is no :authority do not end B's session to the app: a request after them is answered", { timeout: 30_000 }, async () => {
  const client = startClient(cleanup, bPort)
  const codes = new Map<string, number>()
  for (let sent = 0; sent < 1100; sent += 100) {
    const errors = await Promise.all(Array.from({ length: 100 }, () => rejection(client.stream("/", (async function* () {})(), { meta: requestMeta("GET", "catalog:80@x", []), timeoutMs: 5000 }))))
    for (const error of errors) {
      const code = error instanceof RemoteError ? error.code : String(error)
      codes.set(code, (codes.get(code) ?? 0) + 1)
    }
  }
  const after = await call(port)
  expect({ codes: [...codes], after: after.status, body: after.body.toString(), sessionErrors }).toStrictEqual({ codes: [["bad_request", 1100]], after: 200, body: "ok", sessionErrors: [] })
})

// An empty :authority is malformed too (nghttp2 resets it). A refuses a request naming no service; a peer may send one to B.
it("a peer's request with an empty authority is refused bad_request at B, not processed, the app reads nothing", async () => {
  const client = startClient(cleanup, bPort)
  const before = authorities.length
  const error = await rejection(client.stream("/empty", (async function* () {})(), { meta: requestMeta("GET", "", []), timeoutMs: 5000 }))
  expect(error).toBeInstanceOf(RemoteError)
  expect({ code: (error as RemoteError).code, processed: (error as RemoteError).processed, read: authorities.length - before }).toStrictEqual({ code: "bad_request", processed: false, read: 0 })
})
