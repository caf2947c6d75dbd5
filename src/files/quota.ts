// How much the file server's root holds, against its quota (server.ts asks before every upload
// request writes): bytes, and entries (files and directories, each an inode: millions of empty
// files exhaust a file system the byte quota calls nearly empty). Measured once when the server
// starts, by walking the root (regular files' sizes; symlinks not followed, unreadable directories
// skipped), then kept up to date with what the server itself writes, creates and removes, so the
// check costs nothing per request. What other processes change under the root is seen at the next
// start. The walk also lists the unfinished uploads it finds, for their expiry (unfinished.ts).
import { lstat, readdir } from "node:fs/promises"
import { join } from "node:path"
import { partialSuffix } from "./paths.ts"

export interface Measured {
  readonly bytes: number
  /** Files, directories and anything else under the root (the root itself not counted). */
  readonly entries: number
  /** The unfinished uploads (regular files named `*.iip-part`), when each was last modified and its size. */
  readonly partials: ReadonlyArray<{ readonly path: string; readonly modifiedMs: number; readonly bytes: number }>
}

/** What lies under `root`, without following symlinks. */
export const measureRoot = async (root: string): Promise<Measured> => {
  let bytes = 0
  let entries = 0
  const partials: Array<{ path: string; modifiedMs: number; bytes: number }> = []
  const pending = [root]
  for (let dir = pending.pop(); dir !== undefined; dir = pending.pop()) {
    const found = await readdir(dir, { withFileTypes: true }).catch(() => [])
    entries += found.length
    for (const entry of found) {
      const path = join(dir, entry.name)
      if (entry.isDirectory()) pending.push(path)
      else if (entry.isFile()) {
        const stats = await lstat(path).catch(() => undefined)
        if (stats === undefined) continue
        bytes += stats.size
        if (entry.name.endsWith(partialSuffix)) partials.push({ path, modifiedMs: stats.mtimeMs, bytes: stats.size })
      }
    }
  }
  return { bytes, entries, partials }
}

/**
 * The root's usage as the server keeps it: `reserve` bytes before writing and `settle` with what
 * happened; `takeEntry` before creating a file or directory; `removed` for what went away.
 */
export class RootUsage {
  readonly quotaBytes: number
  readonly maxEntries: number
  private used: number
  private entryCount: number

  constructor(quotaBytes: number, maxEntries: number, measured: Pick<Measured, "bytes" | "entries">) {
    this.quotaBytes = quotaBytes
    this.maxEntries = maxEntries
    this.used = measured.bytes
    this.entryCount = measured.entries
  }

  get bytes(): number {
    return this.used
  }

  get entries(): number {
    return this.entryCount
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

  /** Takes one entry for a file or directory about to be created, if it fits. */
  takeEntry(): boolean {
    if (this.entryCount >= this.maxEntries) return false
    this.entryCount++
    return true
  }

  /** Files or directories (and their bytes) the server removed or replaced, or an entry taken and not created. */
  removed(bytes: number, entries: number): void {
    this.used = Math.max(0, this.used - bytes)
    this.entryCount = Math.max(0, this.entryCount - entries)
  }
}
