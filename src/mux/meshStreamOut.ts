// The sending half of mesh-mode streams (PROTOCOL.md §12-§13), owned by a MeshSession's calling
// side (meshCalls.ts) and shared with its serving side (meshServing.ts): a request body or an
// answer too large for one packet goes out here as continuation packets of at most one chunk,
// each within the peer's window (a SendWindow the session registers on the channel, so the peer's
// grants reach it), within the connection credit where the peer grants one (meshCredit.ts), and
// behind a congested writer, and ends with an empty chunk, its trailers, or
// the error that stopped it.
import type { Compression } from "../protocol/compression.ts"
import { ChunkHeader, encodeErrorBody, encodeTrailersChunk, MeshDefaults, MeshErrorCode } from "../protocol/mesh.ts"
import { MetaEntries } from "../protocol/metaEntries.ts"
import type { Connection } from "./connection.ts"
import type { ConnectionClosed } from "./errors.ts"
import type { CreditWindow } from "./meshCredit.ts"
import { RemoteError } from "./meshChannels.ts"
import { failure } from "./request.ts"
import { IncomingStream, LeasedChunk, SendWindow, type WindowedBody, type WithTrailers } from "./streams.ts"

/** A stream's last packet when it carries nothing: an empty data chunk. */
export const lastChunk = Buffer.of(ChunkHeader.data)

async function* once(body: Uint8Array): AsyncIterable<Uint8Array> {
  yield body
}

export class StreamSender {
  private readonly connection: Connection
  /** The peer's stream window (its hello): what may be sent before its first grant. */
  private readonly streamWindow: number
  private readonly maxMetaBytes: number
  /** Both hellos named `trailers`: a streamed body may end with metadata (§13). */
  readonly trailersAgreed: boolean
  private readonly compression: Compression | undefined
  /** The session's listeners for the connection's close: a stream's window closes with it. */
  private readonly closeListeners: Array<(error: ConnectionClosed) => void>
  /** The peer's connection credit (§13 `conncredit`), undefined where it grants none: every chunk takes from it too. */
  private readonly credit: CreditWindow | undefined

  constructor(
    connection: Connection,
    streamWindow: number,
    maxMetaBytes: number,
    trailersAgreed: boolean,
    compression: Compression | undefined,
    closeListeners: Array<(error: ConnectionClosed) => void>,
    credit: CreditWindow | undefined
  ) {
    this.connection = connection
    this.streamWindow = streamWindow
    this.maxMetaBytes = maxMetaBytes
    this.trailersAgreed = trailersAgreed
    this.compression = compression
    this.closeListeners = closeListeners
    this.credit = credit
  }

  /** Sends a body as continuation packets of at most one chunk, within the peer's window. */
  async send(
    channelId: number,
    path: string,
    more: number,
    last: number,
    body: Uint8Array | AsyncIterable<Uint8Array>,
    register: (window: SendWindow | undefined) => void
  ): Promise<void> {
    const window = new SendWindow(this.streamWindow)
    register(window)
    // A body that may be ended ahead of its bytes (an answer taken back at the inbound sidecar) closes the window itself.
    if (!(body instanceof Uint8Array) && "sendingOn" in body) (body as WindowedBody).sendingOn(window)
    const closeWindow = (error: ConnectionClosed) => window.close(error)
    this.closeListeners.push(closeWindow)
    const packer = this.compression?.streamPacker()
    // The lease being sent: given up (its memory never reused) if sending stops part-way, since the
    // writer or the socket may still hold views of its first pieces.
    let sending: LeasedChunk | undefined
    try {
      // A relayed stream is read as leases, each released once the socket took its last piece:
      // the memory it was read into is read into again (readSlabs.ts).
      const source = body instanceof Uint8Array ? once(body) : body instanceof IncomingStream ? body.leased() : body
      for await (const item of source) {
        const lease = item instanceof LeasedChunk ? item : undefined
        const piece = lease === undefined ? (item as Uint8Array) : lease.bytes
        let offset = 0
        sending = lease
        if (lease !== undefined && piece.length === 0) lease.release()
        while (offset < piece.length) {
          const want = Math.min(MeshDefaults.chunkBytes, piece.length - offset)
          // Await only when there is a reason to: no credit, or a congested writer.
          let size = window.takeNow(want) || (await window.take(want))
          const credit = this.credit
          if (credit !== undefined) {
            let taken = credit.takeNow(size)
            while (taken === 0) {
              // Interrupted (an error answer, the connection closed) while it waits: it stops, as `take` does.
              const closed = window.closedError
              if (closed !== undefined) throw closed
              await credit.waitWith(window, size)
              // Woken by the close, with credit granted in the same read: no chunk goes after the
              // cancel, and the turn a grant may have given it passes to the next stream waiting
              // (a grant wakes only as many as its room serves: CreditWindow.add).
              if (window.closedError === undefined) taken = credit.takeNow(size)
              else credit.add(0)
            }
            // The stream's credit not covered by the connection's stays the stream's.
            if (taken < size) window.add(size - taken)
            size = taken
          }
          const writer = this.connection.writer
          if (writer.congested) await new Promise<void>((resolve) => writer.whenWritable(resolve))
          if (this.connection.closed) return
          const raw = piece.subarray(offset, offset + size)
          const packed = packer?.pack(raw)
          offset += size
          const release = lease !== undefined && offset === piece.length ? lease.release.bind(lease) : undefined
          // Bulk, by reference: the writer serves it in turn with other channels' chunks, after small packets.
          if (packed === undefined) writer.sendChunk(more, path, channelId, ChunkHeader.data, raw, release)
          else {
            writer.sendChunk(more, path, channelId, ChunkHeader.compressed, packed)
            release?.()
          }
          if (release !== undefined) sending = undefined
        }
      }
      // Interrupted (cancel, deadline, a tunnel ended) while its body ended anyway: it ends with the error.
      const interrupted = window.closedError
      if (interrupted !== undefined) throw interrupted
      if (!this.connection.closed) this.connection.writer.send(last, path, channelId, this.closingChunk(body))
    } catch (thrown) {
      if (this.connection.closed) return
      // An interrupted answer whose body then failed (a tunnel's app socket closed by the cancel) ends with why it was interrupted.
      const error = window.closedError ?? thrown
      const abort = encodeErrorBody(
        error instanceof RemoteError ? error : failure(MeshErrorCode.handlerFailed, error instanceof Error ? error.message : String(error), true)
      )
      this.connection.writer.send(last, path, channelId, Buffer.concat([Buffer.of(ChunkHeader.error), abort]))
    } finally {
      sending?.abandon()
      register(undefined)
      const index = this.closeListeners.indexOf(closeWindow)
      if (index !== -1) this.closeListeners.splice(index, 1)
    }
  }

  /** A stream's last packet: empty, or its trailers (§13) when the body has some and the peer reads them. */
  private closingChunk(body: Uint8Array | AsyncIterable<Uint8Array>): Buffer {
    // A Meta as this library makes them (a Map, or a MetaEntries: what an envelope's metadata
    // decodes into), not any `trailers` field: node's IncomingMessage has one of its own (a plain object).
    const trailers = body instanceof Uint8Array ? undefined : (body as Partial<WithTrailers>).trailers
    return !(trailers instanceof Map || trailers instanceof MetaEntries) || trailers.size === 0 || !this.trailersAgreed ? lastChunk : encodeTrailersChunk(trailers, this.maxMetaBytes)
  }
}
