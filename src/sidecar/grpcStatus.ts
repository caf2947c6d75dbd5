// gRPC at the sidecar's edges (PROTOCOL.md §17.5): which requests are gRPC calls, their
// `grpc-timeout` read as the mesh deadline and written back for the far app, and a mesh failure
// written to a gRPC caller the way it understands one: a trailers-only answer (HTTP 200,
// `grpc-status`, `grpc-message`) instead of an HTTP error body, the `x-iip-mesh-error` hop kept.
// Pure apart from writing the answer, which never throws.
import { clampErrorMessage, safeErrorCode } from "../protocol/errorText.ts"
import { MESH_ERROR_HEADER } from "./headerFilter.ts"
import type { OutboundResponse } from "./outboundCall.ts"
import type { ProxyError } from "./proxyError.ts"

/** gRPC status codes the mesh answers with (grpc/doc/statuscodes.md). */
export const GrpcCode = { cancelled: 1, internal: 13, unavailable: 14, deadlineExceeded: 4, permissionDenied: 7, resourceExhausted: 8 } as const

/** A gRPC call: its content-type is `application/grpc` or `application/grpc+...`. */
export const isGrpc = (contentType: string | undefined): boolean =>
  contentType !== undefined && contentType.startsWith("application/grpc") && (contentType.length === 16 || contentType[16] === "+" || contentType[16] === ";")

const UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 }

/** `grpc-timeout` (1-8 digits and a unit) in ms, at least 1; undefined when absent or malformed. */
export const grpcTimeoutMs = (value: string | undefined): number | undefined => {
  if (value === undefined || !/^\d{1,8}[HMSmun]$/.test(value)) return undefined
  return Math.max(1, Math.ceil(Number(value.slice(0, -1)) * UNIT_MS[value.slice(-1)]!))
}

/** The time left, as the far app reads it in `grpc-timeout` (ms, 8 digits at most). */
export const grpcTimeoutValue = (ms: number): string => `${Math.min(99_999_999, Math.max(1, Math.round(ms)))}m`

/** The longest url.path a span keeps, and path its RPC attributes come from: IIP's path limit (an app's longer one is answered 414 after its span began). */
export const MAX_PATH_ATTRIBUTE = 2048

/**
 * The OpenTelemetry RPC attributes of a gRPC call's path `/package.Service/Method`: `rpc.system`,
 * `rpc.service`, `rpc.method`; only the system when the path has no such form, or is longer than
 * MAX_PATH_ATTRIBUTE (an app's head may hold 16 KiB of it, a peer's 64 KiB; the span keeps its attributes bounded).
 */
export const rpcAttributes = (attributes: Record<string, unknown>, path: string): void => {
  attributes["rpc.system"] = "grpc"
  const q = path.indexOf("?")
  const bare = q === -1 ? path : path.slice(0, q)
  const slash = bare.indexOf("/", 1)
  if (bare.length > MAX_PATH_ATTRIBUTE || bare.charCodeAt(0) !== 0x2f || slash <= 1 || slash === bare.length - 1 || bare.indexOf("/", slash + 1) !== -1) return
  attributes["rpc.service"] = bare.slice(1, slash)
  attributes["rpc.method"] = bare.slice(slash + 1)
}

/** The `grpc-status` among header pairs (1 or 2 digits), or undefined. */
export const grpcStatusIn = (pairs: ReadonlyArray<readonly [string, string]> | undefined): number | undefined => {
  if (pairs === undefined) return undefined
  // Read on every call at both sidecars: an index loop and character codes, no iterator, no match object.
  for (let i = 0; i < pairs.length; i++) {
    const pair = pairs[i]!
    if (pair[0] !== "grpc-status") continue
    const value = pair[1]
    const first = value.charCodeAt(0) - 48
    if (value.length === 1 && first >= 0 && first <= 9) return first
    const second = value.charCodeAt(1) - 48
    if (value.length === 2 && first >= 0 && first <= 9 && second >= 0 && second <= 9) return first * 10 + second
  }
  return undefined
}

/** Whether header pairs name a gRPC content type (isGrpc on the first `content-type`). */
export const isGrpcPairs = (pairs: ReadonlyArray<readonly [string, string]>): boolean => {
  for (let i = 0; i < pairs.length; i++) if (pairs[i]![0] === "content-type") return isGrpc(pairs[i]![1])
  return false
}

/**
 * The gRPC status for a mesh failure: the caller may retry UNAVAILABLE; a deadline is
 * DEADLINE_EXCEEDED. An answer the callee's app ran, then taken back at its sidecar for a budget
 * (overloaded, processed: its held answers' bytes, its peer's share of the app's streams) is
 * RESOURCE_EXHAUSTED, which grpc-js and retry policies do not retry; refused unrun, UNAVAILABLE.
 */
export const grpcCodeOf = (error: ProxyError): number => {
  if (error.processed === true && error.reason === "overloaded") return GrpcCode.resourceExhausted
  switch (error.status) {
    case 504:
    case 408:
      return GrpcCode.deadlineExceeded
    case 403:
      return GrpcCode.permissionDenied
    case 413:
    case 429:
    case 431:
      return GrpcCode.resourceExhausted
    case 400:
    case 414:
      return GrpcCode.internal
    default:
      if (error.reason === "cancelled") return GrpcCode.cancelled
      return error.reason === "app_failed" || error.reason === "bad_response" ? GrpcCode.internal : GrpcCode.unavailable
  }
}

/** `grpc-message` is percent-encoded outside printable ASCII (and `%` itself). */
const grpcMessage = (text: string): string =>
  Array.from(Buffer.from(text, "utf8"), (byte) => (byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`)).join("")

/**
 * Answers a gRPC caller with the failure as a trailers-only response; once the answer has started
 * (a streamed answer broke off, its deadline passed), as the trailers that end it. Never throws.
 * Returns the status sent.
 */
export const sendGrpcError = (res: OutboundResponse, error: ProxyError): number => {
  const code = grpcCodeOf(error)
  if (res.destroyed || res.writableEnded) return code
  const status: Array<[string, string]> = [
    ["grpc-status", String(code)],
    ["grpc-message", grpcMessage(clampErrorMessage(error.message))],
    [MESH_ERROR_HEADER, `${error.hop}; reason=${safeErrorCode(error.reason)}`]
  ]
  try {
    // Once the answer has started, the status is its trailers. Before: a head and an end with
    // nothing between, on HTTP/2 one HEADERS frame that ends the stream (outboundH2Call.ts), which is
    // what a gRPC client reads as trailers-only. Past the deadline, trailers behind answer bytes the
    // caller has not made room for would keep the call (and them) as long as the caller does not
    // read: endPastDeadline resets it instead. Other failures wait to be read (a caller that reads
    // on learns why: h2c-held-budget's taken-back answers).
    if (!res.headersSent) {
      res.writeHead(200, [["content-type", "application/grpc"], ...status])
      res.end()
    } else if (code === GrpcCode.deadlineExceeded && res.endPastDeadline !== undefined) res.endPastDeadline(status)
    else res.end(undefined, status)
  } catch {
    res.destroy()
  }
  return code
}
