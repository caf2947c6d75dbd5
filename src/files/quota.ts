// How many bytes the file server's root holds, against its quota (server.ts asks before every
// upload request writes). Measured once when the server starts, by walking the root (regular
// files' sizes; symlinks not followed, unreadable directories skipped), then kept up to date with
// what the server itself writes, so the check costs nothing per request. What other processes
// change under the root is seen at the next start.
import { lstat, readdir } from "node:fs/promises"
import { join } from "node:path"

/** The bytes under `root`: every regular file's size, without following symlinks. */
export const measureRoot = async (root: string): Promise<number> => {
  let total = 0
  const pending = [root]
  for (let dir = pending.pop(); dir !== undefined; dir = pending.pop()) {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => [])
    for (const entry of entries) {
      const path = join(dir, entry.name)
      if (entry.isDirectory()) pending.push(path)
      else if (entry.isFile()) total += (await lstat(path).catch(() => undefined))?.size ?? 0
    }
  }
  return total
}

/** The root's usage as the server keeps it; `reserve` before writing, `settle` with what happened. */
export class RootUsage {
  readonly quotaBytes: number
  private used: number

  constructor(quotaBytes: number, measured: number) {
    this.quotaBytes = quotaBytes
    this.used = measured
  }

  get bytes(): number {
    return this.used
  }

  /**
   * Takes `bytes` more (nothing when the write shrinks a file) if they fit; undefined when they do
   * not. What it returns goes to `settle`.
   */
  reserve(bytes: number): number | undefined {
    const wanted = Math.max(0, bytes)
    if (this.used + wanted > this.quotaBytes) return undefined
    this.used += wanted
    return wanted
  }

  /** Replaces a reservation with the change the write really made (negative when it shrank a file). */
  settle(reserved: number, changed: number): void {
    this.used = Math.max(0, this.used - reserved + changed)
  }

  /** A file the server replaced or removed. */
  freed(bytes: number): void {
    this.used = Math.max(0, this.used - bytes)
  }
}
