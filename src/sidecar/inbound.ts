// Inbound: a request from another sidecar (or a plain IIP caller), forwarded to the local app
// over keep-alive HTTP, the app's answer streamed back on the same channel. A cancel or a passed
// deadline aborts the request to the app. An app that cannot be reached is `app_unavailable`
// (not processed: safe to retry on another instance). The time left before the caller's deadline
// reaches the app as an `iip-timeout` header (ms), for it to pass on to its own calls.
//
// The peer's head is checked before the app sees a byte of it: a method and path that cannot form a
// request line are `bad_request`; headers go through headerFilter.ts (end-to-end ones only, valid
// ones only), and the framing is ours, from the body really sent: its length, or for a streamed
// body the length the peer declared (counted as it streams: a body that does not match is cut
// off, never written past it), else chunked. The app's answer goes back through the same filter,
// with the length node read for a streamed one; an answer status outside 200-599 is `app_failed`.
//
// No request holds an app socket for ever: one that carries no deadline (and every push) gets the
// default one; a streamed body that sends nothing for the body idle timeout is given up
// (`body_idle_timeout`); a push's answer is read and dropped, so its socket goes back to the pool.
import * as http from "node:http"
import type { HandlerValue } from "../iip/dispatch.ts"
import { failure, type IncomingRequest, reply } from "../iip/server.ts"
import { StreamFailed } from "../mux/streams.ts"
import { MeshErrorCode } from "../protocol/mesh.ts"
import { describedLength, endToEndHeaders, endToEndPairs, isFieldValue, isToken, type OnInvalidHeader, TIMEOUT_HEADER } from "./headerFilter.ts"
import { headersFromPlainQuery, headersOf, HttpMeta, responseMeta, sentValue, toOutgoing } from "./httpEnvelope.ts"
import { InboundObservation, type SidecarTelemetry } from "./observe.ts"
import { AppErrorCode } from "./proxyError.ts"

const WHOLE_BODY_LIMIT = 64 * 1024

/** Methods whose empty body goes without a content-length (as node sends them). */
const NO_BODY_METHODS = new Set(["GET", "HEAD", "DELETE", "OPTIONS", "TRACE"])

const HEADER_PARAM = "__http_hdr__"

export interface InboundOptions {
  /** This sidecar's service, for its spans and metrics. */
  readonly service: string
  readonly appHost: string
  readonly appPort: number
  readonly telemetry: SidecarTelemetry
  /** Sockets to the app at most (keep-alive); requests past it wait for one. */
  readonly appPoolSize: number
  /** A streamed request body that sends nothing for this long is given up. */
  readonly bodyIdleTimeoutMs: number
  /** The deadline of a request that carries none, and of pushes. */
  readonly defaultTimeoutMs: number
  /** Told how many header pairs of a message were dropped as invalid. */
  readonly onInvalidHeaders?: OnInvalidHeader
}

interface AppRequestHead {
  readonly method: string
  /** Path and query as the caller sent them (never percent-decoded). */
  readonly path: string
  readonly headers: Array<[string, string]>
  readonly body: Buffer
}

/**
 * A request without HTTP metadata came from a plain IIP caller using the reference adapter's
 * convention. The app gets the path and query as they were on the wire, `__http_hdr__` taken out.
 */
const plainRequest = (request: IncomingRequest, onInvalid: OnInvalidHeader | undefined): AppRequestHead => {
  const headerArg = request.query.get(HEADER_PARAM)?.[0]
  const raw = request.rawPath
  const q = raw.indexOf("?")
  let path = q === -1 ? raw : raw.slice(0, q)
  if (q !== -1) {
    let query = ""
    for (const part of raw.slice(q + 1).split("&")) {
      if (part === HEADER_PARAM || part.startsWith(`${HEADER_PARAM}=`)) continue
      query = query === "" ? part : `${query}&${part}`
    }
    if (query !== "") path = `${path}?${query}`
  }
  const isEmpty = request.data.length === 2 && request.data[0] === 0x7b && request.data[1] === 0x7d
  return {
    method: isEmpty ? "GET" : "POST",
    path,
    headers: headerArg === undefined ? [] : endToEndPairs(headersFromPlainQuery(headerArg), onInvalid),
    body: isEmpty ? Buffer.alloc(0) : request.data
  }
}

