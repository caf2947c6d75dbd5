// The bounds on the outbound listener's h2c sessions (outboundH2.ts sets them up): what the sweep
// notes on a session (its open calls, since when it is quiet), its end when asked to go and stalled,
// the PING floor for a caller that PINGs with no stream open (unless it is still taking an answer),
// the budget of requests a caller resets before they went on, and the reset of streams whose
// answers stalled. Per session and per sweep: nothing per request.
import * as http2 from "node:http2"
import type * as net from "node:net"
import { Cancelled } from "../mux/meshChannels.ts"
import { destroyAfterGrace } from "../mux/peerFin.ts"
import type { AnswerTaking, StreamCall } from "./outboundH2Call.ts"

/**
 * Ends a session asked to go if no byte moved either way in `ms` while one of its streams holds
 * answer bytes, or while it has no stream open (checked again until it ends); `moved`: the count
 * at the last check. A stream with nothing to send (a long poll, a quiet gRPC server stream) is
 * idle, not stalled: it may wait. A session asked to go with no stream open that is still there
 * holds only its own last frames (GOAWAY, a reset), behind bytes the caller does not take: the
 * sweep reset its stalled streams before it went idle (an answer idle timeout below the idle one).
 */
export const endIfStalled = (session: http2.ServerHttp2Session, open: ReadonlySet<StreamCall>, ms: number, moved: number): void => {
  if (session.destroyed) return
  const socket = session.socket
  const now = socket.bytesRead + socket.bytesWritten
  if (now === moved) {
    if (open.size === 0) return destroySession(session)
    for (const call of open) if (call.answerWaiting) return destroySession(session)
  }
  setTimeout(endIfStalled, ms, session, open, ms, now).unref()
}

/**
 * A session names its open calls, for the sweep, since when the sweep found none open and none
 * opened (performance.now()), whether a stream opened since the last sweep (one over between
 * two sweeps, as most calls are, the sweep never finds open), and its socket as accepted.
 */
export const OPEN = Symbol("open")
export const QUIET_SINCE = Symbol("quietSince")
export const STREAMED = Symbol("streamed")
export const SOCKET = Symbol("socket")
export type SweptSession = http2.ServerHttp2Session & { [OPEN]: Set<StreamCall>; [QUIET_SINCE]: number; [STREAMED]: boolean; [SOCKET]: net.Socket }

/** A socket accept() handed to node names itself, for its session to find through session.socket. */
export const ACCEPTED = Symbol("accepted")
export type AcceptedSocket = net.Socket & { [ACCEPTED]: net.Socket }

/**
 * The error a session this side ended with a code is destroyed with (its 'error' listener ignores
 * it). node destroys each open stream with it too: a request still coming in (readBody's gather, a
 * body streaming on) ends with it, and as a Cancelled it ends as a caller gone (502 `cancelled`),
 * as in a session destroyed without a code, not as a failure beyond A (`upstream_failed`).
 */
const ENDED = new Cancelled({ message: "the sidecar ended the caller's session (GOAWAY with an error code)" })

/**
 * Ends `session` now, and its socket within a grace: node's destroy() ends the socket and lets it
 * go only once that end went out, never for a caller that reads nothing (session.socket is a proxy
 * that refuses destroy()). The grace lets a last GOAWAY out to a caller that still reads.
 * A `code` goes with an error (ENDED): node's destroy(error = NO_ERROR, code) reads an error left
 * undefined as NO_ERROR, a number, and takes it for the code, so destroy(undefined, code) sent a
 * second GOAWAY NO_ERROR after endSession's (a client reads the last one: RFC 9113 §6.8). node
 * emits the error on the session ('error', which makeH2c ignores) and on its open streams.
 */
export const destroySession = (session: http2.ServerHttp2Session, code?: number): void => {
  if (code === undefined) session.destroy()
  else session.destroy(ENDED, code)
  destroyAfterGrace((session as SweptSession)[SOCKET])
}

/**
 * A session the sweep found with no stream open for this many idle timeouts is asked to go
 * (GOAWAY), whatever PINGs came: twice, so that the sweep's coarse clock (it saw the last stream
 * open up to a sweep before it closed) never goes before node's own timer for a session that is
 * simply idle.
 */
export const QUIET_TIMEOUTS = 2
/**
 * With no stream open and no answer being taken (takingAnswer), a PING this soon after the caller's last one is a strike; one strike past
 * PING_STRIKES and the session ends with GOAWAY ENHANCE_YOUR_CALM "too_many_pings", as gRPC servers
 * answer clients whose keepalive is faster than they allow (theirs: 5 min without calls). A PING
 * while a stream is open, or the first after a stream opened, is not counted: grpc-go's BDP probe
 * goes out as its answer's data comes in, after the stream closed here (grpc-go's and grpc-java's
 * servers reset their strikes when they send headers or data).
 */
