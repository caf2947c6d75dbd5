// The file server's handlers, on an IipServer in plain IIP mode (`iip-mesh file-server`, or any
// program that calls serveFiles): `/download_file` and `/upload_file` exactly as the Go examples
// answer them (iip-protocol.md §11.2, §11.3), confined to one root (paths.ts), plus `/file_checksum`
// (wire.ts). An upload grows in `<name>.iip-part`, written at the offset each request names, and
// becomes `<name>` when the request marked Completed arrives; a restarted server resumes from it.
// A failure answers the reference's handler-fail body, its message naming the path as asked.
// Uploads are held to a per-file cap and a quota for the whole root, bytes and entries (quota.ts),
// checked before a request writes anything; at most 2,000 uploads are unfinished at once, and one
// not written for a day expires (unfinished.ts). Unfinished uploads may start only within half of
// what finished files leave of the quota; a request that does not fit first removes unfinished
// uploads idle for minutes; if it still does not fit, its own unfinished upload goes too: one that
// cannot grow cannot finish, and holding its bytes starved the others (24 uploads at once into a
// quota for 6 all stopped at their second request, and held it for a day, FILE-TRANSFER.md).
// An unfinished upload is only ever a regular file of the server's own (one link,
// inside the root), so a hard link or symlink planted in the root cannot be written through or
// hashed, and a file opened to be read must still lead inside the root (a directory swapped for a
// symlink after the check); partial files are created, renamed and expired in their directory held
// open (paths.ts openDirectoryInside), never by a path such a swap could redirect. Requests for one
// unfinished upload run one at a time.
import * as Data from "effect/Data"
import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs"
import { type FileHandle, lstat, open, realpath, rename, rmdir, stat, unlink } from "node:fs/promises"
import { basename, dirname } from "node:path"
import { messageOf } from "../iip/log.ts"
import { checkOptions, count, durationMs, type Limits, maxTimerMs } from "../iip/optionLimits.ts"
import type { IipServer } from "../iip/server.ts"
import { type BlockLender, hashBlockBytes, hashPrefix, writeAt } from "./localFiles.ts"
import {
  checkOpenedInside,
  type DirectoryBudget,
  type HeldDirectory,
  isInside,
  openDirectoryInside,
  partialSuffix,
  PathRefused,
  resolveForRead,
  resolveForWrite,
  type WriteTarget
} from "./paths.ts"
import { measureRoot, RootUsage } from "./quota.ts"
import { defaultMaxUnfinishedUploads, defaultPartialIdleMs, defaultPartialMaxAgeMs, sweepUnfinished, UnfinishedUploads } from "./unfinished.ts"
import {
  type ChecksumAnswer,
  type ChecksumRequest,
  decodeChecksumRequest,
  decodeDownloadRequest,
  decodeUploadRequest,
  DownloadFlag,
  downloadChunkBytes,
  encodeChecksumAnswer,
  encodeUploadAnswer,
  FilePath,
  FileRequestInvalid,
  type UploadRequest
} from "./wire.ts"

/** The server cannot do what a well-formed request asks (not a regular file, a gap, too big, an I/O error). */
export class FileRequestRefused extends Data.TaggedError("FileRequestRefused")<{ readonly message: string }> {}

/** The directory given as the root does not exist or is not a directory. */
export class RootUnusable extends Data.TaggedError("RootUnusable")<{ readonly message: string }> {}

export interface FileServerOptions {
  /** Largest file an upload may grow to (default 4 GiB). */
  readonly maxFileBytes?: number
  /** Most bytes the root may hold, unfinished uploads included (default 16 GiB). */
  readonly quotaBytes?: number
  /** Most files and directories the root may hold, unfinished uploads included (default 1,000,000). */
  readonly maxEntries?: number
  /** How long an unfinished upload may go unwritten before it is removed (default a day; 0: never). */
  readonly partialMaxAgeMs?: number
  /**
   * How long an unfinished upload may go unwritten before a request that does not fit the quota
   * removes it (default 10 minutes; 0: never).
   */
  readonly partialIdleMs?: number
  /** Most unfinished uploads at once, those found at start included (default 2,000); a file whole in one request needs no place. */
  readonly maxUnfinishedUploads?: number
}

