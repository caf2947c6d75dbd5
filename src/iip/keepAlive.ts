// Liveness of a mesh connection (PROTOCOL.md §11): after `intervalMs` without a packet from the
// peer, ping it; no answer within `timeoutMs` closes the connection with that reason. With
// `busyIntervalMs`, a connection on which this side waits for answers is pinged much sooner (after
// that much silence, closed after `busyTimeoutMs` unanswered): a frozen peer (SIGSTOP, a stuck
// event loop) still has its kernel accept and buffer our bytes, so nothing else tells the requests
// waiting on it to move on. A slow handler does not trip it: its sidecar answers pings meanwhile.
// While this side has paused its own reading (a budget, a congested writer) silence is ours, not the
// peer's: it counts only from when reading resumes. Nor is a stall of this process (a long GC, a
// starved CPU, a throttled cgroup) the peer's: see `heardDespiteStall`.
// Runs as a fiber under the owner's Supervisor, on Effect's Clock: its monotonic time, so a wall
// clock stepped back does not hold the pings off for the step's length.
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { monotonicMillis } from "../mux/clock.ts"
import { lateGraceMs } from "../mux/lateTimer.ts"
import type { MeshSession } from "../mux/meshSession.ts"

export interface KeepAliveOptions {
  /** Silence that makes this side ping. */
  readonly intervalMs: number
  /** How long a ping may go unanswered before the connection is closed. */
  readonly timeoutMs: number
  /** Silence that makes this side ping while it waits for answers (default: `intervalMs`). */
  readonly busyIntervalMs?: number
  /** How long that ping may go unanswered (default: `timeoutMs`). */
  readonly busyTimeoutMs?: number
}

export const defaultKeepAlive: KeepAliveOptions = { intervalMs: 15_000, timeoutMs: 5_000 }

const ping = (session: MeshSession) =>
  Effect.callback<number>((resume) => session.ping((error, rtt) => resume(error === undefined ? Effect.succeed(rtt) : Effect.never)))

/**
 * Whether a ping whose wait ran out `late` ms after its time was answered after all (any packet since
 * it was sent, `seen` then, says the peer lives). A late timer means this process stalled: on waking,
 * libuv runs expired timers before it polls for I/O, so the answer may sit unread in the kernel's
 * buffer, and the peer had less than the timeout of our time to send it. It gets the stolen time
 * back (at most one more timeout; a timer set now fires after a poll phase has read the socket;
 * src/mux/lateTimer.ts), then is judged: a peer that never answers is still closed on, a stall later at most.
 */
const heardDespiteStall = (session: MeshSession, seen: number, late: number, timeoutMs: number): Effect.Effect<boolean> => {
  const grace = lateGraceMs(late, timeoutMs)
  return grace === 0 ? Effect.succeed(false) : Effect.map(Effect.sleep(grace), () => session.packetsReceived !== seen)
}

/** Pings `session` when silent; `onUnanswered` is told when it closes the connection for it. */
export const keepAlive = (session: MeshSession, options: KeepAliveOptions, onUnanswered: () => void = () => {}): Effect.Effect<void> =>
  Effect.gen(function*() {
    const busyIntervalMs = Math.min(options.busyIntervalMs ?? options.intervalMs, options.intervalMs)
    let seen = session.packetsReceived
    let heardAt = yield* monotonicMillis
    while (!session.closed) {
      // Until the silence would reach the limit; while idle, waking each busy interval to notice calls.
      const now = yield* monotonicMillis
      const limit = session.callingCount > 0 ? busyIntervalMs : options.intervalMs
      yield* Effect.sleep(Math.max(1, Math.min(heardAt + limit - now, busyIntervalMs)))
      if (session.closed) return
      const at = yield* monotonicMillis
      if (session.packetsReceived !== seen || session.connection.readingPaused) {
        seen = session.packetsReceived
        heardAt = at
        continue
      }
      const busy = session.callingCount > 0
      if (at - heardAt < (busy ? busyIntervalMs : options.intervalMs)) continue
      const timeoutMs = busy ? (options.busyTimeoutMs ?? options.timeoutMs) : options.timeoutMs
      const answered = yield* Effect.timeoutOption(ping(session), timeoutMs)
      const late = (yield* monotonicMillis) - at - timeoutMs
      if (Option.isNone(answered) && !session.connection.readingPaused && !(yield* heardDespiteStall(session, seen, late, timeoutMs))) {
        session.connection.close(`peer stopped answering: no answer to a ping within ${timeoutMs} ms`, false)
        onUnanswered()
        return
      }
      seen = session.packetsReceived
      heardAt = yield* monotonicMillis
    }
  })
