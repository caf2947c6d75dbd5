// Why a proxied request failed, as the app sees it (PROTOCOL.md §17.3): 502 when the upstream
// failed, 503 when there is no endpoint or it is overloaded or draining, 504 when the deadline
// passed, 403 when the callee's authorization policy refused the caller. Each carries the hop that failed and a short reason, in a JSON body and in the
// `x-iip-mesh-error` header; 429 when a rate limit refused it (with retry-after), so the app can act on it. A reason can come from the far side (a
// typed error's code): it is reduced to token characters and clamped before it reaches a header,
// a log line or a metric label, and writing the answer never throws.
import * as Data from "effect/Data"
import type * as net from "node:net"
import { ConnectFailed, ConnectionClosed, Overloaded, RequestTimeout } from "../mux/errors.ts"
import { Cancelled, RemoteError } from "../mux/meshSession.ts"
import { clampErrorMessage as clampMessage, safeErrorCode as safeReason } from "../protocol/errorText.ts"
import { MeshErrorCode } from "../protocol/mesh.ts"
import { MESH_ERROR_HEADER } from "./headerFilter.ts"
import type { OutboundResponse } from "./outboundCall.ts"
import { nodeHttp } from "../toolkit/nodeHttp.ts"

/** Which sidecar decided: the caller's (`outbound`), the callee's (`inbound`), or the callee app. */
export type Hop = "outbound" | "inbound" | "app"

export class ProxyError extends Data.TaggedError("ProxyError")<{
  /** 400, 403, 408, 413, 414, 429, 431, 502, 503 or 504; any 400-599 for a route's injected fault (routeActions.ts). */
  readonly status: number
  readonly reason: string
  readonly hop: Hop
  readonly message: string
  /** A 429's retry-after, whole seconds (default 1). */
  readonly retryAfterSeconds?: number
  /** The far side said its app ran the request (a typed error's `processed`): told apart where a caller's retry depends on it (grpcStatus.ts). */
  readonly processed?: boolean
}> {}

/**
 * What a caller is told when its deadline passes at the inbound hop: an app whose answer's head came
 * did answer (the call's time ran out while the rest came: a gRPC call's deadline covers its whole
 * answer, and B gathers a plain caller's), and "no answer" would send whoever reads it to a silent app.
 */
/** A request refused while the outbound listener's callers, HTTP/1.1 and h2c, hold more answers unsent than maxQueuedBytes (http1Listener.ts). */
export const heldAnswersRefusal = (heldBytes: number): ProxyError =>
  new ProxyError({ status: 503, reason: "overloaded", hop: "outbound", message: `the outbound sidecar holds ${heldBytes} bytes of answers its callers have not read, past maxQueuedBytes; retry later` })

export const appDeadlineMessage = (ms: number, headCame: boolean, streamed: boolean): string =>
  headCame ? `the call's deadline of ${ms} ms passed while the app's answer ${streamed ? "streamed" : "came in"}` : `no answer from the app within ${ms} ms`

/** Mesh error codes the inbound sidecar uses for its app and for the requests it gives up on. */
export const AppErrorCode = {
  unavailable: "app_unavailable",
  failed: "app_failed",
  /** The caller's streamed body sent nothing for the body idle timeout. */
  bodyIdle: "body_idle_timeout",
  /** A streamed answer the mesh did not take (half a window of) within the body idle timeout (a caller that stopped reading): given up at the inbound hop. */
  answerStalled: "answer_stalled",
  /**
   * The callee's authorization policy refused the caller (src/sidecar/authorization.ts): a final
   * answer, sent as processed so no endpoint of the service is tried again, and no failure of the
   * endpoint that gave it.
   */
  forbidden: "forbidden",
  /**
   * A rate limit of the callee refused the call (src/sidecar/rateLimits.ts): final and processed,
   * as forbidden is; its message ends "retry after N s".
   */
  rateLimited: "rate_limited",
  /**
   * The request's head is past the app's SETTINGS_MAX_HEADER_LIST_SIZE (RFC 9113 6.5.2): B never
   * sends it (the app would reset it). Not processed, yet not retried: every instance would refuse it.
   */
  headersTooLarge: "headers_too_large"
} as const


