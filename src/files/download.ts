// `iip-mesh download`: a file from a `/download_file` server (ours or the Go example) to a local
// path. Bytes go to `<local>.iip-part`, whose size is the offset a later run resumes from; the file
// takes its name only once whole. Our server is first asked the SHA-256 of the remote file's first
// <partial size> bytes: a partial that does not match is started over, and the finished file is
// compared with the remote one the same way. Against it requests are pipelined (each names its
// offset); a Go server, which stalls on pipelined answers with its 16 KiB buffers, gets one at a time.
// The partial file is opened without following a symlink and refused when it has other links.
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import type { Hash } from "node:crypto"
import { constants, type FileHandle, open, rename, rm, stat } from "node:fs/promises"
import { basename } from "node:path"
import { count } from "../iip/optionLimits.ts"
import { hashPrefix, writeAt } from "./localFiles.ts"
import { nameTooLong, partialSuffix } from "./paths.ts"
import {
  askChecksum,
  ask,
  checkTransferOptions,
  ChecksumMismatch,
  connect,
  describeProblem,
  onDisk,
  type Remote,
  reportProgress,
  taskId,
  TransferFailed,
  type TransferOptions,
  type TransferResult
} from "./transfer.ts"
import { decodeDownloadAnswer, downloadChunkBytes, encodeDownloadRequest, FilePath } from "./wire.ts"

export interface DownloadOptions extends TransferOptions {
  readonly remotePath: string
  readonly localPath: string
  /** Requests in flight against a server that answers `/file_checksum` (default 16). */
  readonly window?: number
}

/** An option out of range dies with OptionInvalid (src/iip/optionLimits.ts) before the partial file is opened. */
export const download = (options: DownloadOptions): Effect.Effect<TransferResult, TransferFailed | ChecksumMismatch> =>
  Effect.gen(function*() {
    yield* checkTransferOptions(options, "download", { window: count(1) })
    const started = performance.now()
    const tooLong = nameTooLong(basename(options.localPath), "download")
    if (tooLong !== undefined) return yield* new TransferFailed({ message: `${options.localPath} ${tooLong}` })
    const partialPath = options.localPath + partialSuffix
    const handle = yield* Effect.acquireRelease(
      onDisk(`open ${partialPath}`, () => open(partialPath, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o644)),
      (handle) => Effect.promise(() => handle.close())
    )
    // The partial file is ours alone: a planted hard link would lead the writes to another file.
    const opened = yield* onDisk(`read ${partialPath}`, () => handle.stat())
    if (!opened.isFile()) return yield* new TransferFailed({ message: `${partialPath} is not a regular file: remove it and run again` })
    if (opened.nlink > 1) return yield* new TransferFailed({ message: `${partialPath} has other links to it (a hard link): remove it and run again` })
    const remote = yield* connect(options, options.remotePath)
    let offset = (yield* onDisk(`read ${partialPath}`, () => handle.stat())).size
    let hash = yield* onDisk(`read ${partialPath}`, () => hashPrefix(handle, offset))
    const known = yield* askChecksum(remote, { filePath: options.remotePath, upload: false, length: offset })
    if (known !== undefined && (known.length !== offset || known.sha256 !== hash.copy().digest("hex"))) {
      // The partial file is not the start of this remote file (or the remote file changed): start over.
      yield* onDisk(`truncate ${partialPath}`, () => handle.truncate(0))
      offset = 0
      hash = yield* onDisk(`read ${partialPath}`, () => hashPrefix(handle, 0))
    }
    const resumedFrom = offset
    const progress = (done: number) => reportProgress(options, { done, total: known?.size, resumedFrom })
    yield* progress(offset)
    const window = known === undefined ? 1 : options.window ?? 16
    const bytes = yield* receive(remote, options, handle, hash, offset, window, known?.size, progress).pipe(
      Effect.mapError((error) =>
        new TransferFailed({ message: `${error.message}; ${partialPath} keeps what arrived: run again to resume` })
      )
    )
    yield* onDisk(`sync ${partialPath}`, () => handle.sync())
    const sha256 = hash.digest("hex")
    if (known !== undefined) yield* verify(remote, options, partialPath, bytes, sha256)
    yield* onDisk(`rename ${partialPath}`, () => rename(partialPath, options.localPath))
    return { bytes, resumedFrom, sha256, verified: known !== undefined, elapsedMs: performance.now() - started }
  }).pipe(
    Effect.scoped,
    Effect.tapError(() => Effect.promise(() => removeIfEmpty(options.localPath + partialSuffix)))
  )