export const defaultMaxFileBytes = 4 * 2 ** 30
export const defaultQuotaBytes = 16 * 2 ** 30
/** About one per 16 KiB of the default quota, the ratio mkfs.ext4 gives a file system's inodes. */
export const defaultMaxEntries = 1_000_000

/** What each numeric option takes (src/iip/optionLimits.ts). */
const fileServerLimits: Limits<FileServerOptions> = {
  maxFileBytes: count(0),
  quotaBytes: count(0),
  maxEntries: count(1),
  // The sweep runs every eighth of it (unfinished.ts): that must fit a timer.
  partialMaxAgeMs: durationMs(0, 8 * maxTimerMs),
  partialIdleMs: durationMs(0, 8 * maxTimerMs),
  // 0: no resumable uploads, only files whole in one request.
  maxUnfinishedUploads: count(0)
}

/** The real path of `root`, which must be a directory. */
export const openRoot = async (root: string): Promise<string> => {
  const real = await realpath(root).catch((error: NodeJS.ErrnoException) => {
    throw new RootUnusable({ message: `root ${JSON.stringify(root)} cannot be used: ${error.code ?? error.message}` })
  })
  if (!(await stat(real)).isDirectory()) throw new RootUnusable({ message: `root ${JSON.stringify(root)} is not a directory` })
  return real
}

const endOfFile = (): Buffer => Buffer.from([0, 0, 0, DownloadFlag.end])
const emptySha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/**
 * The codes a client's path can meet, said in words: the client cannot see the server's tree, and
 * a bare code does not say which part of its path is wrong.
 */
const inWords: ReadonlyMap<string, string> = new Map([
  ["ELOOP", "a symlink is in the way"],
  ["ENOTDIR", "a file is in the way (a directory of the path is a file)"]
])

/** Our own refusals pass as they are; a file system error is reported by code, without server paths. */
const explain = (what: string, requested: string) => (error: unknown): never => {
  if (error instanceof PathRefused || error instanceof FileRequestInvalid || error instanceof FileRequestRefused) throw error
  const code = (error as NodeJS.ErrnoException).code ?? "internal error"
  throw new FileRequestRefused({ message: `cannot ${what} ${JSON.stringify(requested)}: ${inWords.get(code) ?? code}` })
}

/** Opens a file resolveForRead found, refused unless it is a regular file still inside the root. */
const openRegular = async (root: string, path: string, requested: string): Promise<FileHandle> => {
  // O_NONBLOCK: opening a FIFO must not hang; it is refused as not a regular file.
  const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
  try {
    checkOpenedInside(root, requested, handle.fd)
    if (!(await handle.stat()).isFile()) throw new FileRequestRefused({ message: `${JSON.stringify(requested)} is not a regular file` })
  } catch (error) {
    await handle.close()
    throw error
  }
  return handle
}

/**
 * Opens an unfinished upload, which only the server makes: a regular file with no other link (a
 * hard link planted in the root would lead the writes, or the checksum, to a file elsewhere) that
 * is, once open, still inside the root (a directory swapped for a symlink after the path was
 * checked). Checked on the open descriptor, so nothing can change between check and use.
 */
const openPartial = async (root: string, path: string, flags: number, requested: string): Promise<FileHandle> => {
  const handle = await open(path, flags | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o644)
  const refusal = await partialRefusal(root, handle).catch((error: unknown) => error)
  if (refusal === undefined) return handle
  await handle.close()
  if (typeof refusal === "string") throw new PathRefused({ message: `path refused: ${JSON.stringify(requested)} has an unfinished upload (${partialSuffix}) ${refusal}` })
  throw refusal
}

