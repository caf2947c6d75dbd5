// One pooled session of the leg to an h2c app (appH2.ts): a socket dialed to the app and the
// sidecar's own HTTP/2 connection over it (src/h2, client role). It hands each stream's events to
// the exchange that stream names (`stream.user`, appH2Exchange.ts) and the session's own (the
// app's SETTINGS, its GOAWAY, the end) to the leg. The leg's view of a session is this object.
import * as net from "node:net"
import { H2Connection, type H2ClientHandler } from "../h2/h2Connection.ts"
import type { H2Limits } from "../h2/h2Guards.ts"
import type { H2ConnectionEnded, H2Stream, H2StreamEnded } from "../h2/h2Streams.ts"
import type { AppH2Exchange } from "./appH2Exchange.ts"

/** Like the HTTP/1.1 pool's idle keep-alive sockets, an unused session does not stay open for ever. */
const SESSION_IDLE_MS = 60_000

/**
 * The stream window B announces the app: a paused answer (its caller reads slowly) holds at most
 * this much past the mesh's high-water mark, on each of up to --app-h2-max-streams streams
 * (node's client announced 65,535; a 256 KiB message now needs no round trip).
 */
export const APP_STREAM_WINDOW = 256 * 1024

/**
 * The sessions' HTTP/2 bounds (src/h2/h2Guards.ts's defaults otherwise). The connection's window
 * is the most HTTP/2 allows (RFC 9113 6.9.1), given back as DATA arrives however much the paused
 * answers hold (heldBytes unbounded): the streams' windows bound that, and a dozen callers that
 * stop reading must not spend a connection window the other streams need (as node's client
 * consumed the connection's window at once). An app's END_STREAM so never waits behind another
 * stream's spent window (appH2Exchange.ts, windowSpentAtReset).
 * An answer head or trailers past the 64 KiB header list B announces ends its own call only (a
 * stream error), as node's client reset that one stream: a block is read up to what the reader's
 * 8 CONTINUATIONs (nghttp2's bound) carry at 16 KiB a frame; past that the session ends.
 */
const SESSION_LIMITS: Partial<H2Limits> = {
  idleTimeoutMs: SESSION_IDLE_MS,
  streamWindow: APP_STREAM_WINDOW,
  connectionWindow: 2 ** 31 - 1,
  heldBytes: Number.MAX_SAFE_INTEGER,
  maxHeaderBlockBytes: 9 * 16_384
}

/** What the session tells its leg. */
export interface SessionOwner {
  /** The app's SETTINGS were applied (its MAX_CONCURRENT_STREAMS may have changed). */
  settled(session: AppH2Session): void
  /** The app sent GOAWAY, or the session ended: it takes no more streams. */
  gone(session: AppH2Session): void
  /** The socket closed: nothing of the session is left. */
  closed(session: AppH2Session): void
}

export class AppH2Session implements H2ClientHandler {
  readonly connection: H2Connection
  readonly socket: net.Socket
  private readonly owner: SessionOwner
  /** The last stream id the app's GOAWAY named (-1: none): streams above it were not processed (RFC 9113 §6.8). */
  goawayLast = -1
  /** The app's GOAWAY came or the connection's end was told (`gone`). */
  private goneTold = false

  /** The socket's error (ECONNREFUSED...), named in the failures of the streams it ended. */
  socketError: string | undefined = undefined

  constructor(host: string, port: number, owner: SessionOwner) {
    this.owner = owner
    const socket = (this.socket = net.connect(port, host))
    socket.setNoDelay(true)
    socket.on("error", (error: NodeJS.ErrnoException) => {
      this.socketError ??= error.code ?? error.message
    })
    socket.once("close", () => owner.closed(this))
    // The connection writes its preface and SETTINGS now: the socket sends them once connected.
    this.connection = new H2Connection(socket, "client", this, SESSION_LIMITS)
  }

  /** The app's SETTINGS_MAX_CONCURRENT_STREAMS (Infinity until it announces one). */
  get announcedStreams(): number {
    return this.connection.peerMaxConcurrentStreams
  }

  onResponse(stream: H2Stream, fields: Array<string>, endStream: boolean): void {
    ;(stream.user as AppH2Exchange | undefined)?.onHead(fields, endStream)
  }

  onData(stream: H2Stream, chunk: Buffer, endStream: boolean): void {
    const exchange = stream.user as AppH2Exchange | undefined
    if (exchange === undefined) return this.connection.consumed(stream, chunk.length)
    exchange.onData(chunk, endStream)
  }

  onTrailers(stream: H2Stream, fields: Array<string>): void {
    ;(stream.user as AppH2Exchange | undefined)?.onTrailers(fields)
  }

  onReset(stream: H2Stream, code: number): void {
    ;(stream.user as AppH2Exchange | undefined)?.onReset(code)
  }

  onEnd(stream: H2Stream, ended: H2StreamEnded): void {
    ;(stream.user as AppH2Exchange | undefined)?.onStreamEnded(ended)
  }

  onWritable(stream: H2Stream): void {
    ;(stream.user as AppH2Exchange | undefined)?.onWritable()
  }

  onGoAway(lastStreamId: number): void {
    this.goawayLast = lastStreamId
    this.goOver()
  }

  onSettings(): void {
    if (!this.over) this.owner.settled(this)
  }

  onClose(_ended: H2ConnectionEnded): void {
    this.goOver()
  }

  /**
   * No new stream goes here: the app's GOAWAY came or the connection ended (from its first step: a
   * stream whose end it tells may free a place, and the next stream must not go to this session),
   * or its stream ids are spent (else every later call was refused on it for as long as calls kept
   * it from its idle timeout, which then ends it once its last stream is over).
   */
  get over(): boolean {
    return this.goneTold || this.connection.ended !== undefined || this.connection.idsSpent
  }

  private goOver(): void {
    if (this.goneTold) return
    this.goneTold = true
    this.owner.gone(this)
  }

  /** Whether the app's GOAWAY named a last stream id below stream `id`: the app did not process it. */
  aboveGoaway(id: number): boolean {
    return this.goawayLast >= 0 && id > this.goawayLast
  }
}
