// The outbound listener's second protocol: cleartext HTTP/2 with prior knowledge (what gRPC
// clients send) on the same port as HTTP/1.1. The listener (http1Connection.ts) tells a new
// connection apart by its first bytes and hands one that opens with the HTTP/2 preface to a
// node:http2 server here. Each HTTP/2 stream is one request for outbound.ts (a StreamCall over
// node's core stream API: the compatibility layer's request and response objects cost a gRPC call
// more CPU than the mesh's own work), so the calls of one gRPC channel are balanced one by one, not
// pinned to an endpoint. A request body that ends within the turn of the event loop its head came
// in (a unary call's) is held whole: it travels as one mesh message and may be retried; any other streams.
// A request whose END_STREAM came goes on at the end of that turn, not at once: one its caller reset
// later in the same read (rapid reset, CVE-2023-44487) goes nowhere (outboundH2Call.ts, sendsAtTurnEnd);
// a session whose caller resets most of its streams soon after they began, in later reads too, ends
// (outboundH2Premature.ts).
// A stream whose answer makes no progress for the answer idle timeout (a caller that grants it no
// window while it keeps its session busy) is reset on its own by one sweep over the listener's sessions.
// A caller PINGing with no stream open is bounded too: PINGs under 1 s apart again and again, once
// it has taken no answer for the answer idle timeout, end the session (GOAWAY ENHANCE_YOUR_CALM), and
// the sweep asks one with no stream for twice the idle timeout to go, PINGs or not.
// Answer bytes a stream holds unsent (its caller grants no window) count in the HTTP/1.1 listener's
// budget of held answers (maxQueuedBytes): past it a new stream is refused 503 overloaded, as a new
// HTTP/1.1 request is, so many streams at window 0 cannot grow the process without end.
// A request head past the HTTP/1.1 listener's head limit is refused here too (431, or node's reset
// once the caller has the advertised limit: HEAD_LIMIT), never sent on to an app that would refuse it.
// Its parts: each stream as a call (outboundH2Call.ts), the sessions' bounds (outboundH2Session.ts).
import * as http2 from "node:http2"
import type * as net from "node:net"
import { boundPeerFin } from "../mux/peerFin.ts"
import { PlacedSet } from "../mux/placedSet.ts"
import { nodeHttp } from "../toolkit/nodeHttp.ts"
import type { OutboundCall } from "./outboundCall.ts"
import type { HeldAnswerBudget } from "./http1Listener.ts"
import { type AnswerTaking, StreamCall, SWEEPS } from "./outboundH2Call.ts"
import { PrematureResets } from "./outboundH2Premature.ts"
import { heldAnswersRefusal, sendProxyError } from "./proxyError.ts"
import {
  ACCEPTED,
  type AcceptedSocket,
  destroySession,
  endIfStalled,
  endSession,
  cutStalled,
  MIN_PING_INTERVAL_MS,
  OPEN,
  PING_STRIKES,
  QUIET_SINCE,
  QUIET_TIMEOUTS,
  SOCKET,
  STREAMED,
  type SweptSession,
  takingAnswer,
  type SessionEndReason,
  TOO_MANY_PINGS,
  watchAfterFin
} from "./outboundH2Session.ts"

export { ANSWER_STALLED } from "./outboundH2Call.ts"

export interface H2Listener {
  /** A connection that opened with the preface (unread: the preface is still to be read). */
  readonly accept: (socket: net.Socket) => void
  /** Sessions open now (for the drain). */
  readonly sessions: ReadonlySet<http2.ServerHttp2Session>
  /** Asks every session to finish its streams and take no new ones (GOAWAY). */
  readonly close: () => void
  /** Ends every session now. */
  readonly destroyAll: () => void
}

export interface H2Options {
  /** A session with no frame either way this long gets GOAWAY. */
  readonly idleTimeoutMs: number
  readonly maxStreams: number
  /** A stream whose answer waits this long with none of it taken is reset. */
  readonly answerIdleMs: number
  /** Told after a sweep that reset `streams` streams of one session (their answers stalled). */
  readonly onStalled: (streams: number, session: http2.ServerHttp2Session) => void
  /** Told when a caller's session was ended for abuse (GOAWAY ENHANCE_YOUR_CALM with `reason`). */
  readonly onEnded: (reason: SessionEndReason, session: http2.ServerHttp2Session) => void
  /** The outbound listener's held answers (http1Listener.ts): streams count their unsent answer bytes in them; past them new streams are refused. None: counted apart, unbounded. */
  readonly heldAnswers?: HeldAnswerBudget
}