/** A path node can write in a request line as it is: origin form (or `*`), visible ASCII only. */
const isRequestTarget = (path: string): boolean => {
  if (path === "*") return true
  if (path.charCodeAt(0) !== 0x2f) return false
  for (let i = 1; i < path.length; i++) {
    const c = path.charCodeAt(i)
    if (c <= 0x20 || c >= 0x7f) return false
  }
  return true
}

/** Why the head cannot go to the app as it is, or undefined. */
const badHead = (head: AppRequestHead, authority: string | undefined): string | undefined => {
  if (!isToken(head.method)) return "the method is not an HTTP token"
  if (!isRequestTarget(head.path)) return "the path is not an origin-form request target"
  if (authority !== undefined && !isFieldValue(authority)) return "the authority holds characters a Host header cannot"
  return undefined
}

/** Gathers a (small) body with events rather than an async iterator: this runs per request. */
const collect = (source: http.IncomingMessage): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    const parts: Array<Buffer> = []
    source.on("data", (chunk: Buffer) => parts.push(chunk))
    source.once("end", () => resolve(parts.length === 1 ? parts[0]! : Buffer.concat(parts)))
    source.once("error", reject)
    source.once("close", () => source.complete || reject(new Error("the answer broke off")))
  })

/** Passes a streamed answer on, telling `count` the size of each chunk. */
async function* counted(source: AsyncIterable<Buffer>, count: (bytes: number) => void): AsyncIterable<Buffer> {
  for await (const chunk of source) {
    count(chunk.length)
    yield chunk
  }
}

/** Resolves when `request` can take more (drain) or never will (close). */
const writable = (request: http.ClientRequest): Promise<void> =>
  new Promise((resolve) => {
    const done = () => {
      request.off("drain", done)
      request.off("close", done)
      resolve()
    }
    request.on("drain", done)
    request.on("close", done)
  })