/** The ProxyError for whatever a forwarded request failed with. */
export const proxyErrorOf = (error: unknown, endpoint: string): ProxyError => {
  if (error instanceof ProxyError) return error
  if (error instanceof RequestTimeout) return new ProxyError({ status: 504, reason: "deadline", hop: "outbound", message: `no answer from ${endpoint} in time` })
  if (error instanceof ConnectFailed) {
    // A refused TLS handshake names why: this side refused the peer (peer_*), or the peer refused this side (tls_refused).
    if (error.tls !== undefined) return new ProxyError({ status: 502, reason: error.tls, hop: error.tls === "tls_refused" ? "inbound" : "outbound", message: error.message })
    return new ProxyError({ status: 502, reason: "connect_failed", hop: "outbound", message: error.message })
  }
  if (error instanceof Overloaded) return new ProxyError({ status: 503, reason: "overloaded", hop: "outbound", message: error.message })
  if (error instanceof ConnectionClosed) return new ProxyError({ status: 502, reason: "connection_lost", hop: "outbound", message: error.message })
  if (error instanceof Cancelled) return new ProxyError({ status: 502, reason: "cancelled", hop: "outbound", message: error.message })
  if (error instanceof RemoteError) {
    const message = clampMessage(error.message)
    switch (error.code) {
      case MeshErrorCode.deadlineExceeded:
        return new ProxyError({ status: 504, reason: "deadline", hop: "inbound", message })
      case MeshErrorCode.overloaded:
      case MeshErrorCode.draining:
        return new ProxyError({ status: 503, reason: error.code, hop: "inbound", message, processed: error.processed })
      case AppErrorCode.unavailable:
      case AppErrorCode.failed:
        return new ProxyError({ status: 502, reason: error.code, hop: "app", message })
      case AppErrorCode.bodyIdle:
        return new ProxyError({ status: 408, reason: error.code, hop: "inbound", message })
      case AppErrorCode.forbidden:
        return new ProxyError({ status: 403, reason: error.code, hop: "inbound", message })
      case AppErrorCode.headersTooLarge:
        return new ProxyError({ status: 431, reason: error.code, hop: "inbound", message })
      case AppErrorCode.rateLimited: {
        const after = /retry after (\d{1,5}) s$/.exec(message)
        return new ProxyError({ status: 429, reason: error.code, hop: "inbound", message, retryAfterSeconds: after === null ? 1 : Number(after[1]) })
      }
      default:
        return new ProxyError({ status: 502, reason: safeReason(error.code), hop: "inbound", message })
    }
  }
  return new ProxyError({ status: 502, reason: "upstream_failed", hop: "outbound", message: error instanceof Error ? error.message : String(error) })
}

/** Answers the app with the error, unless the response has already started (then it is cut off). Never throws. */
export const sendProxyError = (res: OutboundResponse, error: ProxyError): void => {
  // A head given (a streamed answer's) but not yet sent: the error takes its place.
  if (res.headWritten || res.writableEnded || res.destroyed) {
    res.destroy()
    return
  }
  const reason = safeReason(error.reason)
  const body = errorBody(error, reason)
  try {
    const headers: Array<[string, string]> = [
      ["content-type", "application/json"],
      ["content-length", String(Buffer.byteLength(body))],
      [MESH_ERROR_HEADER, `${error.hop}; reason=${reason}`]
    ]
    const retryAfter = retryAfterOf(error)
    if (retryAfter !== undefined) headers.push(["retry-after", retryAfter])
    res.writeHead(error.status, headers)
    res.end(body)
  } catch {
    res.destroy()
  }
}

/** 503 (shed, no endpoint) and 429 (rate limited) say when to come back. */
/** The seconds a 503 (1) or a 429 (its bucket's refill) asks the caller to wait; none for other failures. */
const retryAfterOf = (error: ProxyError): string | undefined =>
  error.status === 503 ? "1" : error.status === 429 ? String(error.retryAfterSeconds ?? 1) : undefined

const retryAfterLine = (error: ProxyError): string => {
  const seconds = retryAfterOf(error)
  return seconds === undefined ? "" : `retry-after: ${seconds}\r\n`
}

const errorBody = (error: ProxyError, reason: string): string => JSON.stringify({ error: reason, message: clampMessage(error.message), hop: error.hop })

/**
 * The same answer written on a raw socket (an upgrade request, whose socket the outbound listener handed over),
 * then the socket ends: nothing the caller sends after it is read as a request. `head`: the request
 * was a HEAD, whose answer has no content (RFC 9110 9.3.2): the head alone, its length still said.
 * Never throws.
 */
export const writeProxyError = (socket: net.Socket, error: ProxyError, head = false): void => {
  const reason = safeReason(error.reason)
  const body = errorBody(error, reason)
  try {
    socket.end(
      `HTTP/1.1 ${error.status} ${nodeHttp.STATUS_CODES[error.status] ?? ""}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
        `${MESH_ERROR_HEADER}: ${error.hop}; reason=${reason}\r\n${retryAfterLine(error)}connection: close\r\n\r\n${head ? "" : body}`
    )
  } catch {
    socket.destroy()
  }
}
