// Stream bodies for the read-memory tests (test/iip/leased-reads*.test.ts): bytes that never
// repeat a stretch (so a chunk overwritten by a later read is caught at its offset), their hash,
// and a handler body that reads a stream as leases and answers its length and hash.
import { createHash } from "node:crypto"
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

/** The first offset where `bytes` (starting at body offset `at`) differ from the body, or -1. */
export const firstWrong = (bytes: Uint8Array, at: number): number => {
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== byteAt(at + i)) return i
  return -1
}
