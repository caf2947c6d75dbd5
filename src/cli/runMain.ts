// Runs a long-lived command (sidecar, demo) as the process's main program without the full CLI
// stack: SIGTERM or SIGINT interrupts it, which runs its finalizers (the drain), and the process
// exits 0 after a clean stop, 1 after a failure; the lines a stalled stdout or stderr dropped are
// said last (iip/outputLines.ts), and node exits once the pipes took what they hold, or once one
// took nothing for OUTPUT_FLUSH_MS (nobody reads it any more), saying so on stderr. Keeping this
// path light keeps the sidecar's memory down (bench/sidecar measures it).
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { exitWithinMs, flushDroppedLines, OUTPUT_FLUSH_MS } from "../iip/outputLines.ts"

let outputFlushMs = OUTPUT_FLUSH_MS

/** The stop's bound on the last output (--output-flush-timeout), set by the command once it has read its settings. */
export const setOutputFlushMs = (ms: number): void => {
  outputFlushMs = ms
}

export const runMain = (program: Effect.Effect<unknown, unknown>): void => {
  const fiber = Effect.runFork(program)
  const stop = () => fiber.interruptUnsafe()
  process.once("SIGTERM", stop)
  process.once("SIGINT", stop)
  fiber.addObserver((exit) => {
    process.off("SIGTERM", stop)
    process.off("SIGINT", stop)
    if (Exit.isFailure(exit) && !Cause.hasInterruptsOnly(exit.cause)) {
      process.stderr.write(`${Cause.pretty(exit.cause)}\n`)
      process.exitCode = 1
    }
    // The drain is over and no access or log line follows: a hole in a stalled log is said now.
    flushDroppedLines()
    exitWithinMs(outputFlushMs)
  })
}
