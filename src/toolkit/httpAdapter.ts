// The HTTP adapter (iip-protocol.md §9): an HTTP reverse proxy (node:http) in front of IIP
// servers. For each request:
//
//   Host (port removed, IPv6 literals kept whole) > first matching route (a host regex with an
//   optional URI regex, or a function) > its load-balance client (loadBalanceClient.ts) > IIP
//   request: path = request URI + `__http_hdr__` (httpHeader.ts), data = body or `{}`, the method
//   as `:method` metadata (mesh mode) > answer
//
// The answer is 200 with the IIP data as the body, unless it is an error, which the reference sends
// back with 200: an unknown IIP path (`{"code":102,...}` from a plain server, `not_found` from a
// mesh one) is 404; a handler failure or no response 502; a backend that cannot be reached or
// drops the connection 502; no backend, all of them overloaded or draining 503 (retry-after: 1);
// a timeout 504; a URI too long for an IIP path (2048 bytes with the headers) 414; no route 404.
// Errors have a JSON body `{"error":"<reason>","message":"..."}` and an `x-iip-error` header.
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as http from "node:http"
import type * as net from "node:net"
import { Refused } from "../iip/dispatch.ts"
import { messageOf } from "../iip/log.ts"
import { checkOptions, count, durationOrInfinityMs, type Limits as OptionLimits } from "../iip/optionLimits.ts"
import { ChannelOpenFailed, ConnectFailed, ConnectionClosed, Overloaded, RequestTimeout } from "../mux/errors.ts"
import { RemoteError } from "../mux/meshSession.ts"
import { EmptyBody, Limits } from "../protocol/constants.ts"
import { clampErrorMessage, safeErrorCode } from "../protocol/errorText.ts"
import { PacketEncodeError } from "../protocol/errors.ts"
import { MaxDeadlineMs, MeshErrorCode } from "../protocol/mesh.ts"
import { noResponseBody, parseSystemAnswer, unknownPathBody } from "../protocol/systemMessages.ts"
import { withHttpHeader } from "./httpHeader.ts"
import { type LoadBalanceClient, NoBackend } from "./loadBalanceClient.ts"
import { nodeHttp } from "./nodeHttp.ts"

/** The metadata key of the HTTP method (what the sidecar's envelope uses too). */
export const HttpMethodMeta = ":method"

export class AdapterListenFailed extends Data.TaggedError("AdapterListenFailed")<{ readonly message: string }> {}

/** Why a request got no IIP answer, as the HTTP client sees it. */
export class AdapterError extends Data.TaggedError("AdapterError")<{
  readonly status: 400 | 403 | 404 | 413 | 414 | 502 | 503 | 504
  readonly reason: string
  readonly message: string
}> {}

/** What a route function sees of a request. */
export interface RouteRequest {
  /** The Host header without its port, lower case ("" when absent). */
  readonly host: string
  readonly uri: string
  readonly method: string
  readonly headers: http.IncomingHttpHeaders
}

/**
 * A host pattern (a string is a whole-host regular expression, case-insensitive; a RegExp is used
 * as given) with an optional request-URI pattern, or a function that picks a client itself.
 */
export type HttpRoute =
  | { readonly host: RegExp | string; readonly uri?: RegExp; readonly to: LoadBalanceClient }
  | ((request: RouteRequest) => LoadBalanceClient | undefined)

export interface HttpAdapterOptions {
  readonly host?: string
  /** 0 picks a free port; `address.port` tells which. */
  readonly port?: number
  /** Tried in order; the first that matches takes the request. */
  readonly routes?: ReadonlyArray<HttpRoute>
  /** Per request, every try included (default 5000 ms). */
  readonly requestTimeoutMs?: number
  /** Largest request body (default 16 MiB, what one plain IIP packet carries). */
  readonly maxBodyBytes?: number
}

/** The error a plain IIP server's answer stands for, when it is one of the reference's error bodies. */
export const plainErrorOf = (answer: Buffer): AdapterError | undefined => {
  if (answer[0] !== 0x7b || answer.length > 4096) return undefined
  if (answer.equals(unknownPathBody)) return new AdapterError({ status: 404, reason: MeshErrorCode.notFound, message: "the IIP server has no handler for this path" })
  if (answer.equals(noResponseBody)) return new AdapterError({ status: 502, reason: MeshErrorCode.noResponse, message: "the IIP handler gave no response" })
  const system = parseSystemAnswer(answer)
  if (system?.code === -1 && system.message.startsWith("handler fail:")) {
    return new AdapterError({ status: 502, reason: MeshErrorCode.handlerFailed, message: system.message.slice("handler fail:".length) })
  }
  return undefined
}

