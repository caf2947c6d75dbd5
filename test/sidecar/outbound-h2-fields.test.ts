// The answer fields A's h2c listener writes (outboundH2Fields.ts) come from IIP, read as UTF-8:
// a far app's grpc-message or metadata may hold characters past Latin-1, which src/h2's HPACK
// encoder (one byte a character) would cut to their low byte. They go as their UTF-8 bytes, what
// the far app sent; names go in lower case (RFC 9113 §8.2.2). A real HTTP/2 client (node's) reads them.
import * as http2 from "node:http2"
import { afterEach, expect, it } from "vitest"
import { h2cWithClient } from "../helpers/h2cListener.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

it("a grpc-message and metadata past Latin-1 reach an HTTP/2 caller as their UTF-8 bytes; an upper-case name in lower case", async () => {
  const message = "café ✓ 日本 \u{1F600}"
  const { session } = await h2cWithClient(cleanup, (call) => {
    call.writeHead(200, [["content-type", "application/grpc"], ["X-Meta", "naïve ✓"]])
    call.end(Buffer.from([0, 0, 0, 0, 0]), [["grpc-status", "13"], ["grpc-message", message]])
  })
  const stream = session.request({ ":method": "POST", ":path": "/demo.Echo/Echo", ":authority": "catalog", "content-type": "application/grpc", te: "trailers" })
  stream.end(Buffer.from([0, 0, 0, 0, 0]))
  const head = await withTimeout(new Promise<http2.IncomingHttpHeaders>((resolve) => stream.once("response", resolve)), 5000, "the answer's head")
  const trailers = await withTimeout(new Promise<http2.IncomingHttpHeaders>((resolve) => stream.once("trailers", resolve)), 5000, "the trailers")
  stream.resume()
  // node gives field values one character a byte (Latin-1).
  const utf8 = (value: unknown): string => Buffer.from(String(value), "latin1").toString("utf8")
  expect(utf8(head["x-meta"])).toBe("naïve ✓")
  expect(trailers["grpc-status"]).toBe("13")
  expect(utf8(trailers["grpc-message"])).toBe(message)
})
