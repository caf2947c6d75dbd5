// The last line of defence of the long-running commands (sidecar, demo, echo-server, file-server,
// http-adapter; main.ts installs it for those only): an exception that escaped every handler, or a
// promise rejection nobody handled, is logged as one sanitized JSON line on stderr, counted
// (iip_mesh_uncaught_errors_total, telemetry/processFaults.ts), and the process keeps serving.
//
// Why keep serving rather than exit, as Node does by default: every piece of work in these servers
// runs in a callback of one connection, one request or one timer, so an exception unwinds that
// callback only; what it may leave behind is that one connection or request unanswered, and those
// are bounded by the request deadlines and the connections' timeouts. Exiting instead ends every
// request in flight on every connection, for every caller of this instance, and any peer that
// found an input reaching such a bug could repeat it at will (issue 13: one GET ended a sidecar).
// Failures of the runtime itself (out of memory, a stack overflow in native code) never reach these
// listeners and still end the process. The count makes the survived failures visible, so they are
// fixed rather than ignored.
//
// Never installed in library code: tests run sidecars and servers in the test process, where
// vitest's own listeners must keep reporting every stray exception as a failure.
import { LogThrottle, messageOf } from "../iip/log.ts"
import { stderrLines } from "../iip/outputLines.ts"
import { loggable } from "../iip/redact.ts"
import { type FaultKind, processFaults } from "../telemetry/processFaults.ts"

export interface LastResortOptions {
  /** The command, named in each line. */
  readonly command: string
  /** Lines at most per `windowMs` (default 20 per minute); the rest are counted and summed up in the next line. */
  readonly maxLines?: number
  readonly windowMs?: number
  readonly write?: (line: string) => void
}

/** Installs the process-level listeners; call once, from the program's entry point. */
export const installLastResort = (options: LastResortOptions): void => {
  // Through the bounded stderr, as every log line: a stalled log driver holds ~1 MiB of them at most.
  const write = options.write ?? stderrLines()
  const maxLines = options.maxLines ?? 20
  const windowMs = options.windowMs ?? 60_000
  // A bug that an attacker can reach would otherwise write a line per request: the log is bounded too.
  const lines = new LogThrottle(maxLines, windowMs)
  const report = (kind: FaultKind, error: unknown) => {
    processFaults.record(kind)
    const admitted = lines.admit()
    if (admitted === undefined) return
    const stack = error instanceof Error && error.stack !== undefined ? { stack: loggable(error.stack, 2000) } : {}
    const line = {
      time: new Date().toISOString(),
      event: kind === "exception" ? "uncaught-exception" : "unhandled-rejection",
      command: options.command,
      message: loggable(messageOf(error), 500),
      ...stack,
      total: processFaults.counts()[kind],
      ...admitted,
      action: "kept serving"
    }
    write(`${JSON.stringify(line)}\n`)
  }
  process.on("uncaughtException", (error) => report("exception", error))
  process.on("unhandledRejection", (reason) => report("rejection", reason))
}
