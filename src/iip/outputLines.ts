// Where the process's own lines leave it: stdout (the sidecar's access log, sidecar.ts) and stderr
// (stderrLog, log.ts). In a container both are pipes, and a log driver that stalls stops reading
// them; node on Linux then queues every write in memory without bound (10,000 access lines of 8 KB,
// URIs an app chose, grew a sidecar by 170 MB). Each stream holds at most about
// MAX_QUEUED_OUTPUT_BYTES (bytes, not UTF-16 units) unwritten here: past it lines are dropped and
// counted, and the first line written after (or the last, at a stop: runMain) says how many
// (`log-lines-dropped`), so a reader sees where its log has a hole.
// A stream whose reader is gone (EPIPE) takes no more lines: they are dropped, not thrown as an
// uncaught exception per line (iip_mesh_uncaught_errors_total is for bugs).
// At a stop, node waits for the pipes to take what they hold: a stopped sidecar whose stdout nobody
// reads any more never exited. exitWithinMs bounds that wait (runMain): once the pipes took nothing
// for a while (or after OUTPUT_FLUSH_MAX_MS) the process exits, saying on stderr (when stderr takes
// lines) how many lines stdout left unwritten (`output-unwritten`).

import { libuvQueued } from "../mux/libuvQueue.ts"

/** The most a stream holds unwritten before lines are dropped: about 4,000 access lines. */
export const MAX_QUEUED_OUTPUT_BYTES = 1 << 20

/** What a line writer needs of a stream: process.stdout or stderr, a stand-in in tests. */
export interface LineOutput {
  /** What it holds unwritten (Writable's count: bytes for the buffers written here). */
  readonly writableLength: number
  /** True once it failed (EPIPE) or was closed: it takes nothing more. */
  readonly destroyed: boolean
  /** `written` is called once the line left (or failed to). */
  write(line: Uint8Array, written: () => void): unknown
}

export interface LineWriter {
  /** Writes `line` (newline included), or drops it while the stream holds too much. */
  (line: string): void
  /** Lines dropped since the writer was made. */
  readonly dropped: () => number
  /** Writes the `log-lines-dropped` line now, if lines were dropped since the last one: at a stop, when no line may follow. */
  readonly flush: () => void
  /** Lines written to the stream that it has not passed on yet. */
  readonly unwritten: () => number
}

export const lineWriter = (output: LineOutput, maxQueuedBytes: number = MAX_QUEUED_OUTPUT_BYTES): LineWriter => {
  let unsaid = 0
  let total = 0
  let unwritten = 0
  // One callback for every line: no closure per line on the access log's path.
  const written = (): void => {
    unwritten--
  }
  const flush = (): void => {
    if (unsaid === 0 || output.destroyed) return
    unwritten++
    output.write(Buffer.from(`${JSON.stringify({ time: new Date().toISOString(), event: "log-lines-dropped", lines: unsaid })}\n`), written)
    unsaid = 0
  }
  // Lines go as bytes: a string's writableLength is its UTF-16 length, a third of what lines of
  // CJK text (or half of latin1 bytes of a URI) take in the pipe.
  const write = (line: string): void => {
    const bytes = Buffer.from(line)
    if (output.destroyed || output.writableLength + bytes.length > maxQueuedBytes) {
      unsaid++
      total++
      return
    }
    flush()
    unwritten++
    output.write(bytes, written)
  }
  return Object.assign(write, { dropped: () => total, flush, unwritten: () => unwritten })
}

let stdout: LineWriter | undefined
let stderr: LineWriter | undefined

/** The codes that say a stream's reader is gone (a pipe's, or a socket's). */
const READER_GONE = new Set(["EPIPE", "ECONNRESET"])

/**
 * A standard stream's writer. Its reader gone has nowhere to be told: unheard, it would be an
 * uncaught exception; heard, the stream is destroyed and its lines counted dropped. Any other
 * failure (ENOSPC on a file that is full: node's file stdout is not destroyed by it and fails each
 * write) is thrown on, as it was before this listener: the last resort logs and counts it.
 */
