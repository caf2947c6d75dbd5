// What `iip-mesh download` and `upload` show (src/cli/commands.ts): on a terminal, one line
// redrawn as chunks arrive (bytes, rate, time left); piped, nothing until the result line.
import type { Progress, TransferResult } from "./transfer.ts"

/** Where the meter draws: process.stderr, or a stand-in in tests. */
export interface ProgressSink {
  readonly isTTY?: boolean
  write(text: string): unknown
}

const units = ["KiB", "MiB", "GiB", "TiB"]

export const formatBytes = (bytes: number): string => {
  if (bytes < 1024) return `${bytes} B`
  let value = bytes / 1024
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return `${value.toFixed(1)} ${units[unit]}`
}

const formatDuration = (seconds: number): string => {
  const s = Math.ceil(seconds)
  const pad = (n: number) => String(n).padStart(2, "0")
  return s >= 3600 ? `${Math.floor(s / 3600)}:${pad(Math.floor(s / 60) % 60)}:${pad(s % 60)}` : `${Math.floor(s / 60)}:${pad(s % 60)}`
}

/** "4.0 MiB / 12.0 MiB (33%)  25.1 MiB/s  0:01 left"; without a total, bytes and rate only. */
export const formatProgress = (progress: Progress, elapsedMs: number): string => {
  const rate = elapsedMs > 0 ? ((progress.done - progress.resumedFrom) * 1000) / elapsedMs : 0
  const total = progress.total
  const amount = total === undefined
    ? formatBytes(progress.done)
    : `${formatBytes(progress.done)} / ${formatBytes(total)} (${total === 0 ? 100 : Math.floor((progress.done * 100) / total)}%)`
  const left = total !== undefined && rate > 0 ? `  ${formatDuration((total - progress.done) / rate)} left` : ""
  return `${amount}  ${formatBytes(Math.round(rate))}/s${left}`
}

/** Redraws at most every `intervalMs`; does nothing at all unless the sink is a terminal. */
export class ProgressMeter {
  private readonly sink: ProgressSink
  private readonly now: () => number
  private readonly intervalMs: number
  private readonly started: number
  private drawnAt = -Infinity
  private drawn = false

  constructor(sink: ProgressSink, now: () => number = () => performance.now(), intervalMs = 200) {
    this.sink = sink
    this.now = now
    this.intervalMs = intervalMs
    this.started = now()
  }

  readonly update = (progress: Progress): void => {
    if (this.sink.isTTY !== true) return
    const now = this.now()
    if (now - this.drawnAt < this.intervalMs && progress.done !== progress.total) return
    this.drawnAt = now
    this.drawn = true
    this.sink.write(`\r${formatProgress(progress, now - this.started)}\x1b[K`)
  }

  /** Clears the line, so the result or the error that follows stands alone. */
  finish(): void {
    if (this.drawn) this.sink.write("\r\x1b[K")
    this.drawn = false
  }
}

/** The one line a finished transfer prints. */
export const resultLine = (verb: "downloaded" | "uploaded", from: string, to: string, result: TransferResult): string =>
  `${verb} ${from} -> ${to}: ${result.bytes} bytes in ${(result.elapsedMs / 1000).toFixed(2)} s` +
  `${result.resumedFrom > 0 ? `, resumed at ${result.resumedFrom}` : ""}, sha256 ${result.sha256} ` +
  (result.verified ? "(verified by the server)" : "(not verified: the server has no /file_checksum)")