/**
 * The head limit the HTTP/1.1 listener has (sidecar.ts gives it node's http.maxHeaderSize, 16 KiB
 * unless --max-http-header-size says otherwise): past it, a request head is refused 431 either way.
 */
const HEAD_LIMIT = nodeHttp.maxHeaderSize

/** nghttp2's bound on a caller's RST_STREAMs, raised to a backstop (makeH2c): 100 times its burst, 300 times its rate. */
const RESET_BACKSTOP_BURST = 100_000
const RESET_BACKSTOP_PER_SECOND = 10_000

/** A stream of a caller gone (its FIN) that still waits for its request's frames is cut (StreamCall.callerEnded). */
const cutWaiting = (call: StreamCall): void => call.callerEnded()

/** HTTP/2 connections handed over by the outbound listener (`accept`); each stream goes to `handler`, as HTTP/1.1 requests do. */
export const makeH2c = (handler: (call: OutboundCall) => void, options: H2Options): H2Listener => {
  const held = options.heldAnswers ?? { heldAnswerBytes: 0, refusedForHeldAnswers: 0, maxHeldAnswerBytes: Number.POSITIVE_INFINITY }
  // strictSingleValueFields off: a field HTTP/2 names single-value (content-type, etag...) that a
  // far app gave twice is carried as it came, as HTTP/1.1 carries it; node would throw from
  // respond() (the stream reset with no answer) or from sendTrailers() inside its 'wantTrailers'
  // event (the sidecar's process gone).
  // maxHeaderListSize: the head limit, advertised (SETTINGS_MAX_HEADER_LIST_SIZE, RFC 9113 §6.5.2).
  // node applies it only once the caller has acknowledged these SETTINGS, and then resets a stream
  // past it (RST_STREAM ENHANCE_YOUR_CALM) before 'stream': no answer can be written for a stream
  // it never hands over. The requests a caller sends before (a new connection's first, which
  // curl, node's and gRPC's clients send with the preface) node lets through up to its own bounds
  // (128 fields of up to 64 KiB): StreamCall measures those, refused 431 by outbound.ts.
  // streamResetBurst, streamResetRate: nghttp2's own bound on the RST_STREAMs a caller sends (1,000
  // at once, 33 a second by default) counts every one, a gRPC call's deadline cancel too, and ends
  // the session with GOAWAY INTERNAL_ERROR: a grpc-js client with 100 calls in flight on 1-20 ms
  // deadlines lost its session so (its calls in flight failed INTERNAL) within 1,500 calls. A's
  // own rule counts the resets that cost work nobody waits for (premature ones, outboundH2Premature.ts),
  // so nghttp2's is raised to a backstop past any rate this sidecar serves.
  const h2 = http2.createServer({
    settings: { maxConcurrentStreams: options.maxStreams, maxHeaderListSize: HEAD_LIMIT },
    strictSingleValueFields: false,
    streamResetBurst: RESET_BACKSTOP_BURST,
    streamResetRate: RESET_BACKSTOP_PER_SECOND
  })
  const sessions = new Set<http2.ServerHttp2Session>()
  // One timer for every session, while there are sessions: nothing per request or stream. A
  // session's own checks (idle, stalled) see only the whole session, which a caller that keeps it
  // busy (PINGs, other streams) never lets look idle.
  let sweeper: NodeJS.Timeout | undefined
  const sweep = (): void => {
    const now = performance.now()
    for (const session of sessions) {
      const swept = session as SweptSession
      const open = swept[OPEN]
      // An idle timeout that PINGs do not reset: node's timer counts them once the session has a
      // 'ping' listener (the PING floor's, below), so a PING now and then would keep a session with
      // no stream (and its --max-app-connections place) for ever.
      if (open.size > 0 || swept[STREAMED]) {
        swept[QUIET_SINCE] = now
        swept[STREAMED] = false
      } else if (now - swept[QUIET_SINCE] >= QUIET_TIMEOUTS * options.idleTimeoutMs && !session.closed) session.close()
      const cut = cutStalled(open)
      if (cut > 0) options.onStalled(cut, session)
    }
  }
  h2.on("session", (session: http2.ServerHttp2Session) => {
    const open = new PlacedSet<StreamCall>()
    // The socket as accepted, read through session.socket (a proxy that passes reads on to it, as
    // node documents): not a variable accept() sets around its emit, which held only while node
    // emits 'session' within that emit (node 24 does; nothing documents it).
    const accepted = (session.socket as AcceptedSocket)[ACCEPTED]
    ;(session as SweptSession)[SOCKET] = accepted
    ;(session as SweptSession)[OPEN] = open
    ;(session as SweptSession)[QUIET_SINCE] = performance.now()
    ;(session as SweptSession)[STREAMED] = false
    let lastPing = -Infinity
    let pingStrikes = 0
    // A stream came since the last PING: a PING that follows a call, as grpc-go's BDP probe follows
    // its answer's data, often reaches A after the stream closed, and is no strike.
    let streamSincePing = false
    // When the caller was last seen taking an answer (a stream of it closed here, or it gave back
    // window since), and the connection window it had then left: see takingAnswer.
    const taking: AnswerTaking = { at: -Infinity, window: -1 }
    // Its streams, and those its caller reset soon after they began, before any answer (sent on or
    // not): past the rule, the session ends (GOAWAY ENHANCE_YOUR_CALM).
    const premature = new PrematureResets(session, (reason) => options.onEnded(reason, session))
    session.on("ping", () => {
      const now = performance.now()
      if (open.size > 0 || streamSincePing || takingAnswer(session, taking, now, options.answerIdleMs)) {
        pingStrikes = 0
        streamSincePing = false
      } else if (now - lastPing < MIN_PING_INTERVAL_MS && ++pingStrikes > PING_STRIKES) {
        endSession(session, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, TOO_MANY_PINGS)
        return options.onEnded("too_many_pings", session)
      }
      lastPing = now
    })
    // The caller's FIN: HTTP/2 half-closes streams, never the connection (RFC 9113 §5.1), so a stream
    // still waiting for its request's frames gets none now. node keeps such a stream (the listener
    // takes half-open sockets), and its request stayed in flight to its deadline: it is cut as a
    // caller gone. A whole request's answer still goes out.
    // A FIN read before the session took the socket (it came while node:http2 loaded, the first h2c
    // connection) ends it before its streams come: those come after it, and are cut as they come.
    // Answers after the FIN that wait for window, which can never come now, are cut too: at once
    // that could cut a live one (a turn after a write), so by looks a while apart (watchAfterFin).
    let callerGone = false
    const lookAfterFin = watchAfterFin(session, accepted, open)
    accepted.once("end", () => {
      callerGone = true
      for (const call of open) {
        call.callerEnded()
        call.lookedAfterFin(lookAfterFin)
      }
      lookAfterFin()
    })
    session.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number, rawHeaders: Array<string>) => {
      streamSincePing = true
      ;(session as SweptSession)[STREAMED] = true
      const call = new StreamCall(stream, headers, flags, rawHeaders, open, taking, premature, HEAD_LIMIT, held)
      // As an HTTP/1.1 request: while callers hold more answers unsent than the budget, none more is taken.
      if (held.heldAnswerBytes > held.maxHeldAnswerBytes) {
        held.refusedForHeldAnswers++
        sendProxyError(call, heldAnswersRefusal(held.heldAnswerBytes))
      } else handler(call)
      // Once the frames read with its head are all in (its END_STREAM may follow in them: then it is whole).
      if (callerGone) {
        setImmediate(cutWaiting, call)
        call.lookedAfterFin(lookAfterFin)
      }
    })
    // A session with no frame either way this long is asked to go (GOAWAY), like an idle keep-alive
    // connection; its open streams may finish. One whose streams cannot (a caller that grants no
    // window to their answers, each holding up to 64 KiB) is ended once nothing moves for as long again.
    session.setTimeout(options.idleTimeoutMs, () => {
      session.close()
      endIfStalled(session, open, options.idleTimeoutMs, -1)
    })
    sessions.add(session)
    if (sweeper === undefined) {
      sweeper = setInterval(sweep, Math.max(1, options.answerIdleMs / SWEEPS))
      sweeper.unref()
    }
    session.on("close", () => {
      sessions.delete(session)
      if (sessions.size > 0) return
      clearInterval(sweeper)
      sweeper = undefined
    })
    // A broken session is its streams' failure; nothing to do beyond it.
    session.on("error", () => {})
  })
  return {
    accept: (socket) => {
      // Closed by its caller while node:http2 loaded (the first h2c connection): nothing to serve,
      // and node would wrap the handle-less socket in a JSStreamSocket of its own, the one
      // session.socket then reads through to, which names no accepted socket.
      if (socket.destroyed) return
      // A session closed (idle, PINGs bounded, the drain's GOAWAY) ends its socket and waits for the
      // caller's FIN: one that never sends it kept the socket, and its --max-app-connections place, for ever.
      boundPeerFin(socket)
      ;(socket as AcceptedSocket)[ACCEPTED] = socket
      h2.emit("connection", socket)
    },
    sessions,
    close: () => {
      for (const session of sessions) session.close()
    },
    destroyAll: () => {
      for (const session of sessions) destroySession(session)
    }
  }
}