/** The HTTP error for whatever a call failed with. */
export const adapterErrorOf = (error: unknown): AdapterError => {
  const make = (status: AdapterError["status"], reason: string, message: string) => new AdapterError({ status, reason, message })
  if (error instanceof AdapterError) return error
  if (error instanceof NoBackend) return make(503, "no_backend", error.message)
  if (error instanceof Overloaded) return make(503, "overloaded", error.message)
  if (error instanceof RequestTimeout) return make(504, "timeout", error.message)
  if (error instanceof ConnectFailed) return make(502, "connect_failed", error.message)
  if (error instanceof ConnectionClosed) return make(502, "connection_lost", error.message)
  if (error instanceof ChannelOpenFailed) return make(502, "channel_open_failed", error.message)
  if (error instanceof PacketEncodeError) return make(414, "uri_too_long", error.message)
  if (error instanceof Refused) return make(403, error.code, error.message)
  if (error instanceof RemoteError) {
    switch (error.code) {
      case MeshErrorCode.notFound:
        return make(404, error.code, error.message)
      case MeshErrorCode.badRequest:
        return make(400, error.code, error.message)
      case MeshErrorCode.deadlineExceeded:
        return make(504, error.code, error.message)
      case MeshErrorCode.overloaded:
      case MeshErrorCode.draining:
        return make(503, error.code, error.message)
      default:
        // A code of the IIP server's own choosing: it reaches a header, so it is made safe first.
        return make(502, safeErrorCode(error.code), clampErrorMessage(error.message))
    }
  }
  return make(502, "upstream_failed", messageOf(error))
}

/** Answers with the error, unless the response has already started (then it is cut off). Never throws. */
const sendError = (res: http.ServerResponse, error: AdapterError): void => {
  if (res.headersSent || res.destroyed) return void res.destroy()
  const body = JSON.stringify({ error: error.reason, message: clampErrorMessage(error.message) })
  try {
    res.writeHead(error.status, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(body),
      "x-iip-error": safeErrorCode(error.reason),
      ...(error.status === 503 ? { "retry-after": "1" } : {}),
      ...(error.status === 413 ? { connection: "close" } : {})
    })
    res.end(body)
  } catch {
    res.destroy()
  }
}

/** The Host header without its port; an IPv6 literal stays whole (`[::1]`), unlike the reference's split at ":". */
const hostOf = (header: string | undefined): string => {
  if (header === undefined) return ""
  const end = header.startsWith("[") ? header.indexOf("]") + 1 : header.indexOf(":")
  return (end <= 0 ? header : header.slice(0, end)).toLowerCase()
}

type Compiled = { readonly host: RegExp; readonly uri: RegExp | undefined; readonly to: LoadBalanceClient } | ((request: RouteRequest) => LoadBalanceClient | undefined)

const compile = (route: HttpRoute): Compiled =>
  typeof route === "function"
    ? route
    : { host: typeof route.host === "string" ? new RegExp(`^(?:${route.host})$`, "i") : route.host, uri: route.uri, to: route.to }

/** What each numeric option takes (src/iip/optionLimits.ts); the timeout as the load-balance client's. */
const adapterLimits: OptionLimits<HttpAdapterOptions> = { requestTimeoutMs: durationOrInfinityMs(0, MaxDeadlineMs), maxBodyBytes: count(0) }

export class HttpAdapter {
  private readonly routes: Array<{ readonly route: HttpRoute; readonly compiled: Compiled }> = []
  private readonly server: http.Server
  private readonly options: HttpAdapterOptions
  private readonly requestTimeoutMs: number
  private readonly maxBodyBytes: number

  /** Throws OptionInvalid (src/iip/optionLimits.ts) for a numeric option out of range. */
  constructor(options: HttpAdapterOptions = {}) {
    checkOptions("HttpAdapter", adapterLimits, options)
    this.options = options
    this.requestTimeoutMs = options.requestTimeoutMs ?? 5000
    this.maxBodyBytes = options.maxBodyBytes ?? Limits.maxPacketData
    for (const route of options.routes ?? []) this.addRoute(route)
    this.server = nodeHttp.createServer((req, res) => this.serve(req, res))
  }