const partialRefusal = async (root: string, handle: FileHandle): Promise<string | undefined> => {
  const stats = await handle.stat()
  if (!stats.isFile()) return "that is not a regular file"
  if (stats.nlink > 1) return "with other links to it"
  // Where the descriptor really leads (Linux); elsewhere the checks of paths.ts stand alone.
  const real = await realpath(`/proc/self/fd/${handle.fd}`).catch(() => undefined)
  if (real !== undefined && real.startsWith("/") && !isInside(root, real)) return "outside the root"
  return undefined
}

/**
 * Removes `dirs` (outermost first) deepest first, while they are empty (rmdir takes no other), each
 * in its parent held open (not one of the same name a swapped directory leads to); how many went.
 */
const removeEmpty = async (root: string, dirs: ReadonlyArray<string>): Promise<number> => {
  let removed = 0
  for (const dir of dirs.toReversed()) {
    const parent = await openDirectoryInside(root, dirname(dir), dir).catch(() => undefined)
    if (parent === undefined) break
    const gone = await rmdir(parent.at(basename(dir))).then(() => true, () => false).finally(() => parent.handle.close())
    if (!gone) break
    removed++
  }
  return removed
}

/** `run` runs `task` after every earlier task of the same key has finished; `busy`: one is running or waiting. */
const serializer = () => {
  const tails = new Map<string, Promise<unknown>>()
  const busy = (key: string): boolean => tails.has(key)
  const run = <A>(key: string, task: () => Promise<A>): Promise<A> => {
    const previous = tails.get(key) ?? Promise.resolve()
    const result = previous.then(task, task)
    const tail = result.catch(() => {})
    tails.set(key, tail)
    void tail.then(() => {
      if (tails.get(key) === tail) tails.delete(key)
    })
    return result
  }
  return { run, busy }
}

/**
 * Lends each task a block of `bytes` from at most `count`; a task that finds none lent waits, in
 * order. A checksum reads through a 1 MiB block: without the bound, the hundreds of requests a
 * connection may queue (a few bytes each) would hold a MiB each, and reusing the blocks leaves no
 * MiB of garbage per checksum either. Lent for one read at a time (hashPrefix), so a checksum of a
 * small file waits a few reads, not for whole hashes of large files asked before it.
 */
const blockPool = (count: number, bytes: number): BlockLender => {
  const free: Array<Buffer> = []
  let made = 0
  const waiting: Array<(block: Buffer) => void> = []
  return async <A>(task: (block: Buffer) => Promise<A>): Promise<A> => {
    const block = free.pop() ?? (made < count ? (made++, Buffer.allocUnsafe(bytes)) : await new Promise<Buffer>((lent) => waiting.push(lent)))
    try {
      return await task(block)
    } finally {
      const next = waiting.shift()
      if (next === undefined) free.push(block)
      else next(block)
    }
  }
}

/** Blocks the checksums read through at once (the rest wait their turn). */
const hashBlocksAtOnce = 4

/**
 * Registers the three routes on `server`, serving files under `root` (a real path: see openRoot).
 * Throws OptionInvalid (src/iip/optionLimits.ts) for an option out of range, before it registers any.
 */
