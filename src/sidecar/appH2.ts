// The inbound side's leg to an app that speaks cleartext HTTP/2 (`--app-protocol h2c`, gRPC apps):
// one pooled session per app, made again when it closes; each mesh request is one stream on it,
// under the session's own flow control. The answer is held whole, so its trailers (`grpc-status`,
// `grpc-message`, custom ones) travel in the answer's metadata after the body was read
// (PROTOCOL.md §17.5); an answer past `maxAnswerBytes` fails as app_failed. The time left before
// the caller's deadline reaches a gRPC app as `grpc-timeout`.
import * as http2 from "node:http2"
import type { HandlerValue } from "../iip/dispatch.ts"
import { failure, reply } from "../iip/server.ts"
import { IncomingStream } from "../mux/streams.ts"
import { MeshErrorCode } from "../protocol/mesh.ts"
import { grpcTimeoutValue, isGrpc } from "./grpcStatus.ts"
import { endToEndPairs, type OnInvalidHeader } from "./headerFilter.ts"
import { HttpMeta, responseMeta } from "./httpEnvelope.ts"
import type { Failure, InboundObservation } from "./observe.ts"
import { AppErrorCode } from "./proxyError.ts"

/** Like the HTTP/1.1 pool's idle keep-alive sockets, an unused session does not stay open for ever. */
const SESSION_IDLE_MS = 60_000
/** At close, streams the app left open (it reset them without an error code, say) wait no longer than this. */
const CLOSE_GRACE_MS = 1000

export interface AppH2Request {
  readonly method: string
  readonly path: string
  readonly authority: string
  /** Filtered (headerFilter.ts) plus the hop's own. */
  readonly headers: ReadonlyArray<readonly [string, string]>
  readonly body: Buffer | IncomingStream
  /** Time left before the caller's deadline, ms. */
  readonly timeLeftMs: number
}

/** HTTP/1.1-only headers an HTTP/2 request must not carry (RFC 9113 §8.2.2); `te` passes only as `trailers`. */
const NOT_IN_H2 = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host", "te"])

/** Pairs as node:http2 takes them: an object, repeated names as lists; pseudo-headers never come from pairs. */
const fieldsOf = (pairs: ReadonlyArray<readonly [string, string]>): Record<string, string | Array<string>> => {
  const fields: Record<string, string | Array<string>> = {}
  for (const [name, value] of pairs) {
    if (name.charCodeAt(0) === 0x3a || NOT_IN_H2.has(name)) continue
    const prior = fields[name]
    fields[name] = prior === undefined ? value : Array.isArray(prior) ? [...prior, value] : [prior, value]
  }
  return fields
}

/** node's HTTP/2 header object as pairs, pseudo-headers left out, lists spread. */
const pairsOf = (headers: http2.IncomingHttpHeaders): Array<[string, string]> => {
  const pairs: Array<[string, string]> = []
  for (const [name, value] of Object.entries(headers)) {
    if (name.charCodeAt(0) === 0x3a || value === undefined) continue
    if (Array.isArray(value)) for (const v of value) pairs.push([name, v])
    else pairs.push([name, String(value)])
  }
  return pairs
}

export class AppH2Leg {
  private session: http2.ClientHttp2Session | undefined = undefined
  readonly address: string
  private readonly maxAnswerBytes: number
  private readonly onInvalid: OnInvalidHeader | undefined

  constructor(host: string, port: number, limits: { readonly maxAnswerBytes: number }, onInvalid: OnInvalidHeader | undefined) {
    this.address = `${host}:${port}`
    this.maxAnswerBytes = limits.maxAnswerBytes
    this.onInvalid = onInvalid
  }

  /** The pooled session, connecting again once the last one closed or failed. */
  private current(): http2.ClientHttp2Session {
    const open = this.session
    if (open !== undefined && !open.closed && !open.destroyed) return open
    const session = http2.connect(`http://${this.address}`)
    // Idle this long: closed (in-flight streams finish), made again on the next request.
    session.setTimeout(SESSION_IDLE_MS, () => session.close())
    // Its streams fail with the error; the session is made again on the next request.
    session.on("error", () => {})
    session.on("close", () => {
      if (this.session === session) this.session = undefined
    })
    session.on("goaway", () => {
      if (this.session === session) this.session = undefined
    })
    this.session = session
    return session
  }

