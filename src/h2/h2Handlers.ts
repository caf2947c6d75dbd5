// The contract between an H2Connection (h2Connection.ts) and the leg above it: the handler a leg
// gives the connection, one method per stream or connection event with plain values, and what the
// connection needs of its socket. The sidecar's gRPC legs (appH2Session.ts, outboundH2Session.ts)
// implement these; nothing here runs.
import type * as net from "node:net"
import type { H2ConnectionEnded, H2Stream, H2StreamEnded } from "./h2Streams.ts"

/** The leg's side of a stream: one method per event, called with the stream record and plain values. */
export interface H2StreamHandler {
  /** `chunk` is a view of a socket read: the leg keeps it or copies it, and says `consumed` when done. */
  onData(stream: H2Stream, chunk: Buffer, endStream: boolean): void
  onTrailers(stream: H2Stream, fields: Array<string>): void
  /** The peer reset the stream (RST_STREAM with `code`). */
  onReset(stream: H2Stream, code: number): void
  /**
   * The stream ended for another reason: a stream error, a GOAWAY above it, the connection's end;
   * or "complete" (NO_ERROR, not retryable): our own last frame (END_STREAM on DATA, or trailers)
   * went out after the peer's end, which the leg heard earlier, so only this says it is over.
   */
  onEnd(stream: H2Stream, ended: H2StreamEnded): void
  /** `write` said false earlier; there is room again. */
  onWritable(stream: H2Stream): void
  /** The connection is over (every stream was ended before this, each exactly once). */
  onClose(ended: H2ConnectionEnded): void
}

export interface H2ServerHandler extends H2StreamHandler {
  onRequest(stream: H2Stream, fields: Array<string>, endStream: boolean): void
  /**
   * The peer's PING (not an ACK), within the ping budget, before its ACK is written: a leg with a
   * policy of its own (a PING floor while no stream is open) may end the connection from here, and
   * then no ACK goes. Optional.
   */
  onPing?(): void
}

export interface H2ClientHandler extends H2StreamHandler {
  onResponse(stream: H2Stream, fields: Array<string>, endStream: boolean): void
  /**
   * The peer's GOAWAY, before the streams above `lastStreamId` end (retryable): no new request
   * from here on. Optional: a leg that only needs the streams' ends may leave it out.
   */
  onGoAway?(lastStreamId: number, code: number): void
  /** The peer's SETTINGS were applied: `peerMaxConcurrentStreams` / `peerMaxHeaderListSize` may have changed. */
  onSettings?(): void
}

/** What the connection needs of its socket (a net.Socket; a test may give any duplex like it). */
export type H2Socket = Pick<net.Socket, "write" | "cork" | "uncork" | "on" | "end" | "destroy" | "writableLength" | "destroyed" | "readableEnded" | "pause" | "resume" | "unshift">
