// The byte pipes of an upgraded connection (WebSocket and other HTTP/1.1 upgrades, PROTOCOL.md
// §17.4), used on both sides: the outbound sidecar between the calling app's socket and the mesh
// stream, the inbound sidecar between the mesh stream and its app's socket. Bytes are opaque
// (WebSocket frames, close frames included, pass as they are). Back-pressure both ways: a socket
// is paused while more than a window of what it sent waits unread by the mesh; a mesh stream is
// read only as fast as the socket drains.
import type * as net from "node:net"
import { StreamFailed } from "../mux/streams.ts"

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
  private readonly chunks: Array<Buffer> = []
  private queued = 0
  private ended = false
  private failure: Error | undefined = undefined
  private wake: (() => void) | undefined = undefined

  constructor(socket: net.Socket, first: Buffer) {
    this.socket = socket
    if (first.length > 0) this.push(first)
    socket.on("data", (chunk: Buffer) => this.push(chunk))
    socket.on("end", () => {
      this.ended = true
      this.notify()
    })
    socket.on("close", () => this.fail(new StreamFailed({ message: "the connection closed" })))
  }

  /**
   * Ends the iteration here, without failing it (the upgrade did not happen, or failed before it):
   * whatever the socket sent or sends from now on is dropped, and the socket is left to the caller.
   */
  stop(): void {
    if (this.ended) return
    this.ended = true
    this.chunks.length = 0
    this.queued = 0
    if (this.socket.isPaused()) this.socket.resume()
    this.notify()
  }

  private fail(error: Error): void {
    if (this.ended) return
    this.ended = true
    this.failure = error
    this.notify()
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    let complete = false
    try {
      for (;;) {
        const chunk = this.chunks.shift()
        if (chunk !== undefined) {
          this.queued -= chunk.length
          if (this.queued <= HIGH_WATER / 2 && this.socket.isPaused() && !this.ended) this.socket.resume()
          yield chunk
          continue
        }
        if (this.failure !== undefined) throw this.failure
        if (this.ended) {
          complete = true
          return
        }
        await new Promise<void>((resolve) => (this.wake = resolve))
      }
    } finally {
      // Who owns the socket closes it; this only stops holding its bytes.
      if (!complete) this.stop()
    }
  }

  private push(chunk: Buffer): void {
    if (this.ended) return
    this.bytes += chunk.length
    this.chunks.push(chunk)
    this.queued += chunk.length
    if (this.queued > HIGH_WATER) this.socket.pause()
    this.notify()
  }

  private notify(): void {
    const wake = this.wake
    this.wake = undefined
    wake?.()
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
      if (!socket.write(chunk)) await drained(socket)
    }
    if (!socket.destroyed) socket.end()
  } catch {
    socket.destroy()
  }
  return bytes
}

const drained = (socket: net.Socket): Promise<void> =>
  new Promise((resolve) => {
    const done = () => {
      socket.off("drain", done)
      socket.off("close", done)
      resolve()
    }
    socket.on("drain", done)
    socket.on("close", done)
  })
