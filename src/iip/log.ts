// The structured log events the library emits on its own (protocol violations, handler crashes,
// refused connections): one JSON line each on stderr unless the caller passes its own sink.
import type { ConnectionLog } from "../mux/connection.ts"

export type Log = ConnectionLog

export const stderrLog: Log = (event, fields) => {
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), event, ...fields })}\n`)
}

/** The message of anything thrown or failed with. */
export const messageOf = (error: unknown): string =>
  error instanceof Error ? error.message : typeof error === "object" && error !== null && "message" in error ? String(error.message) : String(error)
