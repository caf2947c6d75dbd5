// The outbound listener's second protocol: cleartext HTTP/2 with prior knowledge (what gRPC
// clients send) on the same port as HTTP/1.1. The listener (http1Connection.ts) tells a new
// connection apart by its first bytes and hands one that opens with the HTTP/2 preface here, where
// it runs on the sidecar's own HTTP/2 (src/h2, one H2cSession each: outboundH2Session.ts). Each
// stream is one request for outbound.ts (outboundH2Call.ts), so the calls of one gRPC channel are
// balanced one by one, not pinned to an endpoint. A request body that ends within the turn of the
// event loop its head came in (a unary call's) is held whole: it travels as one mesh message and
// may be retried; any other streams. A request whose END_STREAM came goes on at the end of that
// turn, not at once: one its caller reset later in the same read (rapid reset, CVE-2023-44487)
// goes nowhere; a session whose caller resets most of its streams soon after they began, in later
// reads too, ends (src/h2's premature-reset guard, GOAWAY ENHANCE_YOUR_CALM too_many_premature_resets).
// A stream whose answer makes no progress for the answer idle timeout (a caller that grants it no
// window while it keeps its session busy) is reset by one sweep over the listener's sessions,
// which also asks a session with no stream for twice the idle timeout to go, PINGs or not.
// A request head past the HTTP/1.1 listener's head limit is refused here too (431), never sent on
// to an app that would refuse it: the limit is announced, heads up to 64 KiB are decoded and answered.
import type * as net from "node:net"
import { boundPeerFin, destroyAfterGrace } from "../mux/peerFin.ts"
import { TurnReads } from "../mux/turnReads.ts"
import { nodeHttp } from "../toolkit/nodeHttp.ts"
import { BodyCredit, type BodyShare } from "./h2BodyCredit.ts"
import type { OutboundCall } from "./outboundCall.ts"
import type { HeldAnswerBudget } from "./http1Listener.ts"
import { SWEEPS } from "./outboundH2Call.ts"
import { H2cSession, type SessionEndReason } from "./outboundH2Session.ts"

export { ANSWER_STALLED } from "./outboundH2Call.ts"

export interface H2Listener {
  /** A connection that opened with the preface (unread: the preface is still to be read, the socket paused). */
  readonly accept: (socket: net.Socket) => void
  /** Sessions open now (for the drain). */
  readonly sessions: ReadonlySet<H2cSession>
  /** Asks every session to finish its streams and take no new ones (GOAWAY); what is left after `deadlineMs` is cut. */
  readonly close: (deadlineMs?: number) => void
  /** Ends every session now. */
  readonly destroyAll: () => void
}

export interface H2Options {
  /** A session with no stream and no frame this long gets GOAWAY. */
  readonly idleTimeoutMs: number
  readonly maxStreams: number
  /** A stream whose answer waits this long with none of it taken is reset. */
  readonly answerIdleMs: number
  /** Told after a sweep that reset `streams` streams of one session (their answers stalled). */
  readonly onStalled: (streams: number, session: H2cSession) => void
  /** Told when a caller's session was ended for abuse (GOAWAY ENHANCE_YOUR_CALM with `reason`). */
  readonly onEnded: (reason: SessionEndReason, session: H2cSession) => void
  /** The outbound listener's held answers (http1Listener.ts): streams count their unsent answer bytes in them; past them new streams are refused. None: counted apart, unbounded. */
  readonly heldAnswers?: HeldAnswerBudget
  /** The request bodies' windows over all sessions (h2BodyCredit.ts); past it, or past a connection's share of it (`own`), requests with a body are refused, `onBodyRefused` told. None: unbounded. */
  readonly bodyCredit?: BodyCredit
  readonly onBodyRefused?: (own: BodyShare) => void
}

/**
 * The head limit the HTTP/1.1 listener has (sidecar.ts gives it node's http.maxHeaderSize, 16 KiB
 * unless --max-http-header-size says otherwise): past it, a request head is refused 431 either way.
 */
