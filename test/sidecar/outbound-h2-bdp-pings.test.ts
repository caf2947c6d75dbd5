// PINGs while A's answer flows (src/h2's PING budget, 1,000 then 200 a second, on A's h2c listener).
// A client that tunes its window (grpc-go's BDP estimator) PINGs once a round trip while DATA comes
// in; on loopback that is thousands a second (node's client so, one PING out at a time: 1,096 in
// 0.5 s of a 400 MiB answer) and it ended the session GOAWAY ping-flood (this failed so). A PING
// after some of A's DATA is not charged; PINGs many to a DATA frame still end the session.
// Real peers: node's HTTP/2 client against makeH2c on 127.0.0.1.
import { afterEach, expect, it } from "vitest"
import type { OutboundCall } from "../../src/sidecar/outboundCall.ts"
import { h2cWithClient } from "../helpers/h2cListener.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

/** An answer of 16 KiB writes that flows until `enough()`. */
const flowing = (enough: () => boolean) => (call: OutboundCall): void => {
  call.writeHead(200, [])
  const chunk = Buffer.alloc(16 * 1024, 1)
  void (async () => {
    while (!enough() && !call.destroyed) if (!call.write(chunk)) await call.drained()
    call.end()
  })()
}

/** A session whose one request gets a flowing answer; `perChunk` runs for each chunk the client reads. Resolves with the GOAWAY's debug data, if one came, once the stream closed. */
const run = async (perChunk: (session: import("node:http2").ClientHttp2Session) => void, enough: () => boolean): Promise<string | undefined> => {
  const { session } = await h2cWithClient(cleanup, flowing(enough))
  let goaway: string | undefined
  session.on("goaway", (_code, _last, debug) => (goaway = debug?.toString() ?? ""))
  const stream = session.request({ ":path": "/big", ":authority": "catalog" })
  stream.on("error", () => {})
  stream.on("data", () => perChunk(session))
  await withTimeout(new Promise<void>((resolve) => stream.on("close", () => resolve())), 30_000, "the answer's end")
  return goaway
}

it("a client that PINGs once a round trip while the answer flows (3,000 PINGs, past the budget) keeps its session", async () => {
  let pings = 0
  let out = false
  const goaway = await run((session) => {
    if (out) return
    out = true
    pings++
    session.ping(() => (out = false))
  }, () => pings >= 3_000)
  expect(goaway).toBeUndefined()
  expect(pings).toBeGreaterThanOrEqual(3_000)
})

it("a client that PINGs 20 times a DATA frame it reads ends its session GOAWAY ping-flood", async () => {
  let pings = 0
  const goaway = await run((session) => {
    for (let i = 0; i < 20; i++) if (session.ping(() => {})) pings++
  }, () => pings >= 20_000)
  expect(goaway).toBe("ping-flood")
})
