// The read side of a TCP or TLS connection in reused memory. Node's default read path allocates a
// fresh buffer per read; at stream speeds that is hundreds of MB/s of external (ArrayBuffer)
// memory, and V8 answers every ~64 MB of it that no scavenge freed with a full mark-compact (tens
// a second, each a few ms of stopped event loop). Here the socket reads into slabs: each read goes
// into the unused end of the current slab, and a slab whose bytes nobody holds any more goes back
// to a free list the whole process shares, to be read into again.
//
// Who holds a slab's bytes: a stream chunk the connection hands on as a view takes a reference
// (`ref`, given back with `unref` once its consumer released it: streams.ts, leased reads); any
// other view that escapes (a whole packet handed to a session, path pieces the decoder keeps across
// reads, a chunk handed out through the plain async iterator) `taint`s the slab, which is then
// never reused and left to the garbage collector like one of Node's own read buffers. A consumer
// that never gives its references back only costs what Node's default path costs: the slab is
// collected once unreachable (the free list holds no slab in use).
//
// Node offers this as the `onread` option of `net.connect` (a buffer, or a function returning the
// next one), but not for the sockets a `net.Server` accepts; the same switch is made here on an
// existing socket through the private fields `onread` sets and the handle's `useUserBuffer`, found
// by feature detection. A TLS socket switches alike: its handle is node's TLS layer, whose reads
// copy each decrypted record (up to 16 KiB) into the buffer the listener gives (TLSWrap::ClearOut),
// so a slab takes the records as a TCP handle's reads, where Node's path allocates a buffer per
// record. A socket where the fields are missing (another Node), any other stream, or a socket
// holding bytes already read keeps Node's path.
import * as net from "node:net"

/** Bytes per slab: Node's own read size, so a read into a fresh slab is as large as Node's. */
export const slabBytes = 64 * 1024
/** A slab with less room than this left is retired from reading (reads stay large). */
const minReadBytes = 16 * 1024

/** Free slabs the process keeps for reuse, in bytes, all connections together (setReadSlabPoolBytes). */
let poolLimitBytes = 8 * 1024 * 1024
const freeSlabs: Array<Slab> = []

/** Slabs made and reused so far, process-wide (tests and the bench read them). */
export const slabCounts = { made: 0, reused: 0 }

/** Sets how many bytes of free slabs the process keeps (the rest is left to the collector). */
export const setReadSlabPoolBytes = (bytes: number): void => {
  poolLimitBytes = Math.max(0, bytes)
  while (freeSlabs.length * slabBytes > poolLimitBytes) freeSlabs.pop()
}

/**
 * Lets go of every free slab; the bytes let go. The idle release calls it before its collection
 * (src/cli/memoryRelease.ts): a burst over many connections leaves up to the pool's bound of free
 * slabs (a closed connection's slab goes back to it), held for good by a process with nothing to
 * read; the next load fills the pool again.
 */
export const emptyReadSlabPool = (): number => {
  const bytes = freeSlabs.length * slabBytes
  freeSlabs.length = 0
  return bytes
}

/** Free slabs now in the process's pool. */
export const freeSlabCount = (): number => freeSlabs.length

export class Slab {
  readonly buffer: Buffer
  /** Bytes read into it so far; the next read goes after them. */
  used = 0
  /** References of stream chunks not yet released. */
  private refs = 0
  /** A view escaped that nobody will give back: never reused. */
  private tainted = false
  /** No more reads go into it: back to the pool once its references are all released. */
  private retired = false

  constructor(buffer: Buffer) {
    this.buffer = buffer
  }

  ref(): void {
    this.refs++
  }

  unref(): void {
    if (--this.refs === 0 && this.retired) this.recycle()
  }

  taint(): void {
    this.tainted = true
  }

  /** The reader is done with it: reusable as soon as nothing holds it. */
  retire(): void {
    this.retired = true
    if (this.refs === 0) this.recycle()
  }

  /** Stream chunks not yet released lie in it. */
  get referenced(): boolean {
    return this.refs > 0
  }

  /** Whether it can be read into again from its start right now (nothing holds any of it). */
  get free(): boolean {
    return this.refs === 0 && !this.tainted
  }

  private recycle(): void {
    if (this.tainted || freeSlabs.length * slabBytes >= poolLimitBytes) return
    this.used = 0
    this.retired = false
    freeSlabs.push(this)
  }
}

const takeSlab = (): Slab => {
  const slab = freeSlabs.pop()
  if (slab !== undefined) {
    slabCounts.reused++
    return slab
  }
  slabCounts.made++
  return new Slab(Buffer.allocUnsafeSlow(slabBytes))
}

/** Bytes of one read and the slab they lie in, valid as long as the slab is referenced (or tainted). */
export type SlabRead = (chunk: Buffer, slab: Slab) => void

interface UserBufferHandle {
  useUserBuffer(buffer: Uint8Array): void
}

const ownSymbol = (target: object, description: string): symbol | undefined =>
  Object.getOwnPropertySymbols(target).find((symbol) => symbol.description === description)

/**
 * Makes `socket` deliver what it reads to `onRead` as views of slabs instead of as 'data' events.
 * True when switched; false when the socket keeps its 'data' events (the caller listens to those
 * then). Call before anything was read: right after accept or connect.
 */
export const readIntoSlabs = (socket: object, onRead: SlabRead): boolean => {
  if (!(socket instanceof net.Socket)) return false
  // Bytes already read (a sniffed first byte put back) must come first, as 'data'.
  if (socket.readableLength > 0 || socket.destroyed) return false
  const handle = (socket as unknown as { readonly _handle?: Partial<UserBufferHandle> | null })._handle
  const bufferField = ownSymbol(socket, "kBuffer")
  const callbackField = ownSymbol(socket, "kBufferCb")
  const generatorField = ownSymbol(socket, "kBufferGen")
  if (handle == null || typeof handle.useUserBuffer !== "function" || bufferField === undefined || callbackField === undefined || generatorField === undefined) {
    return false
  }
  const fields = socket as unknown as Record<symbol, unknown>
  // Already reading into a buffer of its own (net.connect with `onread`): leave it alone.
  if (fields[bufferField] != null) return false
  let slab = takeSlab()
  let next: Buffer = slab.buffer
  fields[bufferField] = next
  fields[callbackField] = (bytes: number): boolean => {
    const start = slab.used
    slab.used += bytes
    onRead(slab.buffer.subarray(start, start + bytes), slab)
    // The next read: the rest of this slab while it is large enough, else the slab from its start
    // if nothing holds it, else a free one.
    if (slab.buffer.length - slab.used < minReadBytes) {
      if (slab.free) slab.used = 0
      else {
        slab.retire()
        slab = takeSlab()
      }
    }
    next = slab.buffer.subarray(slab.used)
    // Pausing is the connection's own business (socket.pause() stops the handle's reads).
    return true
  }
  // Node asks for the next read's buffer right after the callback: the one it chose.
  fields[generatorField] = () => next
  handle.useUserBuffer(next)
  // Closed: the slab being read into goes back to the pool once nothing holds it.
  socket.once("close", () => slab.retire())
  return true
}
