// The bounds on the outbound listener's h2c sessions (outboundH2.ts sets them up): what the sweep
// notes on a session (its open calls, since when it is quiet), its end when asked to go and stalled,
// the PING floor for a caller that PINGs with no stream open (unless it is still taking an answer),
// and the reset of streams whose answers stalled. Per session and per sweep: nothing per request.
import * as http2 from "node:http2"
import type * as net from "node:net"
import { Cancelled } from "../mux/meshChannels.ts"
import { destroyAfterGrace } from "../mux/peerFin.ts"
import type { PlacedSet } from "../mux/placedSet.ts"
import type { AnswerTaking, StreamCall } from "./outboundH2Call.ts"

/**
 * Ends a session asked to go if no byte moved either way in `ms` while one of its streams holds
 * answer bytes, or while it has no stream open (checked again until it ends); `moved`: the count
 * at the last check. A stream with nothing to send (a long poll, a quiet gRPC server stream) is
 * idle, not stalled: it may wait. A session asked to go with no stream open that is still there
 * holds only its own last frames (GOAWAY, a reset), behind bytes the caller does not take: the
 * sweep reset its stalled streams before it went idle (an answer idle timeout below the idle one).
 */
export const endIfStalled = (session: http2.ServerHttp2Session, open: PlacedSet<StreamCall>, ms: number, moved: number): void => {
  if (session.destroyed) return
  const socket = session.socket
  const now = socket.bytesRead + socket.bytesWritten
  if (now === moved) {
    if (open.size === 0) return destroySession(session)
    for (const call of open) if (call.answerWaiting) return destroySession(session)
  }
  setTimeout(endIfStalled, ms, session, open, ms, now).unref()
}

/** How often a session whose caller sent its FIN is looked at for answers that can never go (watchAfterFin): one cut lasts two looks. */
const FIN_LOOK_MS = 250

/**
 * Whether the caller's socket has taken every byte the session wrote to it: node:http2 writes
 * through the socket's own handle, so its Writable counts none of them; libuv's write queue
 * (the handle's writeQueueSize, as net.Socket's bufferSize reads it) does. Without a handle (the
 * socket wrapped while node:http2 loaded) it is not known: taken as busy, nothing cut for it.
 */
const socketTookAll = (socket: net.Socket): boolean => {
  const handle = (socket as { readonly _handle?: { readonly writeQueueSize?: unknown } | null })._handle
  return typeof handle?.writeQueueSize === "number" && handle.writeQueueSize === 0
}

/**
 * Looks, FIN_LOOK_MS apart while answers wait, at a session whose caller sent its FIN: it can never
 * send WINDOW_UPDATE again, so an answer waiting for window never goes. One is told apart from one
 * waiting for a slow reader's socket, or for nghttp2's next write (a turn after bytes were written
 * none has left), across two looks: none of it left in between and the socket took all it was given
 * (StreamCall.lookAfterFin). Armed at the FIN and by each answer write after it (a call told
 * through lookedAfterFin); stopped with the session. One timer per such session, nothing per stream.
 */
export const watchAfterFin = (session: http2.ServerHttp2Session, socket: net.Socket, open: PlacedSet<StreamCall>): (() => void) => {
  let timer: NodeJS.Timeout | undefined
  const look = (): void => {
    timer = undefined
    if (session.destroyed) return
    const socketIdle = socketTookAll(socket)
    let waiting = false
    for (const call of open) if (call.lookAfterFin(socketIdle)) waiting = true
    if (waiting) arm()
  }
  const arm = (): void => {
    if (timer === undefined && !session.destroyed) timer = setTimeout(look, FIN_LOOK_MS).unref()
  }
  session.once("close", () => clearTimeout(timer))
  return arm
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
export type SweptSession = http2.ServerHttp2Session & { [OPEN]: PlacedSet<StreamCall>; [QUIET_SINCE]: number; [STREAMED]: boolean; [SOCKET]: net.Socket }

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
export const cutStalled = (open: PlacedSet<StreamCall>): number => {
  let cut = 0
  for (const call of open) {
    if (!call.stalled()) continue
    call.cutStalled()
    cut++
  }
  return cut
}

/** Why A ended a caller's session (GOAWAY ENHANCE_YOUR_CALM): its debug data, and the metric's reason. */
export type SessionEndReason = "too_many_pings" | "too_many_premature_resets"

/** A token bucket's tokens at `now` that held `tokens` at `since` (ms, performance.now()): `perSecond` earned back, at most `burst`. */
export const refill = (tokens: number, since: number, now: number, burst: number, perSecond: number): number =>
  Math.min(burst, tokens + ((now - since) * perSecond) / 1000)
