// Stream bodies for the read-memory tests (test/iip/*leased-reads.test.ts): bytes that never
// repeat a stretch (so a chunk overwritten by a later read is caught at its offset), their hash,
// 1 KiB request bodies numbered by their offset, and handler bodies that read a stream as leases
// (answering its length and hash) or keep its chunks.
import { createHash } from "node:crypto"
import type { IipClient } from "../../src/iip/client.ts"
import { slabCounts } from "../../src/mux/readSlabs.ts"
import type { IncomingStream } from "../../src/mux/streams.ts"

export const KiB = 1024
export const MiB = 1024 * KiB

/** Reads a body as leases, hashing each and releasing it at once: its length and sha256, as JSON. */
export const hashLeases = async (stream: IncomingStream): Promise<string> => {
  const hash = createHash("sha256")
  let bytes = 0
  for await (const lease of stream.leased()) {
    hash.update(lease.bytes)
    bytes += lease.bytes.length
    lease.release()
  }
  return JSON.stringify({ bytes, sha256: hash.digest("hex") })
}

/**
 * Streams `total` bytes of the test body to `path` (a relay: the answer is the request's own
 * stream) and reads the answer as leases: its length and hash, and the slabs the process made and
 * reused meanwhile (readSlabs.ts).
 */
export const relayed = async (client: IipClient, path: string, total: number): Promise<{ readonly echoed: unknown; readonly made: number; readonly reused: number }> => {
  const before = { ...slabCounts }
  const answer = await client.stream(path, body(total), { timeoutMs: 0 })
  const echoed: unknown = JSON.parse(await hashLeases(answer.stream!))
  return { echoed, made: slabCounts.made - before.made, reused: slabCounts.reused - before.reused }
}

/** The byte at absolute offset `o` of a test body: a hash of the offset, so no stretch repeats another. */
export const byteAt = (o: number): number => {
  let x = Math.imul((o >>> 2) ^ 0x9e3779b9, 0x85ebca6b)
  x ^= x >>> 13
  x = Math.imul(x, 0xc2b2ae35)
  x ^= x >>> 16
  return (x >>> ((o & 3) * 8)) & 0xff
}

/** `total` bytes of the test body in pieces of `piece` bytes (each a fresh buffer). */
export async function* body(total: number, piece = MiB): AsyncGenerator<Buffer> {
  for (let at = 0; at < total; at += piece) {
    const out = Buffer.allocUnsafe(Math.min(piece, total - at))
    for (let i = 0; i < out.length; i++) out[i] = byteAt(at + i)
    yield out
  }
}

export const sha256Of = async (total: number): Promise<string> => {
  const hash = createHash("sha256")
  for await (const piece of body(total)) hash.update(piece)
  return hash.digest("hex")
}

/** A 1 KiB request body that says where it belongs: 4 bytes naming a body offset, then the body's bytes from there on. */
export const numberedPiece = (at: number): Buffer => {
  const piece = Buffer.alloc(KiB)
  piece.writeUInt32BE(at, 0)
  for (let j = 4; j < KiB; j++) piece[j] = byteAt(at + j)
  return piece
}

/** A chunk a consumer holds on to, with the body offset it started at. */
export interface Held {
  readonly bytes: Buffer
  readonly at: number
}

/** Reads a stream from its async iterator, keeping every chunk (views of the reads) in `kept`; answers the byte count. */
export const keepChunks = async (stream: IncomingStream, kept: Array<Held>): Promise<string> => {
  let at = 0
  for await (const chunk of stream) {
    kept.push({ bytes: chunk, at })
    at += chunk.length
  }
  return String(at)
}

/** The first offset where `bytes` (starting at body offset `at`) differ from the body, or -1. */
export const firstWrong = (bytes: Uint8Array, at: number): number => {
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== byteAt(at + i)) return i
  return -1
}
