// Pins the HTTP envelope's bytes (PROTOCOL.md §17): the mesh-mode request and answer heads in
// metadata, the hop-by-hop filter, x-forwarded-*, and the reference adapter's `__http_hdr__`
// path, which must equal the capture from the Go reference byte for byte.
import { describe, expect, it } from "vitest"
import { encodeEnvelope } from "../../src/protocol/mesh.ts"
import { encodePacket } from "../../src/protocol/packet.ts"
import { endToEndHeaders, RawListCache } from "../../src/sidecar/headerFilter.ts"
import {
  headersFromPlainQuery,
  headersOf,
  plainRequestPath,
  requestMeta,
  responseMeta,
  withForwarded
} from "../../src/sidecar/httpEnvelope.ts"

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex")

describe("HTTP envelope vectors", () => {
  it("a GET in mesh mode", () => {
    const meta = requestMeta("GET", "catalog", [["accept", "*/*"], ["x-forwarded-for", "127.0.0.1"]])
    expect(hex(encodePacket(1, "/products?x=1", 1, encodeEnvelope(1, 0, 1, meta, Buffer.alloc(0), 65535)))).toBe(
      "012f70726f64756374733f783d3100000000010000006a0100006200000001073a6d6574686f6400034745540a3a617574686f726974790007636174616c6f670c687474702d6865616465727300325b5b22616363657074222c222a2f2a225d2c5b22782d666f727761726465642d666f72222c223132372e302e302e31225d5d"
    )
  })

  it("its answer", () => {
    const meta = responseMeta(200, [["content-type", "text/plain"]])
    expect(hex(encodePacket(5, "/products", 1, encodeEnvelope(2, 0, 1, meta, Buffer.from("ok"), 65535)))).toBe(
      "052f70726f64756374730000000001000000450200003b00000001073a73746174757300033230300c687474702d68656164657273001f5b5b22636f6e74656e742d74797065222c22746578742f706c61696e225d5d6f6b"
    )
    expect(headersOf(meta)).toStrictEqual([["content-type", "text/plain"]])
  })

  it("the __http_hdr__ path equals the Go reference adapter's capture", () => {
    expect(plainRequestPath("/http_header_echo?k=v", [["accept", "*/*"], ["test-header-name", "test header value"], ["user-agent", "t"]])).toBe(
      "/http_header_echo?k=v&__http_hdr__=eyJBY2NlcHQiOlsiKi8qIl0sIlRlc3QtSGVhZGVyLU5hbWUiOlsidGVzdCBoZWFkZXIgdmFsdWUiXSwiVXNlci1BZ2VudCI6WyJ0Il19"
    )
  })

  it("__http_hdr__ keeps base64 padding and reads back", () => {
    const path = plainRequestPath("/echo", [["accept", "*/*"], ["x-multi", "a"], ["x-multi", "b"]])
    const value = path.slice(path.indexOf("=") + 1)
    expect(value.endsWith("=") || value.length % 4 === 0).toBe(true)
    expect(headersFromPlainQuery(value)).toStrictEqual([["accept", "*/*"], ["x-multi", "a"], ["x-multi", "b"]])
  })
})