const HEAD_LIMIT = nodeHttp.maxHeaderSize

/**
 * The time the reads of all h2c sessions get in one turn of the loop (mux/turnReads.ts): a flood of
 * callers then holds the loop about this long a turn, not 150-320 ms of CPU, and their reads go on
 * in the next turn.
 */
const TURN_READ_MS = 10

/** HTTP/2 connections handed over by the outbound listener (`accept`); each stream goes to `handler`, as HTTP/1.1 requests do. */
export const makeH2c = (handler: (call: OutboundCall) => void, options: H2Options): H2Listener => {
  const held = options.heldAnswers ?? { heldAnswerBytes: 0, refusedForHeldAnswers: 0, maxHeldAnswerBytes: Number.POSITIVE_INFINITY }
  const sessions = new Set<H2cSession>()
  // One timer for every session, while there are sessions: nothing per request or stream.
  let sweeper: NodeJS.Timeout | undefined
  const sweep = (): void => {
    const now = performance.now()
    for (const session of sessions) {
      const cut = session.sweep(now)
      if (cut > 0) options.onStalled(cut, session)
    }
  }
  const turnReads = new TurnReads(TURN_READ_MS)
  const sessionOptions = {
    idleTimeoutMs: options.idleTimeoutMs,
    maxStreams: options.maxStreams,
    answerIdleMs: options.answerIdleMs,
    headLimit: HEAD_LIMIT,
    held,
    bodyCredit: options.bodyCredit ?? new BodyCredit(Number.POSITIVE_INFINITY),
    onBodyRefused: options.onBodyRefused ?? (() => {}),
    turnReads,
    onEnded: options.onEnded,
    onClose: (session: H2cSession) => {
      sessions.delete(session)
      if (sessions.size > 0) return
      clearInterval(sweeper)
      sweeper = undefined
    }
  }
  // Connections whose set-up was put off (accept), and the drain if it began: what the drain does to
  // sessions reaches them too, or a set-up run after it made a session that took calls after the
  // GOAWAY, or that lived on after destroyAll (test/sidecar/h2c-accept-deferred).
  const putOff = new Set<net.Socket>()
  let closing: { readonly at: number; readonly deadlineMs: number | undefined } | undefined
  const accept = (socket: net.Socket, again = false): void => {
    if (socket.destroyed) return
    // Its set-up (the session, our SETTINGS written) waits for a turn with time left; the listener handed it over paused.
    if (turnReads.spent(performance.now())) {
      putOff.add(socket)
      return turnReads.putOff(() => {
        if (putOff.delete(socket)) accept(socket, true)
      }, again)
    }
    // A session closed (idle, PINGs bounded, the drain's GOAWAY) ends its socket and waits for the
    // caller's FIN: one that never sends it kept the socket, and its --max-app-connections place, for ever.
    boundPeerFin(socket)
    const session = new H2cSession(socket, handler, sessionOptions)
    if (session.destroyed) return
    sessions.add(session)
    // The listener paused it to hand it over with the preface unshifted.
    socket.resume()
    if (sweeper === undefined) {
      sweeper = setInterval(sweep, Math.max(1, options.answerIdleMs / SWEEPS))
      sweeper.unref()
    }
    if (closing !== undefined) session.connection.close(closing.deadlineMs === undefined ? undefined : Math.max(0, closing.deadlineMs - (performance.now() - closing.at)))
  }
  return {
    accept: (socket) => accept(socket),
    sessions,
    close: (deadlineMs) => {
      closing ??= { at: performance.now(), deadlineMs }
      for (const session of sessions) session.connection.close(deadlineMs)
    },
    destroyAll: () => {
      for (const socket of putOff) socket.destroy()
      putOff.clear()
      for (const session of [...sessions]) {
        session.connection.destroy("shutdown")
        destroyAfterGrace(session.socket)
      }
    }
  }
}