export const serveFiles = (server: IipServer, root: string, options: FileServerOptions = {}): void => {
  checkOptions("file server", fileServerLimits, options)
  const maxFileBytes = options.maxFileBytes ?? defaultMaxFileBytes
  const quotaBytes = options.quotaBytes ?? defaultQuotaBytes
  const unfinished = new UnfinishedUploads(
    options.partialMaxAgeMs ?? defaultPartialMaxAgeMs,
    options.maxUnfinishedUploads ?? defaultMaxUnfinishedUploads,
    options.partialIdleMs ?? defaultPartialIdleMs
  )
  // Measured in the background: the routes answer at once, an upload waits for the figure.
  const usage = measureRoot(root).then((measured) => {
    for (const { path, modifiedMs, bytes } of measured.partials) unfinished.found(path, modifiedMs, bytes)
    return new RootUsage(quotaBytes, options.maxEntries ?? defaultMaxEntries, measured)
  })
  const onePerUpload = serializer()
  const hashBlocks = blockPool(hashBlocksAtOnce, hashBlockBytes)

  // Synchronous on purpose: a 10 KiB answer costs five file system calls, which take about 40 µs
  // in all when made directly and about 700 µs through the thread pool on these machines.
  const download = (data: Buffer): Buffer => {
    const request = decodeDownloadRequest(data)
    try {
      return readChunk(request.filePath, request.start)
    } catch (error) {
      return explain("read", request.filePath)(error)
    }
  }

  const readChunk = (requested: string, start: number): Buffer => {
    const fd = openSync(resolveForRead(root, requested), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
    try {
      checkOpenedInside(root, requested, fd)
      if (!fstatSync(fd).isFile()) throw new FileRequestRefused({ message: `${JSON.stringify(requested)} is not a regular file` })
      const answer = Buffer.allocUnsafe(4 + downloadChunkBytes)
      const read = readSync(fd, answer, 4, downloadChunkBytes, start)
      if (read === 0) return endOfFile()
      answer.writeUInt32BE(DownloadFlag.more, 0)
      return answer.subarray(0, 4 + read)
    } finally {
      closeSync(fd)
    }
  }

  const upload = async (data: Buffer): Promise<Buffer> => {
    const request = decodeUploadRequest(data)
    await writeChunk(request).catch(explain("write", request.filePath))
    return encodeUploadAnswer(request.taskId, request.content.length)
  }

  // Upload requests under way, and the removal of the directories a refused one created: it runs
  // only when no other upload is under way (one may be about to create its file in them), and
  // requests that arrive meanwhile wait for it.
  let uploadsUnderWay = 0
  let removing: Promise<void> | undefined

  const writeChunk = async (request: UploadRequest): Promise<void> => {
    while (removing !== undefined) await removing
    uploadsUnderWay++
    try {
      await writeChunkCounted(request)
    } finally {
      uploadsUnderWay--
    }
  }

  /** Refused: no room for one more file or directory under the root. */
  const noRoom = (held: RootUsage, requested: string, what: string) =>
    new FileRequestRefused({
      message: `${JSON.stringify(requested)} needs a new ${what}, past this server's limit of ${held.maxEntries} files and directories under its root (${held.entries} held)`
    })

  const writeChunkCounted = async (request: UploadRequest): Promise<void> => {
    const held = await usage
    const directories: DirectoryBudget = {
      take: () => {
        if (!held.takeEntry()) throw noRoom(held, request.filePath, "directory")
      },
      giveBack: () => held.removed(0, 1),
      made: []
    }
    try {
      await writeChunkAt(request, held, (await resolveForWrite(root, request.filePath, directories))!)
    } catch (error) {
      // A refused request leaves no directory behind (each counts against maxEntries), unless
      // another upload is under way (see uploadsUnderWay).
      if (uploadsUnderWay === 1 && directories.made.length > 0) {
        removing = removeEmpty(root, directories.made).then((removed) => held.removed(0, removed)).finally(() => (removing = undefined))
        await removing
      }
      throw error
    }
  }

  const writeChunkAt = (request: UploadRequest, held: RootUsage, where: WriteTarget): Promise<void> =>
    onePerUpload.run(where.partial, async () => {
      // The partial file is created and renamed to its name in its directory held open: by path,
      // a directory on the way swapped for a symlink after resolveForWrite's check would send the
      // create, or the rename of whatever lies at the same names there, outside the root.
      const dir = await openDirectoryInside(root, where.dir, request.filePath)
      try {
        await writeChunkIn(request, held, where, dir)
      } finally {
        await dir.handle.close()
      }
    })

  const writeChunkIn = async (request: UploadRequest, held: RootUsage, where: WriteTarget, dir: HeldDirectory): Promise<void> => {
    const partial = dir.at(where.name + partialSuffix)
    const before = await lstat(partial).catch(() => undefined)
    const sizeBefore = before?.size ?? 0
    /**
     * Refuses a request its upload cannot get past: it cannot finish, so its unfinished upload is
     * removed too (its bytes and entry given back); kept, it held them for the idle time at least,
     * and starved the uploads that can finish.
     */
    const cannotFinish = async (refusal: string, then: string): Promise<never> => {
      if (before === undefined || !(await discard(held, partial, where.partial))) throw new FileRequestRefused({ message: refusal })
      throw new FileRequestRefused({ message: `${refusal}: its unfinished upload (${sizeBefore} bytes) was removed ${then}` })
    }
    const grownTo = request.start + request.content.length
    if (grownTo > maxFileBytes) {
      return cannotFinish(`${JSON.stringify(request.filePath)} would grow to ${grownTo} bytes, past this server's limit of ${maxFileBytes} bytes per file`, "(it cannot finish here)")
    }
    // A new file (only offset 0 starts one) takes an entry, and a place among the unfinished
    // uploads unless it is whole in this request; both given back if it is not made.
    const newFile = before === undefined && request.start === 0
    if (newFile && !request.completed) await startUnfinished(held, request, where.partial)
    const notMade = () => {
      held.removed(0, 1)
      unfinished.forget(where.partial)
    }
    if (newFile && !held.takeEntry()) {
      unfinished.forget(where.partial)
      throw noRoom(held, request.filePath, "file")
    }
    const growth = request.start + request.content.length - sizeBefore
    const reserved = await reclaimIdle(where.partial, () => held.reserve(growth), (freed) => held.bytes - freed + Math.max(0, growth) <= held.quotaBytes)
    if (reserved === undefined) {
      const refusal = `${JSON.stringify(request.filePath)} needs ${growth} more bytes, past this server's quota of ${held.quotaBytes} bytes for its root (${held.bytes} bytes held)`
      if (newFile) notMade()
      return cannotFinish(refusal, "so that uploads which fit can finish; start again at 0 once there is room")
    }
    // A new file whole in this request took no place among the unfinished uploads: one that cannot
    // take its name (a directory of that name made meanwhile by another request, an I/O error)
    // goes again, or it stayed a partial (its entry, its bytes, for a day) past maxUnfinishedUploads.
    const placeless = newFile && request.completed
    let made = false
    try {
      const opened = () => (made = true)
      await writePartial(request, held, { partial, key: where.partial, newFile, notMade, opened }, reserved, sizeBefore)
      if (request.completed) {
        const target = dir.at(where.name)
        const replaced = await lstat(target).catch(() => undefined)
        await rename(partial, target)
        unfinished.forget(where.partial)
        // The file (or symlink) it replaced is gone: its entry, and its bytes.
        if (replaced !== undefined) held.removed(replaced.isFile() ? replaced.size : 0, 1)
      }
    } catch (error) {
      if (placeless && made) await discard(held, partial, where.partial)
      throw error
    }
  }

  /**
   * Takes a place among the unfinished uploads for `partial`, and its first chunk's bytes among
   * theirs, or refuses. Unfinished uploads together may take half of what finished files leave of
   * the quota: the other half is room for them to grow. Without a declared size, uploads started at
   * once each took their first MiB until the quota was full, and none could take its second. One
   * always may, alone. The bytes are counted when the place is taken (no wait between check and
   * count), so uploads starting at once are held to the share together.
   */
  const startUnfinished = async (held: RootUsage, request: UploadRequest, partial: string): Promise<void> => {
    if ((await reclaimIdle(partial, () => unfinished.admit(partial) || undefined, () => true)) === undefined) {
      throw new FileRequestRefused({
        message: `${JSON.stringify(request.filePath)} would be a new unfinished upload, past this server's limit of ${unfinished.maxCount} unfinished uploads (${unfinished.count} held): finish one, or let abandoned ones expire`
      })
    }
    const bytes = request.content.length
    // Removing unfinished uploads lowers their bytes and the root's alike: what finished files leave stays.
    const fits = (freed: number): boolean => {
      const others = unfinished.bytes - freed
      return others <= 0 || others + bytes <= (held.quotaBytes - Math.max(0, held.bytes - unfinished.bytes)) / 2
    }
    const withinShare = (): true | undefined => {
      if (!fits(0)) return undefined
      unfinished.sized(partial, bytes)
      return true
    }
    if ((await reclaimIdle(partial, withinShare, fits)) === undefined) {
      unfinished.forget(partial)
      throw new FileRequestRefused({
        message: `${JSON.stringify(request.filePath)} would start an unfinished upload of ${bytes} bytes while unfinished uploads hold ${unfinished.bytes}, ` +
          `past half of what finished files leave of this server's quota of ${held.quotaBytes} bytes for its root (${held.bytes} bytes held): uploads under way finish first; try again later`
      })
    }
  }

  /**
   * `attempt`'s result, once it has one: at once, or after removing unfinished uploads idle for
   * `partialIdleMs`, oldest first, one by one; undefined when none is left. Runs in the turn of
   * `own`'s upload; one whose upload has a request running or waiting is written again soon, and
   * waiting for its turn here could wait for this one. Their clients are told at their next request
   * (nothing to continue: start at 0). None is removed unless `enough` says their bytes all
   * together would make `attempt` succeed: removed for a request that still does not fit (one larger
   * than the room they hold), they were lost for nothing.
   */
  const reclaimIdle = async <A>(own: string, attempt: () => A | undefined, enough: (freedBytes: number) => boolean): Promise<A | undefined> => {
    const first = attempt()
    if (first !== undefined) return first
    const takeable = unfinished.idle().filter((partial) => partial !== own && !onePerUpload.busy(partial))
    if (takeable.length === 0 || !enough(takeable.reduce((sum, partial) => sum + unfinished.bytesOf(partial), 0))) return undefined
    for (const partial of takeable) {
      // A request for it may have come while an earlier one was removed.
      if (onePerUpload.busy(partial)) continue
      await expire(partial)
      const result = attempt()
      if (result !== undefined) return result
    }
    return undefined
  }

  /**
   * Writes the request's chunk into its partial file (`file.partial`: reached in its directory
   * held open; `file.key`: its upload's key) and settles the bytes reserved for it. Calls
   * `file.opened` once the file is open (made, when new), before anything else can fail.
   */
  const writePartial = async (
    request: UploadRequest,
    held: RootUsage,
    file: { readonly partial: string; readonly key: string; readonly newFile: boolean; readonly notMade: () => void; readonly opened: () => void },
    reserved: number,
    sizeBefore: number
  ): Promise<void> => {
    let sizeAfter = sizeBefore
    let handle: FileHandle | undefined
    try {
      // Only the first request (offset 0) starts a file; a later one continues one that exists.
      // No O_TRUNC: the checks come first; what lies beyond the chunk is cut after the write.
      handle = await openPartial(root, file.partial, constants.O_WRONLY | (request.start === 0 ? constants.O_CREAT : 0), request.filePath).catch(
        (error: NodeJS.ErrnoException) => {
          if (file.newFile) file.notMade()
          if (error.code !== "ENOENT") throw error
          throw new FileRequestRefused({ message: `no unfinished upload of ${JSON.stringify(request.filePath)} to continue at ${request.start}: start at 0` })
        }
      )
      file.opened()
      unfinished.written(file.key)
      const size = (await handle.stat()).size
      if (request.start > size) {
        throw new FileRequestRefused({ message: `offset ${request.start} is past the ${size} bytes received so far: continue at ${size}` })
      }
      await writeAt(handle, request.content, request.start)
      // What lay beyond this chunk came from an earlier attempt: the file is exactly what was acknowledged.
      await handle.truncate(request.start + request.content.length)
      if (request.completed) await handle.datasync()
    } finally {
      if (handle !== undefined) {
        sizeAfter = (await handle.stat().catch(() => undefined))?.size ?? sizeBefore
        await handle.close()
      }
      held.settle(reserved, sizeAfter - sizeBefore)
      unfinished.sized(file.key, sizeAfter)
    }
  }

  /**
   * Removes a partial file its request cannot finish: its entry, bytes and table entry go too;
   * whether there was a file and it went. One that cannot be removed stays in the table, so the
   * sweep removes it once expired: forgotten, it held its bytes and entry until a restart and took
   * no place among the unfinished.
   */
  const discard = async (held: RootUsage, inDir: string, partial: string): Promise<boolean> => {
    const stats = await lstat(inDir).catch(() => undefined)
    if (stats?.isFile() === true) {
      if (!(await unlink(inDir).then(() => true, () => false))) return false
      held.removed(stats.size, 1)
    }
    unfinished.forget(partial)
    return stats?.isFile() === true
  }

  /**
   * Removes an expired (or idle) unfinished upload in its upload's turn, unless a request wrote it meanwhile.
   * One that cannot be removed (its directory swapped for a symlink, EMFILE) is logged and stays in the
   * table, so the next sweep tries again: forgotten, it would hold its quota until a restart. Never
   * rejects (sweepUnfinished's contract), not even when the log sink throws.
   */
  const expire = (partial: string): Promise<void> =>
    onePerUpload.run(partial, async () => {
      if (!unfinished.stillUnwritten(partial)) return
      const held = await usage
      const dir = await openDirectoryInside(root, dirname(partial), partial).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== "ENOENT") throw error
        return undefined // gone with its directory (another process: its quota is measured again at the next start)
      })
      if (dir !== undefined) {
        try {
          const inDir = dir.at(basename(partial))
          const stats = await lstat(inDir).catch(() => undefined)
          if (stats?.isFile() === true) {
            await unlink(inDir)
            held.removed(stats.size, 1)
          }
        } finally {
          await dir.handle.close()
        }
      }
      unfinished.forget(partial)
    }).catch((error: unknown) => {
      try {
        server.log("partial-expiry-failed", { partial, error: messageOf(error) })
      } catch {
        // The sink is the caller's: a throw from it rejected the sweep's removal, which ended the
        // sweep's fiber, and no unfinished upload expired again until a restart.
      }
    })
  // Both 0: never, as the server's idle timeout (swept every millisecond, a partial would go between two requests of its upload).
  if (unfinished.swept) server.background(sweepUnfinished(unfinished, usage, expire))

  const checksum = async (data: Buffer, signal: AbortSignal): Promise<Buffer> => {
    const request = decodeChecksumRequest(data)
    const answer = await hashFile(request, signal).catch((error: unknown) => {
      // Its caller cancelled or its connection closed: the rest of a file of up to GiBs is not read.
      if (signal.aborted) throw new FileRequestRefused({ message: `checksum of ${JSON.stringify(request.filePath)} stopped: ${messageOf(signal.reason)}` })
      return explain("hash", request.filePath)(error)
    })
    return encodeChecksumAnswer(answer)
  }

  const hashFile = async (request: ChecksumRequest, signal: AbortSignal): Promise<ChecksumAnswer> => {
    const path = request.upload ? (await resolveForWrite(root, request.filePath, undefined))?.partial : resolveForRead(root, request.filePath)
    const opened = path === undefined
      ? undefined
      : request.upload
      ? openPartial(root, path, constants.O_RDONLY, request.filePath)
      : openRegular(root, path, request.filePath)
    const handle = await opened?.catch((error: NodeJS.ErrnoException) => {
      // No unfinished upload is an empty one.
      if (request.upload && error.code === "ENOENT") return undefined
      throw error
    })
    if (handle === undefined) return { size: 0, length: 0, sha256: emptySha256 }
    try {
      const size = (await handle.stat()).size
      const length = Math.min(request.length ?? size, size)
      return { size, length, sha256: (await hashPrefix(handle, length, hashBlocks, signal)).digest("hex") }
    } finally {
      await handle.close()
    }
  }

  server
    .handle(FilePath.download, (request) => download(request.data))
    .handle(FilePath.upload, (request) => upload(request.data))
    .handle(FilePath.checksum, (request) => checksum(request.data, request.signal))
}
