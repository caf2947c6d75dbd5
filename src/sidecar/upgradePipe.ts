// The byte pipes of an upgraded connection (WebSocket and other HTTP/1.1 upgrades, PROTOCOL.md
// §17.4), used on both sides: the outbound sidecar between the calling app's socket and the mesh
// stream, the inbound sidecar between the mesh stream and its app's socket. Bytes are opaque
// (WebSocket frames, close frames included, pass as they are). Back-pressure both ways: a socket
// is paused while more than a window of what it sent waits unread by the mesh; a mesh stream is
// read only as fast as the socket drains.
import type * as net from "node:net"
import { StreamFailed, type UnreadPool } from "../mux/streams.ts"
import { PausingByteQueue } from "./byteQueue.ts"
import { drainedOrClosed } from "./drained.ts"

/** A socket's bytes wait here, at most about this much, before it is paused. */
const HIGH_WATER = 64 * 1024

/**
 * What a socket sends, as an AsyncIterable the mesh session reads at its own pace: `first` (bytes
 * that came with the upgrade's head) then every chunk until the socket ends. A socket that closes
 * without ending (reset, destroyed) fails the iteration.
 */
export class SocketSource implements AsyncIterable<Buffer> {
  /** Bytes read from the socket so far. */
  bytes = 0
  private readonly socket: net.Socket
  private readonly queue: PausingByteQueue

  constructor(socket: net.Socket, first: Buffer) {
    this.socket = socket
    // Who owns the socket closes it; a reader that stops only stops the holding of its bytes.
    this.queue = new PausingByteQueue(HIGH_WATER, {
      pause: () => socket.pause(),
      resumeIfPaused: () => {
        if (socket.isPaused()) socket.resume()
      }
    }, () => this.stop())
    if (first.length > 0) this.push(first)
    socket.on("data", (chunk: Buffer) => this.push(chunk))
    socket.on("end", () => this.queue.end())
    socket.on("close", () => this.queue.fail(new StreamFailed({ message: "the connection closed" })))
  }

  /**
   * Ends the iteration here, without failing it (the upgrade did not happen, or failed before it):
   * whatever the socket sent or sends from now on is dropped, and the socket is left to the caller.
   */
  stop(): void {
    if (this.queue.isEnded) return
    this.queue.drop()
    if (this.socket.isPaused()) this.socket.resume()
  }

  /** What the socket sent and the mesh has not taken yet counts in `pool` from now on, until leavePool. */
  countIn(pool: UnreadPool): void {
    this.queue.countIn(pool)
  }

  /** Its bytes no longer count in the pool (its socket closed: they go when the reader does). */
  leavePool(): void {
    this.queue.leavePool()
  }

  /** Ends the iteration with `error`, after what is queued: the tunnel was ended here, its reader learns why. */
  fail(error: Error): void {
    this.queue.fail(error)
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return this.queue[Symbol.asyncIterator]()
  }

  private push(chunk: Buffer): void {
    if (this.queue.isEnded) return
    this.bytes += chunk.length
    this.queue.push(chunk)
  }
}

/**
 * Writes a mesh stream to a socket, waiting for it to drain, then ends the socket's writing side
 * (the other direction may go on: half-close). A stream that fails, or a socket that goes away,
 * destroys the socket. Returns the bytes written.
 */
export const pipeToSocket = async (stream: AsyncIterable<Uint8Array>, socket: net.Socket): Promise<number> => {
  let bytes = 0
  try {
    for await (const chunk of stream) {
      if (socket.destroyed) return bytes
      bytes += chunk.length
      if (!socket.write(chunk)) await drainedOrClosed(socket)
    }
    if (!socket.destroyed) socket.end()
  } catch {
    socket.destroy()
  }
  return bytes
}