  /** Adds a route last (or first, as the reference's PushRouteHead). A string host that is not a valid regular expression throws. */
  addRoute(route: HttpRoute, position: "first" | "last" = "last"): this {
    const entry = { route, compiled: compile(route) }
    if (position === "first") this.routes.unshift(entry)
    else this.routes.push(entry)
    return this
  }

  removeRoute(route: HttpRoute): boolean {
    const index = this.routes.findIndex((entry) => entry.route === route)
    if (index !== -1) this.routes.splice(index, 1)
    return index !== -1
  }

  get address(): { readonly host: string; readonly port: number } {
    const address = this.server.address() as net.AddressInfo
    return { host: address.address, port: address.port }
  }

  listen(): Promise<void> {
    const host = this.options.host ?? "127.0.0.1"
    const port = this.options.port ?? 0
    return new Promise((resolve, reject) => {
      const onError = (error: NodeJS.ErrnoException) => reject(new AdapterListenFailed({ message: `cannot listen on ${host}:${port}: ${error.code ?? error.message}` }))
      this.server.once("error", onError)
      this.server.listen(port, host, () => {
        this.server.off("error", onError)
        resolve()
      })
    })
  }

  /** Stops listening and closes every HTTP connection. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.server.listening) return resolve()
      this.server.close(() => resolve())
      this.server.closeAllConnections()
    })
  }

  private route(request: RouteRequest): LoadBalanceClient | undefined {
    for (const { compiled } of this.routes) {
      if (typeof compiled === "function") {
        const client = compiled(request)
        if (client !== undefined) return client
      } else if (compiled.host.test(request.host) && (compiled.uri === undefined || compiled.uri.test(request.uri))) {
        return compiled.to
      }
    }
    return undefined
  }

  private serve(req: http.IncomingMessage, res: http.ServerResponse): void {
    const uri = req.url ?? "/"
    const method = req.method ?? "GET"
    const host = hostOf(req.headers.host)
    const client = this.route({ host, uri, method, headers: req.headers })
    if (client === undefined) {
      req.resume()
      return sendError(res, new AdapterError({ status: 404, reason: "no_route", message: `no route for host ${JSON.stringify(host)}` }))
    }
    this.readBody(req, (error, body) => {
      if (error !== undefined) return sendError(res, error)
      const abort = new AbortController()
      res.once("close", () => {
        if (!res.writableFinished) abort.abort()
      })
      const options = { timeoutMs: this.requestTimeoutMs, meta: new Map([[HttpMethodMeta, method]]), signal: abort.signal }
      client
        .call(withHttpHeader(uri, req.rawHeaders), body!.length > 0 ? body : EmptyBody, {
          ...options,
          ...(req.socket.remoteAddress === undefined ? {} : { clientIp: req.socket.remoteAddress })
        })
        .then(
          (answer) => {
            const failed = plainErrorOf(answer)
            if (failed !== undefined) return sendError(res, failed)
            res.writeHead(200, { "content-length": answer.length })
            res.end(answer)
          },
          (failure: unknown) => sendError(res, adapterErrorOf(failure))
        )
    })
  }

  private readBody(req: http.IncomingMessage, done: (error: AdapterError | undefined, body: Buffer | undefined) => void): void {
    const chunks: Array<Buffer> = []
    let size = 0
    let finished = false
    const finish = (error: AdapterError | undefined) => {
      if (finished) return
      finished = true
      done(error, error === undefined ? Buffer.concat(chunks, size) : undefined)
    }
    req.on("data", (chunk: Buffer) => {
      size += chunk.length
      if (size > this.maxBodyBytes) {
        req.pause()
        finish(new AdapterError({ status: 413, reason: "body_too_large", message: `request body over ${this.maxBodyBytes} bytes` }))
      } else if (!finished) chunks.push(chunk)
    })
    req.once("end", () => finish(undefined))
    req.once("error", (error) => finish(new AdapterError({ status: 400, reason: "bad_request", message: `cannot read the request body: ${error.message}` })))
  }
}

/** An HTTP adapter listening for the lifetime of the current Scope. */
export const make = (options: HttpAdapterOptions): Effect.Effect<HttpAdapter, AdapterListenFailed, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      const adapter = new HttpAdapter(options)
      yield* Effect.tryPromise({ try: () => adapter.listen(), catch: (error) => error as AdapterListenFailed })
      return adapter
    }),
    (adapter) => Effect.promise(() => adapter.close())
  )
