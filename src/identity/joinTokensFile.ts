// The issuer's join tokens from its `--join-tokens` file (src/cli/identityIssuer.ts), parsed by
// proofs.ts and kept current by src/iip/documentFile.ts as the sidecar keeps its policy and routes
// (watch and poll, a version taken only once stable, so a half-written file is never applied): a
// token removed is refused from the issuer's next request on, one added is taken, without a
// restart. A file that cannot be read or parsed keeps the last good tokens in force, says why in
// the log (`identity-join-tokens-invalid`) and is counted (reloads, the issuer's /metrics); at
// start there is no last good one, so the start fails.
import * as Data from "effect/Data"
import * as Result from "effect/Result"
import { stat } from "node:fs/promises"
import { type DocumentLoad, type DocumentWatch, watchDocumentFile } from "../iip/documentFile.ts"
import { type Log, messageOf } from "../iip/log.ts"
import { readSmallTextAsync } from "../iip/smallFile.ts"
import { type JoinToken, parseJoinTokens } from "./proofs.ts"

/** A join-token file larger than this is refused unread: a line is a token and its services, some 10,000 of them. */
export const MAX_JOIN_TOKENS_FILE_BYTES = 1024 * 1024

export class JoinTokensFileInvalid extends Data.TaggedError("JoinTokensFileInvalid")<{ readonly path: string; readonly message: string }> {}

/**
 * The join tokens of the file, tokens without `expires=` ending `defaultTtlMs` after the file was
 * last written (a restart of the issuer does not extend them, a write to the file does: the file
 * holds no other time, so adding a line re-opens the ended ones without `expires=`, as PROTOCOL.md
 * tells operators), or why not: a FIFO, a device or a file over MAX_JOIN_TOKENS_FILE_BYTES is
 * refused unread, naming it. A write time in the future (a skewed clock where the file was made,
 * `touch -d`) counts as now: it would otherwise stretch every such token's life as far, and the
 * TTL is what bounds a leaked token. The write time is stat'ed after the read; the watch takes a
 * version only when it is the same before and after, so it is this text's.
 */
export const readJoinTokensFile = async (path: string, defaultTtlMs: number): Promise<Result.Result<Array<JoinToken>, JoinTokensFileInvalid>> => {
  try {
    const text = await readSmallTextAsync(path, MAX_JOIN_TOKENS_FILE_BYTES)
    const writtenAt = Math.min((await stat(path)).mtimeMs, Date.now())
    return Result.succeed(parseJoinTokens(text, { writtenAt, defaultTtlMs }))
  } catch (error) {
    return Result.fail(new JoinTokensFileInvalid({ path, message: messageOf(error) }))
  }
}

/** The tokens in force, the watch that keeps them current, and its re-reads by result. */
export interface JoinTokensWatch extends DocumentWatch<ReadonlyArray<JoinToken>> {
  /** Re-reads after the first, ok or invalid (the last good tokens kept). */
  readonly reloads: () => Readonly<Record<DocumentLoad, number>>
}

export interface JoinTokensFileOptions {
  readonly path: string
  /** The end of a token without `expires=`, after the file's write time (--join-token-ttl). */
  readonly defaultTtlMs: number
  /** The file is stat'ed this often besides the watch. */
  readonly pollMs: number
  /** "identity-join-tokens-loaded" and "identity-join-tokens-invalid" events (never a token: only counts). */
  readonly log: Log
  /** False: the poll alone (a file system where watching sees nothing); default true. */
  readonly watch?: boolean
}

/** How many tokens are in force and how many of them earn renewals only, for the log. */
const describeTokens = (tokens: ReadonlyArray<JoinToken>): string => {
  const now = Date.now()
  return `${tokens.length} join token${tokens.length === 1 ? "" : "s"}, ${tokens.filter((token) => token.expiresAt <= now).length} ended`
}

/** Loads the file (failing when it is not a join-token file) and keeps its tokens current until `close`. */
export const watchJoinTokensFile = async (options: JoinTokensFileOptions): Promise<Result.Result<JoinTokensWatch, JoinTokensFileInvalid>> => {
  const reloads: Record<DocumentLoad, number> = { ok: 0, invalid: 0 }
  const watched = await watchDocumentFile<ReadonlyArray<JoinToken>, JoinTokensFileInvalid>({
    path: options.path,
    read: () => readJoinTokensFile(options.path, options.defaultTtlMs),
    describe: describeTokens,
    unsettled: (message) => new JoinTokensFileInvalid({ path: options.path, message }),
    event: "identity-join-tokens",
    pollMs: options.pollMs,
    log: options.log,
    onLoad: (result) => reloads[result]++,
    ...(options.watch === undefined ? {} : { watch: options.watch })
  })
  return Result.map(watched, (watch) => ({ ...watch, reloads: () => ({ ...reloads }) }))
}