export const makeInboundHandler = (options: InboundOptions) => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: options.appPoolSize })
  const appAddress = `${options.appHost}:${options.appPort}`
  const onInvalid = options.onInvalidHeaders
  return (request: IncomingRequest): Promise<HandlerValue> =>
    new Promise<HandlerValue>((resolve) => {
      const plain = !request.meta.has(HttpMeta.method)
      const head: AppRequestHead = plain
        ? plainRequest(request, onInvalid)
        : { method: request.meta.get(HttpMeta.method)!, path: request.rawPath, headers: headersOf(request.meta, onInvalid), body: request.data }
      const authority = request.meta.get(HttpMeta.authority)
      const refused = badHead(head, authority)
      if (refused !== undefined) return resolve(failure(MeshErrorCode.badRequest, refused, false))
      const { deadline, oneway, stream } = request.context
      const timeLeft = deadline > 0 ? Math.max(1, deadline - Date.now()) : 0
      const observation = new InboundObservation(options.telemetry, options.service, head.method, head.path, head.headers, request.context.remoteAddress)
      const headers = toOutgoing(head.headers)
      if (authority !== undefined) headers.host = authority
      if (timeLeft > 0) headers[TIMEOUT_HEADER] = String(timeLeft)
      const declared = stream === undefined ? undefined : describedLength(sentValue(request.meta, "content-length"))
      if (declared !== undefined) headers["content-length"] = declared
      else if (stream !== undefined) headers["transfer-encoding"] = "chunked"
      else if (head.body.length > 0 || !NO_BODY_METHODS.has(head.method)) headers["content-length"] = String(head.body.length)
      observation.callApp(options.appHost, options.appPort, headers)

      let settled = false
      const settle = (value: HandlerValue) => {
        if (settled) return
        settled = true
        resolve(value)
      }
      let appRequest: http.ClientRequest
      try {
        appRequest = http.request({ host: options.appHost, port: options.appPort, method: head.method, path: head.path, headers, agent, signal: request.signal })
      } catch (error) {
        observation.end(appAddress, 400, { hop: "inbound", reason: MeshErrorCode.badRequest })
        return settle(failure(MeshErrorCode.badRequest, `cannot form the request to the app: ${error instanceof Error ? error.message : String(error)}`, false))
      }
      // Our own limits: the exchange with the app ends, the caller gets a typed error.
      let timer: NodeJS.Timeout | undefined
      const giveUp = (code: string, status: number, message: string) => {
        clearTimeout(timer)
        observation.end(appAddress, status, { hop: "inbound", reason: code })
        settle(failure(code, message, true))
        stream?.fail(new StreamFailed({ message }))
        appRequest.destroy()
      }
      // The mesh session enforces a deadline it was given, except for a push; the rest get ours.
      if (deadline === 0 || oneway) {
        const ms = deadline === 0 ? options.defaultTimeoutMs : timeLeft
        timer = setTimeout(() => giveUp(MeshErrorCode.deadlineExceeded, 504, `no answer from the app within ${ms} ms`), ms)
      }
      appRequest.on("error", (error: NodeJS.ErrnoException) => {
        clearTimeout(timer)
        const refused = error.code === "ECONNREFUSED" || error.code === "ENOTFOUND"
        const code = refused ? AppErrorCode.unavailable : AppErrorCode.failed
        observation.end(appAddress, 502, { hop: "app", reason: code })
        settle(failure(code, `app at ${appAddress}: ${error.code ?? error.message}`, !refused))
      })
      appRequest.on("response", (response) => {
        const status = response.statusCode ?? 0
        // The spans end with the app's answer: when its body has been read, or the exchange broke off.
        response.once("end", () => observation.end(appAddress, status, undefined))
        response.once("close", () => {
          clearTimeout(timer)
          observation.end(appAddress, status, response.complete ? undefined : { hop: "app", reason: "answer_broke_off" })
        })
        if (status < 200 || status > 599) {
          observation.end(appAddress, 502, { hop: "app", reason: AppErrorCode.failed })
          settle(failure(AppErrorCode.failed, `app at ${appAddress} answered with status ${status}`, true))
          return void response.destroy()
        }
        if (oneway) {
          // Nobody reads a push's answer: drop it as it comes, so the socket goes back to the pool.
          response.once("close", () => settle(Buffer.alloc(0)))
          return void response.resume()
        }
        const answerHeaders = endToEndHeaders(response.rawHeaders, onInvalid)
        const bodiless = head.method === "HEAD" || status === 304
        const described = bodiless ? describedLength(response.headers["content-length"]) : undefined
        if (described !== undefined) answerHeaders.push(["content-length", described])
        const length = Number(response.headers["content-length"] ?? NaN)
        const whole = plain || bodiless || length <= WHOLE_BODY_LIMIT
        // A streamed answer of known length keeps it (node's parser checked the app's framing).
        if (!whole && Number.isSafeInteger(length)) answerHeaders.push(["content-length", String(length)])
        const meta = responseMeta(status, answerHeaders)
        if (whole) {
          collect(response).then(
            (body) => {
              observation.responseBytes(body.length)
              settle(plain ? (body.length === 0 ? "{}" : body) : reply(body, meta))
            },
            (error: Error) => settle(failure(AppErrorCode.failed, `app answer broke off: ${error.message}`, true))
          )
        } else {
          settle(reply(counted(response, (bytes) => observation.responseBytes(bytes)), meta))
        }
      })
      if (stream === undefined) {
        observation.requestBytes(head.body.length)
        appRequest.end(head.body)
        return
      }
      // A body that stops coming (or a caller that went away) must not hold the app's socket.
      const idleMs = options.bodyIdleTimeoutMs
      const onIdle = () => giveUp(AppErrorCode.bodyIdle, 408, `the request body sent nothing for ${idleMs} ms`)
      const length = declared === undefined ? -1 : Number(declared)
      const mismatch = () => giveUp(MeshErrorCode.badRequest, 400, `the streamed body does not match its content-length of ${length}`)
      request.signal.addEventListener("abort", () => stream.fail(new StreamFailed({ message: "request aborted" })), { once: true })
      ;(async () => {
        let idle = setTimeout(onIdle, idleMs)
        let sent = 0
        try {
          for await (const chunk of stream) {
            sent += chunk.length
            if (length >= 0 && sent > length) return mismatch()
            observation.requestBytes(chunk.length)
            if (appRequest.write(chunk)) idle.refresh()
            else {
              // Waiting on the app is not the body's idleness.
              clearTimeout(idle)
              await writable(appRequest)
              idle = setTimeout(onIdle, idleMs)
            }
          }
          if (length >= 0 && sent !== length) return mismatch()
          appRequest.end()
        } finally {
          clearTimeout(idle)
        }
      })().catch((error: Error) => appRequest.destroy(error))
    })
}
