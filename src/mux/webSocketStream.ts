// IIP over WebSocket (PROTOCOL.md §18): a WebSocket seen as a byte stream, so a Connection (its
// decoder, writer and sessions) runs over it unchanged, as over a TCP socket. The payloads of the
// binary messages, in order, are the IIP byte stream; a message may hold whole packets, part of
// one, or several. We send each write of the connection's writer as messages of at most 64 KiB
// and refuse text messages. Back-pressure crosses in both directions: a full read buffer pauses
// the WebSocket's socket, and a write completes only once the socket took it. Also here: the
// server side (the upgrade on a node:http server's path) and the client's dial. The ws package
// is loaded on first use (an upgrade listener attached, a dial): a sidecar on TCP never loads it.
import * as Data from "effect/Data"
import type * as http from "node:http"
import { createRequire } from "node:module"
import type { LookupFunction } from "node:net"
import { Duplex } from "node:stream"
import type WebSocket from "ws"
import type { WebSocketServer } from "ws"

/** What require("ws") gives: the client class, the server class as its property. */
type WsPackage = typeof WebSocket & { readonly WebSocketServer: typeof WebSocketServer }
let wsPackage: WsPackage | undefined
/** The ws package, loaded the first time it is needed (synchronously: it is CommonJS). */
const wsLibrary = (): WsPackage => (wsPackage ??= createRequire(import.meta.url)("ws") as WsPackage)

/** Most bytes of the IIP stream in one message we send; also the default limit of a message we accept. */
export const WebSocketMessageBytes = 64 * 1024

/** The WebSocket failed or closed with an error code; the connection over it closes with this reason. */
export class WebSocketFailed extends Data.TaggedError("WebSocketFailed")<{ readonly message: string }> {}

/** Close codes that end the stream normally (normal, going away, no code given). */
const normalClose = new Set([1000, 1001, 1005])

export class WebSocketStream extends Duplex {
  readonly remoteAddress: string | undefined
  readonly remotePort: number | undefined
  private readonly ws: WebSocket

  constructor(ws: WebSocket, remote: { readonly address: string | undefined; readonly port: number | undefined }) {
    super({ allowHalfOpen: false, readableHighWaterMark: WebSocketMessageBytes, writableHighWaterMark: WebSocketMessageBytes })
    this.ws = ws
    this.remoteAddress = remote.address
    this.remotePort = remote.port
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      if (this.destroyed) return
      if (!isBinary) {
        ws.close(1003, "IIP takes binary messages only")
        this.destroy(new WebSocketFailed({ message: "peer sent a text message; IIP takes binary messages only" }))
        return
      }
      if (!this.push(data)) ws.pause()
    })
    ws.on("close", (code: number, reason: Buffer) => {
      if (this.destroyed) return
      if (normalClose.has(code)) this.push(null)
      else this.destroy(new WebSocketFailed({ message: `websocket closed with code ${code}${reason.length > 0 ? ` (${reason.toString("utf8")})` : ""}` }))
    })
    ws.on("error", (error: Error) => this.destroy(new WebSocketFailed({ message: `websocket: ${error.message}` })))
  }

  override _read(): void {
    this.ws.resume()
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.send([chunk], callback)
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (error?: Error | null) => void): void {
    this.send(chunks.map((c) => c.chunk), callback)
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.ws.close(1000)
    callback()
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (this.ws.readyState === this.ws.OPEN) {
      // Read on, so the peer's close frame arrives even while reading was paused.
      this.ws.resume()
      this.ws.close(error === null ? 1000 : 1011)
    } else if (this.ws.readyState === this.ws.CONNECTING) this.ws.terminate()
    callback(error)
  }

  /** Sends the bytes as messages of at most WebSocketMessageBytes; `callback` once the socket took the last. */
  private send(chunks: ReadonlyArray<Buffer>, callback: (error?: Error | null) => void): void {
    const messages: Array<Buffer> = []
    let parts: Array<Buffer> = []
    let size = 0
    const cut = () => {
      if (size === 0) return
      messages.push(parts.length === 1 ? parts[0]! : Buffer.concat(parts, size))
      parts = []
      size = 0
    }
    for (const chunk of chunks) {
      for (let offset = 0; offset < chunk.length;) {
        const take = Math.min(chunk.length - offset, WebSocketMessageBytes - size)
        parts.push(take === chunk.length ? chunk : chunk.subarray(offset, offset + take))
        size += take
        offset += take
        if (size === WebSocketMessageBytes) cut()
      }
    }
    cut()
    if (messages.length === 0) return callback()
    const last = messages.length - 1
    for (let i = 0; i < last; i++) this.ws.send(messages[i]!, { binary: true })
    this.ws.send(messages[last]!, { binary: true }, (error) => callback(error == null ? null : new WebSocketFailed({ message: `websocket: ${error.message}` })))
  }
}

