// What download.ts and upload.ts share: the options and result of a transfer, its errors, and the
// one plain IIP connection it runs on (one channel, so requests and answers stay in order exactly
// as with the Go clients), with `/file_checksum` asked the way a Go server can decline. Its numeric
// options are checked before a transfer opens a file or dials (checkTransferOptions).
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Client from "../iip/client.ts"
import { type Log, messageOf } from "../iip/log.ts"
import { checkOptions, durationOrInfinityMs, type Limit, type Limits } from "../iip/optionLimits.ts"
import { printable } from "../iip/redact.ts"
import { ErrorCode } from "../protocol/constants.ts"
import { MaxDeadlineMs } from "../protocol/mesh.ts"
import { maxPathBytes } from "./paths.ts"
import { type AnswerProblem, type ChecksumAnswer, type ChecksumRequest, decodeChecksumAnswer, encodeChecksumRequest, FilePath } from "./wire.ts"

/** The transfer stopped: connection, server answer, local file. What is on disk stays for a resume. */
export class TransferFailed extends Data.TaggedError("TransferFailed")<{ readonly message: string }> {}

/** The whole file's SHA-256 differs between the two sides; the partial copy was discarded. */
export class ChecksumMismatch extends Data.TaggedError("ChecksumMismatch")<{ readonly message: string }> {}

export interface Progress {
  /** Bytes of the file now on the receiving side. */
  readonly done: number
  /** The file's size, when the server said it (our server does, a Go one does not). */
  readonly total: number | undefined
  /** Where this run started. */
  readonly resumedFrom: number
}

export interface TransferOptions {
  readonly host: string
  readonly port: number
  /** Per request (default 30 s). */
  readonly timeoutMs?: number
  readonly connectTimeoutMs?: number
  /** Called after every chunk. */
  readonly onProgress?: (progress: Progress) => void
  /** The IIP client's own log events (default: none). */
  readonly log?: Log
}

/** As the IIP client's (clientOptions.ts): 0 is no timeout, Infinity is MaxDeadlineMs; a connect timeout of 0 would fail at once. */
const transferLimits: Limits<TransferOptions> = { timeoutMs: durationOrInfinityMs(0, MaxDeadlineMs), connectTimeoutMs: durationOrInfinityMs(1, MaxDeadlineMs) }

/**
 * Dies with OptionInvalid (src/iip/optionLimits.ts) for a numeric option out of range, with
 * `own` the limits of the caller's own options (named `kind`): run first, before a file is opened.
 */
export const checkTransferOptions = <O extends TransferOptions>(options: O, kind: string, own: { readonly [K in Exclude<keyof O, keyof TransferOptions>]?: Limit }): Effect.Effect<void> =>
  Effect.sync(() => {
    checkOptions("file transfer", transferLimits, options)
    checkOptions(kind, own as Limits<O>, options)
  })

export interface TransferResult {
  readonly bytes: number
  /** The offset this run started at: 0 for a fresh transfer. */
  readonly resumedFrom: number
  /** SHA-256 of the whole file, hex. */
  readonly sha256: string
  /** The server confirmed the same SHA-256 (false against a server without `/file_checksum`). */
  readonly verified: boolean
  readonly elapsedMs: number
}

/** The task id the Go clients give their first (and only) task. */
export const taskId = 1

export interface Remote {
  readonly client: Client.IipClient
  readonly timeoutMs: number
}

export const connect = (options: TransferOptions, remotePath: string): Effect.Effect<Remote, TransferFailed, Scope.Scope> =>
  Effect.gen(function*() {
    if (remotePath === "" || Buffer.byteLength(remotePath) > maxPathBytes) {
      return yield* new TransferFailed({ message: `the remote path must be 1 to ${maxPathBytes} bytes long` })
    }
    const client = yield* Client.make({
      host: options.host,
      port: options.port,
      mesh: false,
      maxConnections: 1,
      maxChannelsPerConnection: 1,
      pipelineAtLimit: true,
      ...(options.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: options.connectTimeoutMs }),
      log: options.log ?? (() => {})
    })
    return { client, timeoutMs: options.timeoutMs ?? 30_000 }
  })

export const ask = (remote: Remote, path: string, data: Uint8Array): Effect.Effect<Buffer, TransferFailed> =>
  remote.client.request(path, data, { timeoutMs: remote.timeoutMs }).pipe(
    Effect.mapError((error) => new TransferFailed({ message: error.message }))
  )

/** The server's own message is escaped and clamped: it ends up on the user's terminal (the CLI's error line). */
export const describeProblem = (problem: AnswerProblem): string =>
  problem._tag === "Malformed"
    ? `the server sent ${problem.message}`
    : `the server answered with error ${problem.answer.code}: ${printable(problem.answer.message.replace(/^handler fail:/, ""), 1000)}`

/** The server's checksum answer; undefined when it does not know the path (a Go server). */
export const askChecksum = (remote: Remote, request: ChecksumRequest): Effect.Effect<ChecksumAnswer | undefined, TransferFailed> =>
  Effect.gen(function*() {
    const answer = decodeChecksumAnswer(yield* ask(remote, FilePath.checksum, encodeChecksumRequest(request)))
    if (!("_tag" in answer)) return answer
    if (answer._tag === "ServerError" && answer.answer.code === ErrorCode.handleError) return undefined
    return yield* new TransferFailed({ message: describeProblem(answer) })
  })

/** Tells `onProgress`; a callback that throws ends the transfer (a TransferFailed, not a defect that skips the clean-up). */
export const reportProgress = (options: TransferOptions, progress: Progress): Effect.Effect<void, TransferFailed> =>
  Effect.try({
    try: () => options.onProgress?.(progress),
    catch: (error) => new TransferFailed({ message: `the progress callback threw: ${messageOf(error)}` })
  })

/** Wraps a file system promise: its failure becomes a TransferFailed naming what was being done. */
export const onDisk = <A>(what: string, run: () => Promise<A>): Effect.Effect<A, TransferFailed> =>
  Effect.tryPromise({
    try: run,
    catch: (error) => new TransferFailed({ message: `cannot ${what}: ${(error as NodeJS.ErrnoException).code ?? String(error)}` })
  })
