// The pure parts of src/sidecar/grpcStatus.ts and the trailers key of httpEnvelope.ts: grpc-timeout
// read (every unit, malformed values ignored) and written back; which content-types are gRPC; the
// status each mesh failure becomes; trailers read from metadata through the header filter.
import { describe, expect, it } from "vitest"
import { MetaEntries } from "../../src/protocol/metaEntries.ts"
import { GrpcCode, grpcCodeOf, grpcStatusIn, grpcTimeoutMs, grpcTimeoutValue, isGrpc, rpcAttributes } from "../../src/sidecar/grpcStatus.ts"
import { HttpMeta, responseMeta, trailersMeta, trailersOf, withTrailers } from "../../src/sidecar/httpEnvelope.ts"
import { ProxyError } from "../../src/sidecar/proxyError.ts"

describe("grpc-timeout", () => {
  it("reads every unit, at least 1 ms", () => {
    expect(grpcTimeoutMs("2H")).toBe(7_200_000)
    expect(grpcTimeoutMs("3M")).toBe(180_000)
    expect(grpcTimeoutMs("4S")).toBe(4000)
    expect(grpcTimeoutMs("250m")).toBe(250)
    expect(grpcTimeoutMs("1500u")).toBe(2)
    expect(grpcTimeoutMs("10n")).toBe(1)
  })

  it("ignores what is not 1-8 digits and a unit", () => {
    for (const bad of [undefined, "", "5", "123456789m", "-5m", "5 m", "5ms", "5x", "1.5S"]) expect(grpcTimeoutMs(bad)).toBeUndefined()
  })

  it("writes the time left in ms, clamped to 8 digits", () => {
    expect(grpcTimeoutValue(1234.4)).toBe("1234m")
    expect(grpcTimeoutValue(0)).toBe("1m")
    expect(grpcTimeoutValue(1e12)).toBe("99999999m")
  })
})

describe("gRPC requests and statuses", () => {
  it("knows gRPC content-types, not gRPC-Web", () => {
    expect(isGrpc("application/grpc")).toBe(true)
    expect(isGrpc("application/grpc+proto")).toBe(true)
    expect(isGrpc("application/grpc;charset=utf-8")).toBe(true)
    expect(isGrpc("application/grpc-web")).toBe(false)
    expect(isGrpc("application/json")).toBe(false)
    expect(isGrpc(undefined)).toBe(false)
  })

  it("maps mesh failures: UNAVAILABLE to retry, DEADLINE_EXCEEDED, PERMISSION_DENIED, INTERNAL", () => {
    const of = (status: ProxyError["status"], reason: string) => grpcCodeOf(new ProxyError({ status, reason, hop: "outbound", message: "m" }))
    expect(of(503, "no_endpoint")).toBe(GrpcCode.unavailable)
    expect(of(502, "connect_failed")).toBe(GrpcCode.unavailable)
    expect(of(502, "app_unavailable")).toBe(GrpcCode.unavailable)
    expect(of(504, "deadline")).toBe(GrpcCode.deadlineExceeded)
    expect(of(403, "forbidden")).toBe(GrpcCode.permissionDenied)
    expect(of(502, "app_failed")).toBe(GrpcCode.internal)
    expect(of(400, "bad_target")).toBe(GrpcCode.internal)
    expect(of(502, "cancelled")).toBe(GrpcCode.cancelled)
    // Overloaded: refused unrun, UNAVAILABLE (retry elsewhere); run by the app, then taken back for a budget, RESOURCE_EXHAUSTED (no retry).
    const overloaded = (processed: boolean | undefined) => grpcCodeOf(new ProxyError({ status: 503, reason: "overloaded", hop: "inbound", message: "m", ...(processed === undefined ? {} : { processed }) }))
    expect([overloaded(undefined), overloaded(false), overloaded(true)]).toEqual([GrpcCode.unavailable, GrpcCode.unavailable, GrpcCode.resourceExhausted])
  })

  it("names the RPC of a path /package.Service/Method; only the system for any other path", () => {
    const of = (path: string) => {
      const attributes: Record<string, unknown> = {}
      rpcAttributes(attributes, path)
      return attributes
    }
    expect(of("/demo.Inventory/Echo")).toStrictEqual({ "rpc.system": "grpc", "rpc.service": "demo.Inventory", "rpc.method": "Echo" })
    for (const odd of ["/", "/Echo", "//Echo", "/svc/", "/a/b/c", "x/y"]) expect(of(odd)).toStrictEqual({ "rpc.system": "grpc" })
  })

  it("reads grpc-status from trailers: 1 or 2 digits only", () => {
    expect(grpcStatusIn([["x", "1"], ["grpc-status", "14"]])).toBe(14)
    expect(grpcStatusIn([["grpc-status", "abc"]])).toBeUndefined()
    expect(grpcStatusIn([["grpc-status", "123"]])).toBeUndefined()
    expect(grpcStatusIn(undefined)).toBeUndefined()
  })
})

describe("http-trailers", () => {
  it("reads trailers through the header filter; none when the key is absent", () => {
    const meta = responseMeta(200, [["content-type", "application/grpc"]])
    expect(trailersOf(meta)).toBeUndefined()
    meta.set(HttpMeta.trailers, JSON.stringify([["grpc-status", "0"], ["x-custom", "a"], ["transfer-encoding", "chunked"], ["bad name", "x"]]))
    let dropped = 0
    expect(trailersOf(meta, (count) => (dropped += count))).toEqual([["grpc-status", "0"], ["x-custom", "a"]])
    expect(dropped).toBe(1)
  })

  it("the same trailers again (a gRPC app's, call after call) read back the same, their invalid pairs counted each time; other trailers their own", () => {
    const meta = (pairs: ReadonlyArray<unknown>) => new Map([[HttpMeta.trailers, JSON.stringify(pairs)]])
    const ok = [["grpc-status", "0"], ["grpc-message", ""], ["bad name", "x"]]
    let dropped = 0
    const count = (n: number) => (dropped += n)
    const first = trailersOf(meta(ok), count)
    expect(first).toEqual([["grpc-status", "0"], ["grpc-message", ""]])
    expect(trailersOf(meta(ok), count)).toBe(first)
    expect(dropped).toBe(2)
    expect(trailersOf(meta([["grpc-status", "5"], ["grpc-message", "gone"]]))).toEqual([["grpc-status", "5"], ["grpc-message", "gone"]])
    expect(trailersOf(meta(ok))).toEqual([["grpc-status", "0"], ["grpc-message", ""]])
  })

  it("trailers into metadata: the list's JSON, the same list again the same text, another list its own", () => {
    expect(trailersMeta([["grpc-status", "0"]]).get(HttpMeta.trailers)).toBe('[["grpc-status","0"]]')
    expect(withTrailers(new MetaEntries(), [["grpc-status", "0"]]).get(HttpMeta.trailers)).toBe('[["grpc-status","0"]]')
    expect(withTrailers(new MetaEntries(), [["grpc-status", "0"], ["x-c", "1"]]).get(HttpMeta.trailers)).toBe('[["grpc-status","0"],["x-c","1"]]')
    expect(trailersMeta([["grpc-status", "0"]]).get(HttpMeta.trailers)).toBe('[["grpc-status","0"]]')
  })
})