export interface WebSocketServerOptions {
  /** Request path of the upgrade (default "/iip"). */
  readonly path?: string
  /** Largest message accepted; a larger one closes the connection with 1009 (default 64 KiB). */
  readonly maxMessageBytes?: number
  /** WebSocket connections at once; further upgrades are refused with 503 (default 1000). */
  readonly maxConnections?: number
}

const refuse = (socket: Duplex, status: number, text: string): void => {
  socket.once("finish", () => socket.destroy())
  socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`)
}

/**
 * Accepts IIP-over-WebSocket upgrades on `options.path` of `server` and hands each connection to
 * `accept` as a byte stream. Returns the function that detaches it (open connections stay).
 */
export const acceptWebSocket = (
  server: http.Server,
  options: WebSocketServerOptions,
  accept: (stream: WebSocketStream) => void,
  refused: (remote: string, reason: string) => void
): (() => void) => {
  const path = options.path ?? "/iip"
  const maxConnections = options.maxConnections ?? 1000
  const wss = new (wsLibrary().WebSocketServer)({ noServer: true, maxPayload: options.maxMessageBytes ?? WebSocketMessageBytes, perMessageDeflate: false, clientTracking: false })
  let open = 0
  const onUpgrade = (request: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    const remote = `${request.socket.remoteAddress ?? "?"}:${request.socket.remotePort ?? 0}`
    if (URL.parse(request.url ?? "/", "http://host")?.pathname !== path) {
      // Another listener may serve other paths; alone, we answer for the server.
      if (server.listenerCount("upgrade") === 1) refuse(socket, 404, "Not Found")
      return
    }
    if (open >= maxConnections) {
      refused(remote, `websocket connections limited (${maxConnections})`)
      return refuse(socket, 503, "Service Unavailable")
    }
    wss.handleUpgrade(request, socket, head, (ws) => {
      open++
      ws.once("close", () => open--)
      accept(new WebSocketStream(ws, { address: request.socket.remoteAddress, port: request.socket.remotePort }))
    })
  }
  server.on("upgrade", onUpgrade)
  return () => void server.off("upgrade", onUpgrade)
}

/**
 * Dials `url` and calls `done` once with the open stream or the reason it failed. Returns the
 * function that abandons the attempt (or destroys the stream once open).
 */
export const dialWebSocket = (
  url: string,
  done: (error: string | undefined, stream: WebSocketStream | undefined) => void,
  lookup?: { readonly lookup: LookupFunction }
): (() => void) => {
  let ws: WebSocket
  try {
    ws = new (wsLibrary())(url, { perMessageDeflate: false, maxPayload: WebSocketMessageBytes, ...lookup })
  } catch (error) {
    done((error as Error).message, undefined)
    return () => {}
  }
  let stream: WebSocketStream | undefined
  const onError = (error: Error) => done(error.message, undefined)
  ws.once("error", onError)
  ws.once("unexpected-response", (_request, response) => {
    ws.off("error", onError)
    ws.on("error", () => {})
    ws.terminate()
    done(`HTTP ${response.statusCode ?? 0} ${response.statusMessage ?? ""}`.trim(), undefined)
  })
  ws.once("open", () => {
    ws.off("error", onError)
    const target = new URL(url)
    stream = new WebSocketStream(ws, { address: target.hostname, port: Number(target.port) || (target.protocol === "wss:" ? 443 : 80) })
    done(undefined, stream)
  })
  return () => {
    if (stream !== undefined) stream.destroy()
    else {
      ws.off("error", onError)
      ws.on("error", () => {})
      ws.terminate()
    }
  }
}
