// RFC 9113 8.2.2 and 8.3's checks on decoded header lists: what a request, a response and trailers
// must and must not carry.
import { describe, expect, it } from "vitest"
import { checkRequestHead, checkResponseHead, checkTrailers } from "../../src/h2/headerCheck.ts"

const GRPC_REQUEST = [":method", "POST", ":scheme", "http", ":path", "/a.B/C", ":authority", "b:80", "content-type", "application/grpc", "te", "trailers"]

describe("header list checks", () => {
  it("passes a gRPC request, response and trailers", () => {
    expect(checkRequestHead(GRPC_REQUEST)).toBeUndefined()
    expect(checkRequestHead([":method", "CONNECT", ":authority", "b:443"])).toBeUndefined()
    // Extended CONNECT (RFC 8441): :scheme and :path as any request, :authority too.
    expect(checkRequestHead([":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", "/chat", ":authority", "b"])).toBeUndefined()
    expect(checkResponseHead([":status", "200", "content-type", "application/grpc"])).toBeUndefined()
    expect(checkTrailers(["grpc-status", "0", "grpc-message", ""])).toBeUndefined()
  })

  it("refuses requests that break 8.3.1 or 8.2.2", () => {
    const cases: ReadonlyArray<readonly [ReadonlyArray<string>, string]> = [
      [[...GRPC_REQUEST, ":path", "/x"], "pseudo-header-after-regular"],
      [[":method", "GET", ":method", "GET", ":scheme", "http", ":path", "/"], "repeated-pseudo-header"],
      [[":status", "200", ":method", "GET"], "unknown-pseudo-header"],
      [[":scheme", "http", ":path", "/"], "missing-method"],
      [[":method", "GET", ":path", "/"], "missing-scheme"],
      [[":method", "GET", ":scheme", "http", ":path", ""], "missing-path"],
      [[":method", "CONNECT", ":authority", "b:443", ":path", "/"], "connect-with-scheme-or-path"],
      [[":method", "CONNECT"], "connect-without-authority"],
      [[":method", "GET", ":scheme", "http", ":path", "/", ":authority", "b", ":protocol", "websocket"], "protocol-without-connect"],
      [[":method", "CONNECT", ":scheme", "https", ":path", "/chat", ":protocol", "websocket"], "protocol-without-connect"],
      [[...GRPC_REQUEST.slice(0, 8), "connection", "close"], "connection-specific-field"],
      [[...GRPC_REQUEST.slice(0, 8), "te", "gzip"], "te-not-trailers"]
    ]
    for (const [fields, reason] of cases) expect([fields, checkRequestHead(fields)?.reason]).toStrictEqual([fields, reason])
  })

  it("refuses responses without one three-digit :status, and trailers with pseudo-headers", () => {
    expect(checkResponseHead(["content-type", "x"])?.reason).toBe("missing-status")
    expect(checkResponseHead([":status", "200", ":status", "200"])?.reason).toBe("bad-response-pseudo-headers")
    expect(checkResponseHead([":status", "20"])?.reason).toBe("bad-status")
    expect(checkResponseHead([":status", "101"])?.reason).toBe("bad-status")
    expect(checkResponseHead([":status", "103"])).toBeUndefined()
    expect(checkResponseHead([":status", "200", "upgrade", "h2c"])?.reason).toBe("connection-specific-field")
    expect(checkTrailers([":status", "200"])?.reason).toBe("pseudo-header-after-regular")
  })
})
