// Disk helpers shared by the file server (server.ts) and the transfer clients (download.ts,
// upload.ts): the SHA-256 of a file's first bytes, and positional reads and writes that loop until
// they are whole.
import { createHash, type Hash } from "node:crypto"
import type { FileHandle } from "node:fs/promises"

/** What hashPrefix reads at a time. */
export const hashBlockBytes = 1024 * 1024

/**
 * Lends `use` a block to read through, for one read. The file server lends one of a few, in turn
 * (server.ts); a transfer client reads through a block of its own.
 */
export type BlockLender = <A>(use: (block: Buffer) => Promise<A>) => Promise<A>

const ownBlock = (length: number): BlockLender => {
  const block = Buffer.allocUnsafe(Math.min(hashBlockBytes, Math.max(1, length)))
  return (use) => use(block)
}

/**
 * SHA-256 state after the first `length` bytes (fewer if the file is shorter), to digest or extend.
 * Once `signal` aborts (the file server's caller is gone) it rejects with its reason before the next block.
 */
export const hashPrefix = async (handle: FileHandle, length: number, lend: BlockLender = ownBlock(length), signal?: AbortSignal): Promise<Hash> => {
  const hash = createHash("sha256")
  for (let position = 0; position < length;) {
    const bytesRead = await lend(async (block) => {
      // Checked once lent: a checksum may have waited its turn for a block (server.ts) meanwhile.
      signal?.throwIfAborted()
      const { bytesRead } = await handle.read(block, 0, Math.min(block.length, length - position), position)
      hash.update(block.subarray(0, bytesRead))
      return bytesRead
    })
    if (bytesRead === 0) break
    position += bytesRead
  }
  return hash
}

/** Reads up to `into.length` bytes at `position`; fewer only at the end of the file. */
export const readAt = async (handle: FileHandle, into: Buffer, position: number): Promise<number> => {
  let filled = 0
  while (filled < into.length) {
    const { bytesRead } = await handle.read(into, filled, into.length - filled, position + filled)
    if (bytesRead === 0) break
    filled += bytesRead
  }
  return filled
}

export const writeAt = async (handle: FileHandle, bytes: Uint8Array, position: number): Promise<void> => {
  for (let written = 0; written < bytes.length;) {
    const { bytesWritten } = await handle.write(bytes, written, bytes.length - written, position + written)
    written += bytesWritten
  }
}
