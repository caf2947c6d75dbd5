// `iip-mesh upload`: a local file to an `/upload_file` server (ours or the Go example), in 1 MiB
// requests, each naming its offset, ending with the empty request marked Completed as the Go client
// sends it. Our server keeps the unfinished upload on disk: a new run asks `/file_checksum` for its
// size and SHA-256 and, when they match the start of the local file, continues from there. Before
// the Completed request (which makes the file appear under its name) the whole upload's SHA-256 is
// compared with the local one. A Go server cannot be asked: the upload starts at 0, unverified.
import * as Effect from "effect/Effect"
import { createHash } from "node:crypto"
import { constants, open } from "node:fs/promises"
import { hashPrefix, readAt } from "./localFiles.ts"
import {
  ask,
  askChecksum,
  checkTransferOptions,
  ChecksumMismatch,
  connect,
  describeProblem,
  onDisk,
  reportProgress,
  taskId,
  TransferFailed,
  type TransferOptions,
  type TransferResult
} from "./transfer.ts"
import { decodeUploadAnswer, encodeUploadRequest, FilePath, uploadChunkBytes } from "./wire.ts"

export interface UploadOptions extends TransferOptions {
  readonly localPath: string
  readonly remotePath: string
}

/** An option out of range dies with OptionInvalid (src/iip/optionLimits.ts) before the local file is opened. */
export const upload = (options: UploadOptions): Effect.Effect<TransferResult, TransferFailed | ChecksumMismatch> =>
  Effect.gen(function*() {
    yield* checkTransferOptions(options, "upload", {})
    const started = performance.now()
    const handle = yield* Effect.acquireRelease(
      // O_NONBLOCK: a FIFO is refused below as not a regular file instead of blocking the open (and a thread of the pool).
      onDisk(`open ${options.localPath}`, () => open(options.localPath, constants.O_RDONLY | constants.O_NONBLOCK)),
      (handle) => Effect.promise(() => handle.close())
    )
    const stat = yield* onDisk(`read ${options.localPath}`, () => handle.stat())
    if (!stat.isFile()) return yield* new TransferFailed({ message: `${options.localPath} is not a regular file` })
    const remote = yield* connect(options, options.remotePath)
    const unfinished = yield* askChecksum(remote, { filePath: options.remotePath, upload: true, length: undefined })
    let offset = 0
    let hash = createHash("sha256")
    if (unfinished !== undefined && unfinished.size > 0 && unfinished.size <= stat.size) {
      const prefix = yield* onDisk(`read ${options.localPath}`, () => hashPrefix(handle, unfinished.size))
      if (prefix.copy().digest("hex") === unfinished.sha256) {
        offset = unfinished.size
        hash = prefix
      }
    }
    const resumedFrom = offset
    const progress = (done: number) => reportProgress(options, { done, total: stat.size, resumedFrom })
    yield* progress(offset)
    const chunk = Buffer.allocUnsafe(uploadChunkBytes)
    for (;;) {
      const read = yield* onDisk(`read ${options.localPath}`, () => readAt(handle, chunk, offset))
      // As the Go client: Completed once a read finds the end, so the last request carries no bytes.
      const completed = read === 0
      if (completed && unfinished !== undefined) {
        const theirs = yield* askChecksum(remote, { filePath: options.remotePath, upload: true, length: undefined })
        const ours = hash.copy().digest("hex")
        if (theirs === undefined || theirs.size !== offset || theirs.sha256 !== ours) {
          return yield* new ChecksumMismatch({
            message: `checksum mismatch: the server holds ${theirs?.size ?? "?"} bytes with sha256 ${theirs?.sha256 ?? "?"}, ` +
              `the local file ${offset} bytes with ${ours}; the upload was not completed: run again to start over`
          })
        }
      }
      const answer = yield* ask(remote, FilePath.upload, encodeUploadRequest(taskId, options.remotePath, offset, completed, chunk.subarray(0, read))).pipe(
        Effect.mapError((error) => new TransferFailed({ message: `${error.message} after ${offset} bytes; run again to resume` }))
      )
      const done = decodeUploadAnswer(answer, read)
      if (typeof done !== "number") return yield* new TransferFailed({ message: describeProblem(done) })
      hash.update(chunk.subarray(0, done))
      offset += done
      yield* progress(offset)
      if (completed) break
      if (done === 0) return yield* new TransferFailed({ message: `the server took none of the bytes at ${offset}` })
    }
    return { bytes: offset, resumedFrom, sha256: hash.digest("hex"), verified: unfinished !== undefined, elapsedMs: performance.now() - started }
  }).pipe(Effect.scoped)
