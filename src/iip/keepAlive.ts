// Liveness of a mesh connection (PROTOCOL.md §11): after `intervalMs` without a packet from the
// peer, ping it; no answer within `timeoutMs` closes the connection with that reason. Runs as a
// fiber under the owner's Supervisor, on Effect's Clock.
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type { MeshSession } from "../mux/meshSession.ts"

export interface KeepAliveOptions {
  /** Silence that makes this side ping. */
  readonly intervalMs: number
  /** How long a ping may go unanswered before the connection is closed. */
  readonly timeoutMs: number
}

export const defaultKeepAlive: KeepAliveOptions = { intervalMs: 15_000, timeoutMs: 5_000 }

const ping = (session: MeshSession) =>
  Effect.callback<number>((resume) => session.ping((error, rtt) => resume(error === undefined ? Effect.succeed(rtt) : Effect.never)))

export const keepAlive = (session: MeshSession, options: KeepAliveOptions): Effect.Effect<void> =>
  Effect.gen(function*() {
    let seen = session.packetsReceived
    while (!session.closed) {
      yield* Effect.sleep(options.intervalMs)
      if (session.closed) return
      if (session.packetsReceived !== seen) {
        seen = session.packetsReceived
        continue
      }
      const answered = yield* Effect.timeoutOption(ping(session), options.timeoutMs)
      if (Option.isNone(answered)) {
        session.connection.close(`peer stopped answering: no answer to a ping within ${options.timeoutMs} ms`, false)
        return
      }
      seen = session.packetsReceived
    }
  })
