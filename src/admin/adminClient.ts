// A client of other admin control listeners: what the CLI (stat, top, tap) and a federating admin
// server (federation.ts) use. Every call is bounded: a deadline for the whole answer, a cap on its
// size, the bearer token sent when one is configured; a failure is an AdminCallFailed that says
// which URL and why, never a throw. With `peersOnly` (a peer learned from another host) the dial
// guard (src/iip/dialGuard.ts) refuses an address on this host before any connection.
import * as Data from "effect/Data"
import type * as http from "node:http"
import * as https from "node:https"
import { type DialRefusal, dialRefusal, guardedLookup } from "../iip/dialGuard.ts"
import type { SelfDialCheck } from "../iip/ownListeners.ts"
import { nodeHttp } from "../toolkit/nodeHttp.ts"

/** `notPeer`: the dial guard refused the address (peersOnly, notSelf: `why`), nothing was connected. */
export class AdminCallFailed extends Data.TaggedError("AdminCallFailed")<{ readonly url: string; readonly message: string; readonly notPeer?: true; readonly why?: DialRefusal }> {}

export interface AdminCallOptions {
  readonly token?: string | undefined
  readonly timeoutMs: number
  readonly maxBytes: number
  /** Refuse to connect to this host's loopback, unspecified, multicast or the metadata address, checked after resolution. */
  readonly peersOnly?: boolean
  /** Refuse to connect where this process itself listens (src/iip/ownListeners.ts), checked after resolution. */
  readonly notSelf?: SelfDialCheck
}

const requestOf = (url: URL) => (url.protocol === "https:" ? https.request : nodeHttp.request)

const headersOf = (token: string | undefined): http.OutgoingHttpHeaders => (token === undefined ? {} : { authorization: `Bearer ${token}` })

/** GET `url` and parse its JSON answer (a 2xx); every failure an AdminCallFailed. */
export const getAdminJson = (url: string, options: AdminCallOptions): Promise<unknown> =>
  new Promise((resolve, reject) => {
    const fail = (message: string) => reject(new AdminCallFailed({ url, message }))
    let parsed: URL
    try {
      parsed = new URL(url)
    } catch {
      return fail("not a URL")
    }
    // An IP literal is connected to without a lookup: checked here; a name through the lookup hook.
    const host = parsed.hostname.startsWith("[") ? parsed.hostname.slice(1, -1) : parsed.hostname
    const port = parsed.port === "" ? (parsed.protocol === "https:" ? 443 : 80) : Number(parsed.port)
    const literal = dialRefusal(options, host, port)
    if (literal !== undefined) return reject(new AdminCallFailed({ url, message: literal === "not-peer" ? `${host} is not a peer's address` : `${host}:${port} is where this process itself listens`, notPeer: true, why: literal }))
    let refused: DialRefusal | undefined
    const lookup = options.peersOnly === true || options.notSelf !== undefined ? { lookup: guardedLookup((address) => dialRefusal(options, address, port), (why) => (refused = why)) } : {}
    const req = requestOf(parsed)(parsed, { method: "GET", headers: headersOf(options.token), agent: false, ...lookup })
    const timer = setTimeout(() => {
      req.destroy()
      fail(`no whole answer within ${options.timeoutMs} ms`)
    }, options.timeoutMs)
    req.once("error", (error) => {
      clearTimeout(timer)
      if (refused !== undefined) reject(new AdminCallFailed({ url, message: error.message, notPeer: true, why: refused }))
      else fail(error.message)
    })
    req.once("response", (res) => {
      const parts: Array<Buffer> = []
      let size = 0
      res.on("data", (chunk: Buffer) => {
        size += chunk.length
        if (size > options.maxBytes) {
          clearTimeout(timer)
          req.destroy()
          fail(`answer larger than ${options.maxBytes} bytes`)
          return
        }
        parts.push(chunk)
      })
      res.once("error", (error) => {
        clearTimeout(timer)
        fail(error.message)
      })
      res.once("end", () => {
        clearTimeout(timer)
        const text = Buffer.concat(parts).toString("utf8")
        if ((res.statusCode ?? 0) < 200 || (res.statusCode ?? 0) >= 300) return fail(`HTTP ${res.statusCode}: ${text.slice(0, 200)}`)
        try {
          resolve(JSON.parse(text))
        } catch {
          fail("the answer is not JSON")
        }
      })
    })
    req.end()
  })

export interface SseHandle {
  readonly close: () => void
  /** Resolves when the stream ends (closed by either side). */
  readonly ended: Promise<void>
}

/** Longest event the reader keeps; a longer one is skipped. */
const MAX_EVENT_CHARS = 1 << 20

/** Reads `url` as server-sent events, `onEvent` called per event; rejects when it cannot connect or is refused. */
export const openAdminEvents = (url: string, token: string | undefined, onEvent: (event: string, data: string) => void): Promise<SseHandle> =>
  new Promise((resolve, reject) => {
    const parsed = new URL(url)
    const req = requestOf(parsed)(parsed, { method: "GET", headers: { ...headersOf(token), accept: "text/event-stream" }, agent: false })
    req.once("error", (error) => reject(new AdminCallFailed({ url, message: error.message })))
    req.once("response", (res) => {
      if (res.statusCode !== 200) {
        res.resume()
        return reject(new AdminCallFailed({ url, message: `HTTP ${res.statusCode}` }))
      }
      let buffer = ""
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => {
        buffer += chunk
        let end: number
        while ((end = buffer.indexOf("\n\n")) !== -1) {
          const block = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          let event = "message"
          let data = ""
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) event = line.slice(7)
            else if (line.startsWith("data: ")) data += line.slice(6)
          }
          if (data !== "") onEvent(event, data)
        }
        if (buffer.length > MAX_EVENT_CHARS) buffer = ""
      })
      const ended = new Promise<void>((done) => {
        res.once("close", done)
        res.once("error", () => done())
      })
      resolve({ close: () => req.destroy(), ended })
    })
    req.end()
  })
