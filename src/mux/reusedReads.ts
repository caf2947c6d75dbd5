// The read side of a plain TCP connection without an allocation per read: the socket reads into
// one buffer the process reuses for every such connection, and the connection's decoder copies
// out what it keeps before the callback returns (decoder.ts, `borrowed`). Node's default read path
// allocates a fresh buffer per read; at stream speeds that is hundreds of MB/s of short-lived
// external memory, which V8 answers with full mark-compacts (tens per second, each a few ms of
// stopped event loop) long before the young generation fills.
//
// Node offers this as the `onread` option of `net.connect` and `new net.Socket`, but not for the
// sockets a `net.Server` accepts; the same switch is made here on an existing socket, through the
// two private fields `onread` sets and the handle's `useUserBuffer`, found by feature detection.
// A socket where they are missing (another Node), a TLS socket (its handle is the TLS layer), any
// other stream, or a socket holding bytes already read keeps Node's default path.
import * as net from "node:net"
import * as tls from "node:tls"

/** Bytes per read: Node's own default read size. One buffer for the whole process. */
const readBufferBytes = 64 * 1024

let sharedReadBuffer: Buffer | undefined

/** The bytes of one read, valid only until the callback returns. */
export type BorrowedRead = (chunk: Buffer) => void

interface UserBufferHandle {
  useUserBuffer(buffer: Uint8Array): void
}

const ownSymbol = (target: object, description: string): symbol | undefined =>
  Object.getOwnPropertySymbols(target).find((symbol) => symbol.description === description)

/**
 * Makes `socket` deliver what it reads to `onRead` as a view of the shared read buffer instead of
 * as 'data' events. True when switched; false when the socket keeps its 'data' events (the caller
 * listens to those then). Call before anything was read: right after accept or connect.
 */
export const readIntoSharedBuffer = (socket: object, onRead: BorrowedRead): boolean => {
  if (!(socket instanceof net.Socket) || socket instanceof tls.TLSSocket) return false
  // Bytes already read (a sniffed first byte put back) must come first, as 'data'.
  if (socket.readableLength > 0 || socket.destroyed) return false
  const handle = (socket as unknown as { readonly _handle?: Partial<UserBufferHandle> | null })._handle
  const bufferField = ownSymbol(socket, "kBuffer")
  const callbackField = ownSymbol(socket, "kBufferCb")
  if (handle == null || typeof handle.useUserBuffer !== "function" || bufferField === undefined || callbackField === undefined) return false
  const fields = socket as unknown as Record<symbol, unknown>
  // Already reading into a buffer of its own (net.connect with `onread`): leave it alone.
  if (fields[bufferField] != null) return false
  const buffer = (sharedReadBuffer ??= Buffer.allocUnsafe(readBufferBytes))
  fields[bufferField] = buffer
  fields[callbackField] = (bytes: number, into: Uint8Array): boolean => {
    onRead((into as Buffer).subarray(0, bytes))
    // Pausing is the connection's own business (socket.pause() stops the handle's reads).
    return true
  }
  handle.useUserBuffer(buffer)
  return true
}
