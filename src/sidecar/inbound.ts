// Inbound: a request from another sidecar (or a plain IIP caller), forwarded to the local app
// over keep-alive HTTP, the app's answer streamed back on the same channel. A cancel or a passed
// deadline aborts the request to the app. An app that cannot be reached is `app_unavailable`
// (not processed: safe to retry on another instance). The time left before the caller's deadline
// reaches the app as an `iip-timeout` header (ms), for it to pass on to its own calls.
import * as http from "node:http"
import type { HandlerValue } from "../iip/dispatch.ts"
import { failure, type IncomingRequest, reply } from "../iip/server.ts"
import { endToEndHeaders, headersFromPlainQuery, headersOf, HttpMeta, responseMeta, TIMEOUT_HEADER, toOutgoing } from "./httpEnvelope.ts"
import { InboundObservation, type SidecarTelemetry } from "./observe.ts"
import { AppErrorCode } from "./proxyError.ts"

const WHOLE_BODY_LIMIT = 64 * 1024

export interface InboundOptions {
  /** This sidecar's service, for its spans and metrics. */
  readonly service: string
  readonly appHost: string
  readonly appPort: number
  readonly telemetry: SidecarTelemetry
}

/** A request without HTTP metadata came from a plain IIP caller using the reference adapter's convention. */
const plainRequest = (request: IncomingRequest) => {
  const headerArg = request.query.get("__http_hdr__")?.[0]
  const params = new URLSearchParams(request.rawQuery)
  params.delete("__http_hdr__")
  const query = params.toString()
  const isEmpty = request.data.length === 2 && request.data[0] === 0x7b && request.data[1] === 0x7d
  return {
    method: isEmpty ? "GET" : "POST",
    path: query === "" ? request.path : `${request.path}?${query}`,
    headers: headerArg === undefined ? [] : headersFromPlainQuery(headerArg),
    body: isEmpty ? Buffer.alloc(0) : request.data
  }
}

/** Gathers a (small) body with events rather than an async iterator: this runs per request. */
const collect = (source: http.IncomingMessage): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    const parts: Array<Buffer> = []
    source.on("data", (chunk: Buffer) => parts.push(chunk))
    source.once("end", () => resolve(parts.length === 1 ? parts[0]! : Buffer.concat(parts)))
    source.once("error", reject)
  })

/** Passes a streamed answer on, telling `count` the size of each chunk. */
async function* counted(source: AsyncIterable<Buffer>, count: (bytes: number) => void): AsyncIterable<Buffer> {
  for await (const chunk of source) {
    count(chunk.length)
    yield chunk
  }
}

export const makeInboundHandler = (options: InboundOptions) => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 })
  const appAddress = `${options.appHost}:${options.appPort}`
  return (request: IncomingRequest): Promise<HandlerValue> =>
    new Promise<HandlerValue>((resolve) => {
      const plain = !request.meta.has(HttpMeta.method)
      const head = plain
        ? plainRequest(request)
        : { method: request.meta.get(HttpMeta.method)!, path: request.rawPath, headers: headersOf(request.meta), body: request.data }
      const authority = request.meta.get(HttpMeta.authority)
      const timeLeft = request.context.deadline > 0 ? Math.max(1, request.context.deadline - Date.now()) : 0
      const observation = new InboundObservation(options.telemetry, options.service, head.method, head.path, head.headers, request.context.remoteAddress)
      const headers: http.OutgoingHttpHeaders = {
        ...toOutgoing(head.headers),
        ...(authority === undefined ? {} : { host: authority }),
        ...(timeLeft === 0 ? {} : { [TIMEOUT_HEADER]: String(timeLeft) })
      }
      observation.callApp(options.appHost, options.appPort, headers)
      const appRequest = http.request({ host: options.appHost, port: options.appPort, method: head.method, path: head.path, headers, agent, signal: request.signal })
      appRequest.on("error", (error: NodeJS.ErrnoException) => {
        const refused = error.code === "ECONNREFUSED" || error.code === "ENOTFOUND"
        const code = refused ? AppErrorCode.unavailable : AppErrorCode.failed
        observation.end(appAddress, 502, { hop: "app", reason: code })
        resolve(failure(code, `app at ${appAddress}: ${error.code ?? error.message}`, !refused))
      })
      appRequest.on("response", (response) => {
        // The spans end with the app's answer: when its body has been read, or the exchange broke off.
        response.once("end", () => observation.end(appAddress, response.statusCode ?? 502, undefined))
        response.once("close", () => observation.end(appAddress, response.statusCode ?? 502, response.complete ? undefined : { hop: "app", reason: "answer_broke_off" }))
        const length = Number(response.headers["content-length"] ?? NaN)
        const meta = responseMeta(response.statusCode ?? 502, endToEndHeaders(response.rawHeaders))
        if (plain || length <= WHOLE_BODY_LIMIT) {
          collect(response).then(
            (body) => {
              observation.responseBytes(body.length)
              resolve(plain ? (body.length === 0 ? "{}" : body) : reply(body, meta))
            },
            (error: Error) => resolve(failure(AppErrorCode.failed, `app answer broke off: ${error.message}`, true))
          )
        } else {
          resolve(reply(counted(response, (bytes) => observation.responseBytes(bytes)), meta))
        }
      })
      const stream = request.context.stream
      if (stream === undefined) {
        observation.requestBytes(head.body.length)
        appRequest.end(head.body)
        return
      }
      ;(async () => {
        for await (const chunk of stream) {
          observation.requestBytes(chunk.length)
          if (!appRequest.write(chunk)) await new Promise((r) => appRequest.once("drain", r))
        }
        appRequest.end()
      })().catch((error: Error) => appRequest.destroy(error))
    })
}
