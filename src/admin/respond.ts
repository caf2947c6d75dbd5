// Small HTTP helpers of the admin server: JSON answers, bounded request bodies, path segments
// decoded without throwing, and the total request handler every admin request goes through.
import * as Data from "effect/Data"
import type * as http from "node:http"
import type * as stream from "node:stream"
import { boundPeerFin } from "../mux/peerFin.ts"
import { type Log, messageOf } from "../iip/log.ts"
import { loggable } from "../iip/redact.ts"

export const json = (res: http.ServerResponse, status: number, body: unknown, headers: http.OutgoingHttpHeaders = {}): void => {
  const text = JSON.stringify(body, null, 2)
  res.writeHead(status, { ...headers, "content-type": "application/json", "content-length": Buffer.byteLength(text) })
  res.end(text)
}

/** A request the admin server cannot serve as sent: answered with `status` and `{error, message}`. */
export class AdminRequestInvalid extends Data.TaggedError("AdminRequestInvalid")<{
  readonly status: number
  readonly error: string
  readonly message: string
}> {}

/** A percent-encoded path segment, decoded; a malformed escape or invalid UTF-8 is the client's 400. */
export const decodeSegment = (segment: string): string => {
  try {
    return decodeURIComponent(segment)
  } catch {
    throw new AdminRequestInvalid({ status: 400, error: "bad_path", message: "the path holds a malformed percent-escape (or one that is not UTF-8)" })
  }
}

const BODY_CUT = { status: 400, error: "body_cut", message: "the request body ended before its length" } as const

/**
 * Reads a request body of at most `limit` characters; undefined as soon as it is larger. The rest
 * of a large body is read and dropped (not the socket destroyed), so the caller still gets its 400.
 * A body the client cuts off (it goes, or misses the request deadline) is its AdminRequestInvalid,
 * not a failure of ours to log.
 */
export const smallBody = (req: http.IncomingMessage, limit: number): Promise<string | undefined> =>
  new Promise((resolve, reject) => {
    let text: string | undefined = ""
    req.setEncoding("utf8")
    req.on("data", (chunk: string) => {
      if (text === undefined) return
      text += chunk
      if (text.length > limit) {
        text = undefined
        resolve(undefined)
      }
    })
    req.once("end", () => resolve(text))
    req.once("error", () => reject(new AdminRequestInvalid(BODY_CUT)))
  })

/**
 * Makes `route` total: whatever it throws or rejects with becomes an answer, never an exception
 * out of the server's "request" event (which would end the process). An AdminRequestInvalid is
 * the client's error and answered as it says; anything else is our bug: logged (sanitized) and
 * answered 500, or the connection closed when part of an answer already went out.
 */
export const totalHandler = (route: (req: http.IncomingMessage, res: http.ServerResponse) => Promise<void>, log: Log): http.RequestListener =>
  (req, res) => {
    // A client that goes away mid-request is not a failure of ours; node closes its socket.
    req.on("error", ignore)
    res.on("error", ignore)
    route(req, res).catch((error: unknown) => {
      if (error instanceof AdminRequestInvalid && !res.headersSent) return json(res, error.status, { error: error.error, message: error.message })
      log("admin-request-failed", { method: loggable(req.method ?? "", 16), path: loggable(req.url ?? "", 200), message: loggable(messageOf(error)) })
      if (!res.headersSent) return json(res, 500, { error: "internal", message: "the admin server failed on this request; its log says why" })
      if (!res.writableEnded) res.destroy()
    })
  }

const ignore = (): void => {}

const CONNECT_REFUSED = JSON.stringify({ error: "method_not_allowed", message: "the admin server does not tunnel" })

/**
 * The answer to CONNECT, which node hands to a "connect" listener instead of the request handler
 * and, without one, drops without a word.
 */
export const refuseConnect = (_req: http.IncomingMessage, socket: stream.Duplex): void => {
  socket.on("error", ignore)
  // node's server let go of it (half-open, no timeout): the client's FIN is waited for a grace only.
  boundPeerFin(socket)
  socket.end(
    `HTTP/1.1 405 Method Not Allowed\r\ncontent-type: application/json\r\ncontent-length: ${CONNECT_REFUSED.length}\r\nconnection: close\r\n\r\n${CONNECT_REFUSED}`
  )
}
