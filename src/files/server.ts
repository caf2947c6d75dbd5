// The file server's handlers, on an IipServer in plain IIP mode (`iip-mesh file-server`, or any
// program that calls serveFiles): `/download_file` and `/upload_file` exactly as the Go examples
// answer them (iip-protocol.md §11.2, §11.3), confined to one root (paths.ts), plus `/file_checksum`
// (wire.ts). An upload grows in `<name>.iip-part`, written at the offset each request names, and
// becomes `<name>` when the request marked Completed arrives; a restarted server resumes from it.
// A failure answers the reference's handler-fail body, its message naming the path as asked.
import * as Data from "effect/Data"
import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs"
import { type FileHandle, open, realpath, rename, stat } from "node:fs/promises"
import type { IipServer } from "../iip/server.ts"
import { hashPrefix, writeAt } from "./localFiles.ts"
import { PathRefused, resolveForRead, resolveForWrite } from "./paths.ts"
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
  /** Largest file an upload may grow to (default 1 TiB). */
  readonly maxFileBytes?: number
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

/** Our own refusals pass as they are; a file system error is reported by code, without server paths. */
const explain = (what: string, requested: string) => (error: unknown): never => {
  if (error instanceof PathRefused || error instanceof FileRequestInvalid || error instanceof FileRequestRefused) throw error
  const code = (error as NodeJS.ErrnoException).code ?? "internal error"
  throw new FileRequestRefused({ message: `cannot ${what} ${JSON.stringify(requested)}: ${code === "ELOOP" ? "a symlink is in the way" : code}` })
}

const openRegular = async (path: string, flags: number, requested: string): Promise<FileHandle> => {
  // O_NONBLOCK: opening a FIFO must not hang; it is refused as not a regular file.
  const handle = await open(path, flags | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o644)
  if (!(await handle.stat()).isFile()) {
    await handle.close()
    throw new FileRequestRefused({ message: `${JSON.stringify(requested)} is not a regular file` })
  }
  return handle
}

/** Registers the three routes on `server`, serving files under `root` (a real path: see openRoot). */
export const serveFiles = (server: IipServer, root: string, options: FileServerOptions = {}): void => {
  const maxFileBytes = options.maxFileBytes ?? 2 ** 40

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
    if (request.start + request.content.length > maxFileBytes) {
      throw new FileRequestRefused({ message: `an upload may not grow past ${maxFileBytes} bytes` })
    }
    await writeChunk(request).catch(explain("write", request.filePath))
    return encodeUploadAnswer(request.taskId, request.content.length)
  }

  const writeChunk = async (request: UploadRequest): Promise<void> => {
    const where = (await resolveForWrite(root, request.filePath, true))!
    // Only the first request (offset 0) starts a file; a later one continues one that exists.
    const handle = await openRegular(
      where.partial,
      constants.O_WRONLY | (request.start === 0 ? constants.O_CREAT | constants.O_TRUNC : 0),
      request.filePath
    ).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== "ENOENT") throw error
      throw new FileRequestRefused({ message: `no unfinished upload of ${JSON.stringify(request.filePath)} to continue at ${request.start}: start at 0` })
    })
    try {
      const size = (await handle.stat()).size
      if (request.start > size) {
        throw new FileRequestRefused({ message: `offset ${request.start} is past the ${size} bytes received so far: continue at ${size}` })
      }
      await writeAt(handle, request.content, request.start)
      // What lay beyond this chunk came from an earlier attempt: the file is exactly what was acknowledged.
      await handle.truncate(request.start + request.content.length)
      if (request.completed) await handle.datasync()
    } finally {
      await handle.close()
    }
    if (request.completed) await rename(where.partial, where.target)
  }

  const checksum = async (data: Buffer): Promise<Buffer> => {
    const request = decodeChecksumRequest(data)
    return encodeChecksumAnswer(await hashFile(request).catch(explain("hash", request.filePath)))
  }

  const hashFile = async (request: ChecksumRequest): Promise<ChecksumAnswer> => {
    const path = request.upload ? (await resolveForWrite(root, request.filePath, false))?.partial : resolveForRead(root, request.filePath)
    const handle = path === undefined ? undefined : await openRegular(path, constants.O_RDONLY, request.filePath).catch((error: NodeJS.ErrnoException) => {
      // No unfinished upload is an empty one.
      if (request.upload && error.code === "ENOENT") return undefined
      throw error
    })
    if (handle === undefined) return { size: 0, length: 0, sha256: emptySha256 }
    try {
      const size = (await handle.stat()).size
      const length = Math.min(request.length ?? size, size)
      return { size, length, sha256: (await hashPrefix(handle, length)).digest("hex") }
    } finally {
      await handle.close()
    }
  }

  server
    .handle(FilePath.download, (request) => download(request.data))
    .handle(FilePath.upload, (request) => upload(request.data))
    .handle(FilePath.checksum, (request) => checksum(request.data))
}