describe("header rules", () => {
  it("the same raw head filtered again (the last list's kept pairs reused) gives the same headers in an array of its own, its invalid pairs counted each time", () => {
    const raw = ["Host", "a", "Content-Type", "text/plain", "Bad Name", "x", "X-A", "1"]
    const counted: Array<number> = []
    const first = endToEndHeaders(raw, (n) => counted.push(n))
    expect(first).toStrictEqual([["content-type", "text/plain"], ["x-a", "1"]])
    withForwarded(first, "127.0.0.1", "a")
    first.push(["x-added", "1"])
    const again = endToEndHeaders([...raw], (n) => counted.push(n))
    expect(again).toStrictEqual([["content-type", "text/plain"], ["x-a", "1"]])
    expect(counted).toStrictEqual([1, 1])
    expect(endToEndHeaders(["Host", "a", "Content-Type", "text/plain", "Bad Name", "x", "X-A", "2"])).toStrictEqual([["content-type", "text/plain"], ["x-a", "2"]])
    expect(endToEndHeaders(["X-A", "1"])).toStrictEqual([["x-a", "1"]])
    expect(endToEndHeaders([])).toStrictEqual([])
  })

  it("two kinds of raw lists filtered in turn through caches of their own (a gRPC app's heads and trailers) each give their own headers", () => {
    const heads = new RawListCache()
    const trailers = new RawListCache()
    for (let i = 0; i < 3; i++) {
      expect(endToEndHeaders([":status", "200", "content-type", "application/grpc", "Date", "x"], undefined, heads)).toStrictEqual([["content-type", "application/grpc"], ["date", "x"]])
      expect(endToEndHeaders(["grpc-status", "0", "grpc-message", ""], undefined, trailers)).toStrictEqual([["grpc-status", "0"], ["grpc-message", ""]])
    }
    expect(endToEndHeaders([":status", "200", "content-type", "application/grpc", "Date", "y"], undefined, heads)).toStrictEqual([["content-type", "application/grpc"], ["date", "y"]])
  })

  it("a request's or an answer's header list as JSON: the same list again gives the same text, any changed name or value its own", () => {
    const list: Array<[string, string]> = [["accept", "*/*"], ["x-forwarded-for", "127.0.0.1"]]
    const text = (meta: ReadonlyMap<string, string>) => meta.get("http-headers")
    expect(text(requestMeta("GET", "a", list))).toBe('[["accept","*/*"],["x-forwarded-for","127.0.0.1"]]')
    expect(text(requestMeta("GET", "a", list.map(([n, v]) => [n, v] as [string, string])))).toBe('[["accept","*/*"],["x-forwarded-for","127.0.0.1"]]')
    expect(text(requestMeta("GET", "a", [["accept", "*/*"], ["x-forwarded-for", "127.0.0.2"]]))).toBe('[["accept","*/*"],["x-forwarded-for","127.0.0.2"]]')
    expect(text(requestMeta("GET", "a", [["accept", "*/*"], ["x-forwarded-fox", "127.0.0.2"]]))).toBe('[["accept","*/*"],["x-forwarded-fox","127.0.0.2"]]')
    expect(text(requestMeta("GET", "a", [["accept", "*/*"]]))).toBe('[["accept","*/*"]]')
    expect(text(requestMeta("GET", "a", []))).toBe("[]")
    expect(text(responseMeta(200, [["content-type", "text/plain"]]))).toBe('[["content-type","text/plain"]]')
    expect(text(responseMeta(200, [["content-type", "text/html"]]))).toBe('[["content-type","text/html"]]')
  })

  it("a header list decoded again (the same text: the last one's filtered pairs reused) gives the same headers, in an array of its own, its invalid pairs counted each time", () => {
    const meta = new Map([["http-headers", JSON.stringify([["content-type", "text/plain"], ["Bad Name", "x"], ["x-a", "1"], ["connection", "x-a"], ["x-b", "2"]])]])
    const counted: Array<number> = []
    const first = headersOf(meta, (n) => counted.push(n))
    expect(first).toStrictEqual([["content-type", "text/plain"], ["x-b", "2"]])
    // A caller may change its array (x-forwarded-*, trace headers): the next caller's is not changed.
    first.push(["x-added", "1"])
    first.length = 1
    const again = headersOf(new Map(meta), (n) => counted.push(n))
    expect(again).toStrictEqual([["content-type", "text/plain"], ["x-b", "2"]])
    expect(again).not.toBe(first)
    expect(counted).toStrictEqual([1, 1])
    // Another list, then the first again: each as its own text says.
    expect(headersOf(new Map([["http-headers", JSON.stringify([["accept", "*/*"]])]]))).toStrictEqual([["accept", "*/*"]])
    expect(headersOf(meta)).toStrictEqual([["content-type", "text/plain"], ["x-b", "2"]])
    expect(headersOf(new Map())).toStrictEqual([])
    expect(headersOf(new Map([["http-headers", "not json"]]))).toStrictEqual([])
  })

  it("drops hop-by-hop headers and those named in Connection, keeps the rest in order", () => {
    const raw = ["Host", "catalog", "Connection", "keep-alive, X-Drop", "X-Drop", "1", "Keep-Alive", "timeout=5", "TE", "trailers",
      "Transfer-Encoding", "chunked", "Upgrade", "h2c", "Proxy-Authorization", "secret", "Accept", "*/*", "Set-Cookie", "a", "Set-Cookie", "b"]
    expect(endToEndHeaders(raw)).toStrictEqual([["accept", "*/*"], ["set-cookie", "a"], ["set-cookie", "b"]])
  })

  it("adds x-forwarded-* and appends to an existing x-forwarded-for", () => {
    expect(withForwarded([["x-forwarded-for", "10.0.0.1"], ["accept", "*/*"]], "127.0.0.1", "catalog")).toStrictEqual([
      ["accept", "*/*"],
      ["x-forwarded-for", "10.0.0.1, 127.0.0.1"],
      ["x-forwarded-proto", "http"],
      ["x-forwarded-host", "catalog"]
    ])
  })
})