/** A run that got no bytes at all leaves no partial file behind. */
const removeIfEmpty = async (path: string): Promise<void> => {
  const size = (await stat(path).catch(() => undefined))?.size
  if (size === 0) await rm(path, { force: true })
}

/**
 * Asks for chunks from `offset` until the server says the file ended, `window` requests ahead, and
 * writes each at its place, never past the size the server `declared` (its checksum answer). An answer of an unexpected size puts the next request right after it
 * and drops the answers already asked for further on. Resolves with the file's size.
 */
const receive = (
  remote: Remote,
  options: DownloadOptions,
  handle: FileHandle,
  hash: Hash,
  offset: number,
  window: number,
  declared: number | undefined,
  progress: (done: number) => Effect.Effect<void, TransferFailed>
): Effect.Effect<number, TransferFailed> =>
  Effect.gen(function*() {
    let written = offset
    let next = offset
    const inFlight: Array<{ readonly offset: number; readonly fiber: Fiber.Fiber<Buffer, TransferFailed> }> = []
    for (;;) {
      while (inFlight.length < window) {
        const fiber = yield* Effect.forkScoped(ask(remote, FilePath.download, encodeDownloadRequest(taskId, options.remotePath, next)))
        inFlight.push({ offset: next, fiber })
        next += downloadChunkBytes
      }
      const head = inFlight.shift()!
      const answer = decodeDownloadAnswer(
        yield* Fiber.join(head.fiber).pipe(Effect.mapError((error) => new TransferFailed({ message: `${error.message} after ${written} bytes` })))
      )
      if ("_tag" in answer) return yield* new TransferFailed({ message: describeProblem(answer) })
      if (head.offset !== written) continue // asked before an earlier answer came up short
      if (declared !== undefined && written + answer.bytes.length > declared) {
        return yield* new TransferFailed({ message: `the server sent more than the ${declared} bytes it declared for ${JSON.stringify(options.remotePath)}` })
      }
      if (answer.bytes.length > 0) {
        yield* onDisk(`write ${options.localPath}${partialSuffix}`, () => writeAt(handle, answer.bytes, written))
        hash.update(answer.bytes)
        written += answer.bytes.length
        yield* progress(written)
      }
      if (answer.end) return written
      if (answer.bytes.length === 0) return yield* new TransferFailed({ message: "the server sent an empty chunk that did not end the file" })
      if (answer.bytes.length !== downloadChunkBytes) next = written
    }
  }).pipe(Effect.scoped)

/** Compares the whole file with the server's; a mismatch discards the partial file. */
const verify = (remote: Remote, options: DownloadOptions, partialPath: string, bytes: number, sha256: string) =>
  Effect.gen(function*() {
    const theirs = yield* askChecksum(remote, { filePath: options.remotePath, upload: false, length: undefined })
    if (theirs !== undefined && theirs.size === bytes && theirs.sha256 === sha256) return
    yield* onDisk(`remove ${partialPath}`, () => rm(partialPath, { force: true }))
    return yield* new ChecksumMismatch({
      message: theirs === undefined
        ? "the server stopped answering /file_checksum"
        : `checksum mismatch: the remote file is ${theirs.size} bytes with sha256 ${theirs.sha256}, the download ${bytes} bytes with ${sha256}` +
          `; ${partialPath} was removed: run again to start over`
    })
  })