  /** One request: settles exactly once; `cancel` (the caller gone, the deadline passed) resets the stream. */
  forward(request: AppH2Request, observation: InboundObservation, signal: { readonly aborted: boolean; addEventListener(type: "abort", f: () => void): void }): Promise<HandlerValue> {
    return new Promise<HandlerValue>((resolve) => {
      let done = false
      let timer: NodeJS.Timeout | undefined
      const end = (status: number, reason: Failure | undefined, value: HandlerValue) => {
        if (done) return
        done = true
        clearTimeout(timer)
        observation.end(this.address, status, reason)
        resolve(value)
      }
      const headers = fieldsOf(request.headers)
      if (isGrpc(typeof headers["content-type"] === "string" ? headers["content-type"] : undefined)) {
        headers.te = "trailers"
        headers["grpc-timeout"] = grpcTimeoutValue(request.timeLeftMs)
      }
      const withBody = request.body instanceof IncomingStream || request.body.length > 0
      let stream: http2.ClientHttp2Stream
      try {
        stream = this.current().request(
          { ...headers, ":method": request.method, ":path": request.path, ":authority": request.authority, ":scheme": "http" },
          { endStream: !withBody }
        )
      } catch (error) {
        return end(502, { hop: "app", reason: AppErrorCode.failed }, failure(AppErrorCode.failed, `app at ${this.address}: ${(error as Error).message}`, true))
      }
      timer = setTimeout(() => {
        stream.close(http2.constants.NGHTTP2_CANCEL)
        end(504, { hop: "inbound", reason: MeshErrorCode.deadlineExceeded }, failure(MeshErrorCode.deadlineExceeded, `no answer from the app within ${request.timeLeftMs} ms`, true))
      }, request.timeLeftMs)
      const cancel = () => {
        stream.close(http2.constants.NGHTTP2_CANCEL)
        end(502, { hop: "inbound", reason: MeshErrorCode.cancelled }, failure(MeshErrorCode.cancelled, "request aborted", true))
      }
      if (signal.aborted) return cancel()
      signal.addEventListener("abort", cancel)
      let status = 0
      let answerHeaders: Array<[string, string]> = []
      const parts: Array<Buffer> = []
      let bytes = 0
      let trailers: Array<[string, string]> | undefined
      stream.on("response", (head) => {
        status = Number(head[":status"])
        answerHeaders = endToEndPairs(pairsOf(head), this.onInvalid)
      })
      stream.on("data", (chunk: Buffer) => {
        if (done) return
        bytes += chunk.length
        if (bytes > this.maxAnswerBytes) {
          stream.close(http2.constants.NGHTTP2_CANCEL)
          return end(502, { hop: "app", reason: AppErrorCode.failed }, failure(AppErrorCode.failed, `app answer larger than ${this.maxAnswerBytes} bytes`, true))
        }
        parts.push(chunk)
      })
      stream.on("trailers", (fields) => {
        trailers = endToEndPairs(pairsOf(fields), this.onInvalid)
      })
      stream.on("end", () => {
        if (status === 0) {
          stream.close(http2.constants.NGHTTP2_CANCEL)
          return end(502, { hop: "app", reason: AppErrorCode.failed }, failure(AppErrorCode.failed, `app at ${this.address} closed the stream without an answer`, true))
        }
        if (status < 200 || status > 599) {
          return end(502, { hop: "app", reason: AppErrorCode.failed }, failure(AppErrorCode.failed, `app at ${this.address} answered with status ${status}`, true))
        }
        // A trailers-only answer (a gRPC error): its status and metadata go on as trailers, after an empty body.
        if (trailers === undefined && bytes === 0 && answerHeaders.some(([name]) => name === "grpc-status")) {
          trailers = answerHeaders.filter(([name]) => name !== "content-type")
          answerHeaders = answerHeaders.filter(([name]) => name === "content-type")
        }
        const body = Buffer.concat(parts, bytes)
        observation.responseBytes(body.length)
        const meta = responseMeta(status, answerHeaders)
        if (trailers !== undefined) meta.set(HttpMeta.trailers, JSON.stringify(trailers))
        end(status, undefined, reply(body, meta))
      })
      stream.on("error", (error: NodeJS.ErrnoException) => {
        // Refused before the app saw the request: not processed, another instance may take it.
        const cause = (error as { readonly cause?: NodeJS.ErrnoException }).cause
        const refused = status === 0 && (error.code === "ECONNREFUSED" || cause?.code === "ECONNREFUSED")
        const code = refused ? AppErrorCode.unavailable : AppErrorCode.failed
        end(502, { hop: "app", reason: code }, failure(code, `app at ${this.address}: ${error.code ?? error.message}`, !refused))
      })
      const body = request.body
      // Reset without an error code (or closed before its end): settled here, whatever happened.
      stream.on("close", () => {
        if (!done) end(502, { hop: "app", reason: AppErrorCode.failed }, failure(AppErrorCode.failed, `app at ${this.address} closed the stream without an answer`, true))
      })
      if (!withBody) return
      if (!(body instanceof IncomingStream)) {
        observation.requestBytes(body.length)
        stream.end(body)
        return
      }
      void pump(body, stream, observation).catch((error: unknown) => {
        stream.close(http2.constants.NGHTTP2_CANCEL)
        end(502, { hop: "inbound", reason: MeshErrorCode.cancelled }, failure(MeshErrorCode.cancelled, `request body broke off: ${String(error)}`, true))
      })
    })
  }

  close(): Promise<void> {
    const session = this.session
    this.session = undefined
    if (session === undefined || session.destroyed) return Promise.resolve()
    // The inbound side has drained: streams still open get a short grace, then the session ends.
    return new Promise((resolve) => {
      const timer = setTimeout(() => session.destroy(), CLOSE_GRACE_MS)
      session.close(() => {
        clearTimeout(timer)
        resolve()
      })
    })
  }
}

/** The peer's streamed body written to the app's stream, waiting on its flow control. */
const pump = async (body: IncomingStream, stream: http2.ClientHttp2Stream, observation: InboundObservation): Promise<void> => {
  for await (const chunk of body) {
    observation.requestBytes(chunk.length)
    if (!stream.write(chunk)) await new Promise<void>((resolve) => {
      stream.once("drain", resolve)
      stream.once("close", resolve)
    })
    if (stream.destroyed) return
  }
  stream.end()
}
