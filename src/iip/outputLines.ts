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
// reads any more never exited. exitWithinMs bounds that wait (runMain); past it the process exits,
// saying on stderr (when stderr takes lines) how many lines stdout left unwritten (`output-unwritten`).

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

/** How long a stopped process waits for stdout and stderr to take what they hold before it exits anyway (the default of --output-flush-timeout). */
export const OUTPUT_FLUSH_MS = 2_000

/**
 * Exits the process once `ms` have passed, unless it ends first by itself (the pipes took their
 * lines: the timer holds nothing up). The lines stdout still holds then are lost: how many, and
 * how many it dropped before, is said on stderr first, when stderr holds nothing unwritten itself
 * (a stalled stderr's own loss has nowhere to be said).
 */
export const exitWithinMs = (ms: number): void => {
  setTimeout(() => {
    const lines = stdout?.unwritten() ?? 0
    if (lines > 0 && !process.stderr.destroyed && process.stderr.writableLength === 0) {
      const said = { time: new Date().toISOString(), event: "output-unwritten", stream: "stdout", lines, dropped: stdout?.dropped() ?? 0, afterMs: ms }
      process.stderr.write(`${JSON.stringify(said)}\n`)
    }
    process.exit()
  }, ms).unref()
}

/** Lines each standard stream dropped so far (for /metrics; a stream not written to yet has dropped none). */
export const droppedLines = (): Readonly<Record<"stdout" | "stderr", number>> => ({ stdout: stdout?.dropped() ?? 0, stderr: stderr?.dropped() ?? 0 })