const standard = (stream: NodeJS.WriteStream): LineWriter => {
  stream.on("error", (error: NodeJS.ErrnoException) => {
    if (!READER_GONE.has(error.code ?? "")) throw error
  })
  return lineWriter(stream)
}

/** The process's stdout, bounded (made at first use: process.stdout is itself made lazily). */
export const stdoutLines = (): LineWriter => (stdout ??= standard(process.stdout))

/** The process's stderr, bounded. */
export const stderrLines = (): LineWriter => (stderr ??= standard(process.stderr))

/** Says on each standard stream the lines it dropped and has not said yet: the last thing a stopping command writes. */
export const flushDroppedLines = (): void => {
  stdout?.flush()
  stderr?.flush()
}

/** How long a stopped process waits for stdout and stderr to take anything before it exits anyway (the default of --output-flush-timeout). */
export const OUTPUT_FLUSH_MS = 2_000

/**
 * The longest a stop waits on a stdout that keeps taking lines, however slowly: a reader slower
 * than that loses the rest (a Kubernetes pod is killed 30 s after its stop by default in any case).
 */
export const OUTPUT_FLUSH_MAX_MS = 30_000

/**
 * Exits the process once stdout and stderr took no byte for `ms` (their reader stopped reading), or
 * after OUTPUT_FLUSH_MAX_MS in all, unless it ends first by itself (the pipes took their lines: the
 * timer holds nothing up). A reader that is slow but reading is waited for: a bound on the whole
 * wait cut one taking 300 KB/s (the MiB held takes 3.5 s) at 1 s, mid-line. The lines stdout still
 * holds then are lost: how many, and how many it dropped before, is said on stderr first, when
 * stderr holds nothing unwritten itself (a stalled stderr's own loss has nowhere to be said).
 */
export const exitWithinMs = (ms: number): void => {
  const held = (): string => JSON.stringify([stdout === undefined ? [] : unsent(process.stdout), stderr === undefined ? [] : unsent(process.stderr)])
  const looks = Math.max(1, Math.floor(OUTPUT_FLUSH_MAX_MS / ms))
  let looked = 0
  let before = held()
  const look = (): void => {
    looked++
    const now = held()
    // Nothing is written after the stop: what the streams hold changes only as their readers take it.
    const taking = now !== before && (stdout?.unwritten() ?? 0) + (stderr?.unwritten() ?? 0) > 0
    if (taking && looked < looks) {
      before = now
      setTimeout(look, ms).unref()
      return
    }
    const lines = stdout?.unwritten() ?? 0
    if (lines > 0 && !process.stderr.destroyed && process.stderr.writableLength === 0) {
      const said = { time: new Date().toISOString(), event: "output-unwritten", stream: "stdout", lines, dropped: stdout?.dropped() ?? 0, afterMs: looked * ms }
      process.stderr.write(`${JSON.stringify(said)}\n`)
    }
    process.exit()
  }
  setTimeout(look, ms).unref()
}

/**
 * What a standard stream holds: in node's queue (writableLength) and in libuv's (the handle's
 * writeQueueSize). Node sends the lines queued behind a write as one write, and counts them and
 * calls their callbacks only once the pipe took all of it: a MiB read at 300 KB/s showed no change
 * there for 3 s. libuv's queue falls as the pipe takes bytes.
 */
const unsent = (stream: NodeJS.WriteStream): readonly [number, number] =>
  [stream.writableLength, libuvQueued(stream) ?? 0]

/** Lines each standard stream dropped so far (for /metrics; a stream not written to yet has dropped none). */
export const droppedLines = (): Readonly<Record<"stdout" | "stderr", number>> => ({ stdout: stdout?.dropped() ?? 0, stderr: stderr?.dropped() ?? 0 })