export const MIN_PING_INTERVAL_MS = 1000
export const PING_STRIKES = 2
export const TOO_MANY_PINGS = Buffer.from("too_many_pings")

/**
 * Whether the caller of a session with no stream open is still taking an answer: a stream's close
 * here is its answer's last byte handed to the socket, not read. A caller that pauses its reading
 * holds the answer's tail (up to its windows) and PINGs on; ended now (GOAWAY ENHANCE_YOUR_CALM),
 * it loses that tail: node's client drops a stream's unread data on a GOAWAY with an error code. It
 * is taking one while it gave back window (WINDOW_UPDATE: it read) within the answer idle timeout,
 * the bound a stream's answer has too; one that PINGs on with no answer to read is bounded from then.
 */
export const takingAnswer = (session: http2.ServerHttp2Session, taking: AnswerTaking, now: number, answerIdleMs: number): boolean => {
  if (taking.at === -Infinity) return false
  // Only streams' DATA takes connection window, and none is open: a window that grew is the caller reading.
  const window = session.state.remoteWindowSize ?? -1
  if (window !== taking.window) {
    if (taking.window !== -1) taking.at = now
    taking.window = window
  }
  return now - taking.at < answerIdleMs
}

/** Ends `session` now: GOAWAY with `code` and `debug`, then its socket. */
export const endSession = (session: http2.ServerHttp2Session, code: number, debug: Buffer): void => {
  session.goaway(code, 0, debug)
  destroySession(session, code)
}

/** Resets a session's streams whose answers stalled; how many. */
export const cutStalled = (open: ReadonlySet<StreamCall>): number => {
  let cut = 0
  for (const call of open) {
    if (!call.stalled()) continue
    call.cutStalled()
    cut++
  }
  return cut
}

/**
 * The requests a caller reset before A sent them on (within the read their END_STREAM came in, or
 * while their body was held or gathered: outboundH2Call.ts) that a session may have at once, and a
 * second after. Each cost A a stream, an exchange and an access-log line, and nothing beyond it: a
 * caller that asks for nothing it waits for (rapid reset, CVE-2023-44487), which a client that
 * cancels its calls seldom does so soon (a cancel after the call went on, as gRPC's, is not
 * counted). Below node's own bounds, which end such a session with GOAWAY INTERNAL_ERROR (read as
 * this side's fault): in one read, streams reset there are freed only after it, so past
 * --h2-max-streams (256) more are refused, and past 100 refused (maxSessionRejectedStreams) the
 * session ends (measured: at the 358th); across reads, nghttp2's count of every reset, which
 * makeH2c raises to a backstop (it ended gRPC sessions whose calls end by their deadlines).
 * Resets after a request went on are the premature-reset rule's (outboundH2Premature.ts). Above the
 * 200 a connection of the framing fuzz (h2RequestCases.ts) may reset so and still be served.
 */
export const UNSENT_RESET_BURST = 250
export const UNSENT_RESETS_PER_SECOND = 20
export const TOO_MANY_RESETS = Buffer.from("too_many_resets")

/** Why A ended a caller's session (GOAWAY ENHANCE_YOUR_CALM): its debug data, and the metric's reason. */
export type SessionEndReason = "too_many_pings" | "too_many_resets" | "too_many_premature_resets"

/** A token bucket's tokens at `now` that held `tokens` at `since` (ms, performance.now()): `perSecond` earned back, at most `burst`. */
export const refill = (tokens: number, since: number, now: number, burst: number, perSecond: number): number =>
  Math.min(burst, tokens + ((now - since) * perSecond) / 1000)

/** A session's budget of requests reset before they went on (a token bucket, as nghttp2 keeps its own). */
export class UnsentResets {
  private readonly session: http2.ServerHttp2Session
  private readonly onEnded: (reason: SessionEndReason) => void
  private tokens = UNSENT_RESET_BURST
  private at = performance.now()

  constructor(session: http2.ServerHttp2Session, onEnded: (reason: SessionEndReason) => void) {
    this.session = session
    this.onEnded = onEnded
  }

  /** One more: past the budget the session ends, GOAWAY ENHANCE_YOUR_CALM (RFC 9113 §7), its other streams with it. */
  count(): void {
    const session = this.session
    if (session.destroyed) return
    const now = performance.now()
    this.tokens = refill(this.tokens, this.at, now, UNSENT_RESET_BURST, UNSENT_RESETS_PER_SECOND)
    this.at = now
    if (--this.tokens >= 0) return
    endSession(session, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, TOO_MANY_RESETS)
    this.onEnded("too_many_resets")
  }
}
