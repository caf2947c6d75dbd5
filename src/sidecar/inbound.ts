// Inbound: a request from another sidecar (or a plain IIP caller), forwarded to the local app
// over keep-alive HTTP, the app's answer streamed back on the same channel. A cancel or a passed
// deadline aborts the request to the app. An app that cannot be reached is `app_unavailable`
// (not processed: safe to retry on another instance). The time left before the caller's deadline
// reaches the app as an `iip-timeout` header (ms), for it to pass on to its own calls.
//
// The peer's head is checked before the app sees a byte of it: a method and path that cannot form a
// request line are `bad_request`; headers go through headerFilter.ts (end-to-end ones only, valid
// ones only), and the framing is ours, from the body really sent: its length, or for a streamed
// body the length the peer declared (counted as it streams: a body that does not match is cut
// off, never written past it), else chunked. The app's answer goes back through the same filter,
// with the length the app declared for a streamed one (appExchange.ts runs the exchange); an answer status outside 200-599 is `app_failed`.
//
// No request holds an app socket for ever: one that carries no deadline (and every push) gets the
// default one; a streamed body that sends nothing for the body idle timeout is given up
// (`body_idle_timeout`); a push's answer is read and dropped, so its socket goes back to the pool.
//
// A request carrying `http-upgrade` (WebSocket and the like) goes to inboundUpgrade.ts once checked,
// authorized and observed like any other.
//
// Then the authorization policy decides (authorization.ts): a refused call never reaches the app;
// an allowed one carries the caller's verified identity to it in `x-iip-mesh-client-id`. Then the
// service's inbound rate limits (rateLimits.ts): a call over one never reaches the app either.
//
// Each request to the app pool counts in its peer's share of it (poolPeers.ts: the caller's verified
// identity, else its address): a peer stalling its answers cannot hold every socket (appPool.ts);
// each call to an h2c app in its peer's share of the streams to it, counted apart (appH2.ts).
import type { HandlerValue } from "../iip/dispatch.ts"
import type { Log } from "../iip/log.ts"
import { type Failure, failure, type IncomingRequest } from "../iip/server.ts"
import { monotonicMs } from "../mux/clock.ts"
import { PendingOutcome } from "../mux/request.ts"
import { MeshErrorCode } from "../protocol/mesh.ts"
import { AppExchange, type AppLeg } from "./appExchange.ts"
import type { AppH2Leg } from "./appH2.ts"
import type { CancelSource } from "./appH2ExchangeCore.ts"
import type { AppH2Request } from "./appH2RequestHead.ts"
import type { PoolPeer } from "./poolPeers.ts"
import { isGrpcPairs } from "./grpcStatus.ts"
import { AppPool } from "./appPool.ts"
import type { InboundAuthorization } from "./authorization.ts"
import { AddedPair, carriedProtocols, CLIENT_ID_HEADER, describedLength, endToEndPairs, isFieldValue, isToken, type OnInvalidHeader, TIMEOUT_HEADER, upgradeProtocols } from "./headerFilter.ts"
import { headersFromPlainQuery, headersOf, HttpMeta, sentValue } from "./httpEnvelope.ts"
import { type AppUpgradeLeg, upgradeApp } from "./inboundUpgrade.ts"
import { InboundObservation, type SidecarTelemetry } from "./observe.ts"
import type { AppStreamCounts } from "../telemetry/metrics.ts"
import { plainAnswer } from "./plainAnswer.ts"
import { PoolPeers } from "./poolPeers.ts"
import { LogThrottle } from "../iip/log.ts"
import { TunnelSeats } from "./tunnelSeats.ts"
import { TunnelStalls, tunnelLines } from "./tunnelStalls.ts"
import { HeldAnswers } from "./heldAnswers.ts"

const HEADER_PARAM = "__http_hdr__"
/** Lines at most, per window, saying sockets were taken back from a peer past its share of the app pool. */
const RECLAIM_LINES = 20
const RECLAIM_LINES_WINDOW_MS = 60_000

export interface InboundOptions {
  /** This sidecar's service, for its spans and metrics. */
  readonly service: string
  readonly appHost: string
  readonly appPort: number
  readonly telemetry: SidecarTelemetry
  /** Sockets to the app at most (keep-alive); requests past it wait for one. */
  readonly appPoolSize: number
  /** The bytes of the app's answers held gathered whole, all requests together (`maxQueuedBytes`; appExchange.ts). */
  readonly maxAnswerBytes: number
  /** A streamed request body that sends nothing for this long is given up. */
  readonly bodyIdleTimeoutMs: number
  /** A streamed answer the mesh takes nothing of for this long is given up. */
  readonly answerIdleTimeoutMs: number
  /** The deadline of a request that carries none, and of pushes. */
  readonly defaultTimeoutMs: number
  /** An upgraded connection to the app with no byte either way for this long is closed. */
  readonly upgradeIdleTimeoutMs: number
  /** An upgraded connection whose caller's bytes the app takes none of for this long is ended (tunnelStalls.ts). */
  readonly upgradeStallTimeoutMs: number
  /** Upgraded connections open to the app at once (inboundUpgrade.ts), in all and for one peer sidecar. */
  readonly maxTunnels: number
  readonly maxTunnelsPerPeer: number
  /** Streams open to an h2c app at once (appH2.ts); as many again may wait for one. */
  readonly appH2MaxStreams: number
  /** Bytes the h2c leg's answers hold at most, all streams together (heldAnswers.ts). */
  readonly appH2MaxHeldBytes: number
  /** Bytes the HTTP/1.1 leg's streamed answers hold at most, their paused sockets' kernel buffers counted (appExchange.ts). */
  readonly appPoolMaxHeldBytes: number
  /** Where the leg says what an operator should know (a tunnel ended overloaded). */
  readonly log: Log
  /**
   * How the app is spoken to: HTTP/1.1 (the pool), h2c (appH2.ts; upgrades still go over
   * HTTP/1.1), or auto: gRPC calls (by their content-type) over h2c, the rest over HTTP/1.1.
   */
  readonly appProtocol?: "http1" | "h2c" | "auto"
  /** Told how many header pairs of a message were dropped as invalid. */
  readonly onInvalidHeaders?: OnInvalidHeader
  /** The authorization gate; none: every caller is allowed (the caller's identity still reaches the app). */
  readonly authorization?: InboundAuthorization
  /** The inbound rate limits' check (rateLimits.ts): the refusal for a call over one, or undefined. */
  readonly rateLimit?: (identity: string | undefined, remoteAddress: string, headers: ReadonlyArray<readonly [string, string]>) => Failure | undefined
}

interface AppRequestHead {
  readonly method: string
  /** Path and query as the caller sent them (never percent-decoded). */
  readonly path: string
  readonly headers: Array<readonly [string, string]>
  readonly body: Buffer
}

/**
 * A request without HTTP metadata came from a plain IIP caller using the reference adapter's
 * convention. The app gets the path and query as they were on the wire, `__http_hdr__` taken out.
 */
const plainRequest = (request: IncomingRequest, onInvalid: OnInvalidHeader | undefined): AppRequestHead => {
  const headerArg = request.query.get(HEADER_PARAM)?.[0]
  const raw = request.rawPath
  const q = raw.indexOf("?")
  let path = q === -1 ? raw : raw.slice(0, q)
  if (q !== -1) {
    let query = ""
    for (const part of raw.slice(q + 1).split("&")) {
      if (part === HEADER_PARAM || part.startsWith(`${HEADER_PARAM}=`)) continue
      query = query === "" ? part : `${query}&${part}`
    }
    if (query !== "") path = `${path}?${query}`
  }
  const isEmpty = request.data.length === 2 && request.data[0] === 0x7b && request.data[1] === 0x7d
  return {
    method: isEmpty ? "GET" : "POST",
    path,
    headers: headerArg === undefined ? [] : endToEndPairs(headersFromPlainQuery(headerArg), onInvalid),
    body: isEmpty ? Buffer.alloc(0) : request.data
  }
}

/**
 * A path node can write in a request line as it is: origin form (or `*`), visible ASCII only, and
 * no `#`: a fragment is no part of a target (RFC 9112 §3.2), and an app that cuts it reads another
 * path than the one the policy was asked about. A sidecar never sends one; a hostile peer may.
 */
const isRequestTarget = (path: string): boolean => {
  if (path === "*") return true
  if (path.charCodeAt(0) !== 0x2f) return false
  for (let i = 1; i < path.length; i++) {
    const c = path.charCodeAt(i)
    if (c <= 0x20 || c >= 0x7f || c === 0x23) return false
  }
  return true
}

/** CONNECT in any case; only a method of its length is upper-cased to compare (OPTIONS is the one common one). */
const isConnect = (method: string): boolean => method.length === 7 && method.toUpperCase() === "CONNECT"

/** Why the head cannot go to the app as it is, or undefined. */
const badHead = (head: AppRequestHead, authority: string | undefined): string | undefined => {
  if (!isToken(head.method)) return "the method is not an HTTP token"
  // An app's 2xx makes its socket a tunnel (RFC 9110 §9.3.6) that the pool would hand the next
  // request; the outbound side never sends one, so only a rogue peer does. In any case: the upgrade
  // leg's node:http upper-cases a method (`connect` went out as CONNECT), and an app may too.
  if (isConnect(head.method)) return "CONNECT is not carried: the mesh tunnels upgrades (WebSocket) only"
  if (!isRequestTarget(head.path)) return "the path is not an origin-form request target (visible ASCII, no fragment)"
  if (authority !== undefined && !isFieldValue(authority)) return "the authority holds characters a Host header cannot"
  return undefined
}

/** An answer the HTTP/2 leg or an upgrade gives as a promise, into the pending outcome. */
const settleLater = (pending: PendingOutcome, answer: Promise<HandlerValue>): void => {
  answer.then(
    (value) => pending.settle(typeof value === "string" ? Buffer.from(value, "utf8") : value),
    (error: unknown) => pending.settle(failure(MeshErrorCode.handlerFailed, String(error), true))
  )
}

/** A call to the h2c leg: whatever it throws is the call's failure, never the session's. */
const forwardH2 = (h2: AppH2Leg, request: AppH2Request, observation: InboundObservation, cancel: CancelSource, pending: PendingOutcome, peer: PoolPeer): void => {
  try {
    h2.forward(request, observation, cancel, pending, peer)
  } catch (error) {
    pending.settle(failure(MeshErrorCode.handlerFailed, String(error), true))
  }
}

/** The first call, while the h2c leg's modules still load (imported below when the app speaks h2c). Apart from serve: a closure there made serve allocate a context on every call. */
const forwardH2Later = (h2Leg: Promise<AppH2Leg>, request: AppH2Request, observation: InboundObservation, cancel: CancelSource, pending: PendingOutcome, peer: PoolPeer): void =>
  void h2Leg.then(
    (h2) => forwardH2(h2, request, observation, cancel, pending, peer),
    (error: unknown) => pending.settle(failure(MeshErrorCode.handlerFailed, String(error), true))
  )

/** The caller's cancel ends the HTTP/1.1 exchange (apart from serve, as forwardH2Later). */
export interface InboundHandler {
  readonly handle: (request: IncomingRequest) => PendingOutcome
  /** Closes the app pool's sockets (the sidecar is stopping). */
  readonly close: () => Promise<void>
  /** The bytes of answers held gathered whole now (the answer budget's; a gauge reads it). */
  readonly answerBytes: () => number
  /** The places among open tunnels to the app (their refusals, a counter reads them). */
  readonly tunnels: TunnelSeats
  /** Requests waiting for a stream to an h2c app now, and those refused for want of one (none without the h2c leg). */
  readonly appStreams: () => AppStreamCounts
  /** Closes the HTTP/1.1 pool's idle sockets to the app but the most recently used one; how many it closed (AppPool.closeIdle). */
  readonly closeIdleAppSockets: () => number
}

export const makeInboundHandler = (options: InboundOptions): InboundHandler => {
  // Said when sockets are taken back from a peer past its share (at most once a stall per peer; a hostile one makes them as fast as that).
  // One line for both legs: the h2c leg's names its protocol, its places as poolSize.
  const reclaimLines = new LogThrottle(RECLAIM_LINES, RECLAIM_LINES_WINDOW_MS)
  const reclaimedLine = (protocol: "http1" | "h2c", share: number, places: number, peer: string, count: number, held: number): void => {
    const admitted = reclaimLines.admit()
    if (admitted !== undefined) options.log("app-pool-share-reclaimed", { app: `${options.appHost}:${options.appPort}`, protocol, peer, reclaimed: count, held, share, poolSize: places, ...admitted })
  }
  const pool: AppPool = new AppPool(options.appHost, options.appPort, options.appPoolSize, () => options.telemetry.metrics.http1StrayBytes("inbound"), (peer, count, held) =>
    reclaimedLine("http1", pool.share, options.appPoolSize, peer, count, held))
  // The HTTP/1.1 pool's sockets and the h2c leg's streams are shared apart: a peer's counts in one say nothing of the other.
  const peers = new PoolPeers()
  const h2Peers = new PoolPeers()
  // Said when answers are taken back past a held budget, throttled as the share's lines (a hostile caller stalls them as fast as it likes).
  const heldLine = (event: string, max: number) => {
    const lines = new LogThrottle(RECLAIM_LINES, RECLAIM_LINES_WINDOW_MS)
    return (count: number, bytes: number): void => {
      const admitted = lines.admit()
      if (admitted !== undefined) options.log(event, { app: `${options.appHost}:${options.appPort}`, takenBack: count, held: bytes, max, ...admitted })
    }
  }
  const leg: AppLeg = {
    pool,
    answers: { held: 0, max: options.maxAnswerBytes },
    held: new HeldAnswers(options.appPoolMaxHeldBytes, heldLine("app-pool-held-taken-back", options.appPoolMaxHeldBytes), "--app-pool-max-held-bytes"),
    address: `${options.appHost}:${options.appPort}`,
    bodyIdleTimeoutMs: options.bodyIdleTimeoutMs,
    answerIdleTimeoutMs: options.answerIdleTimeoutMs,
    onInvalidHeaders: options.onInvalidHeaders
  }
  const onInvalid = options.onInvalidHeaders
  const clientId = new AddedPair(CLIENT_ID_HEADER)
  // node:http2 costs about 4 MB of memory: it loads only for an app spoken to over h2c.
  let h2Loaded: AppH2Leg | undefined
  const h2Leg: Promise<AppH2Leg> | undefined = options.appProtocol === "h2c" || options.appProtocol === "auto"
    ? import("./appH2.ts").then(({ AppH2Leg }) => {
        const held = new HeldAnswers(options.appH2MaxHeldBytes, heldLine("app-h2-held-taken-back", options.appH2MaxHeldBytes))
        const loaded: AppH2Leg = new AppH2Leg(options.appHost, options.appPort, onInvalid, options.answerIdleTimeoutMs, options.appH2MaxStreams, (peer, count, held) =>
          reclaimedLine("h2c", loaded.peers.share, loaded.placesNow(), peer, count, held), held)
        return (h2Loaded = loaded)
      })
    : undefined
  const h2Only = options.appProtocol === "h2c"
  const upgradeLeg: AppUpgradeLeg = {
    appHost: options.appHost,
    appPort: options.appPort,
    address: leg.address,
    upgradeIdleTimeoutMs: options.upgradeIdleTimeoutMs,
    onInvalidHeaders: onInvalid,
    tunnels: new TunnelSeats(options.maxTunnels, options.maxTunnelsPerPeer),
    log: options.log,
    overloadLines: tunnelLines(),
    stalls: new TunnelStalls(options.upgradeStallTimeoutMs, options.log)
  }
  // The answer goes back as a PendingOutcome, not a promise: no promise chain per request.
  const handle = (request: IncomingRequest): PendingOutcome => {
    const pending = new PendingOutcome()
    serve(request, pending)
    return pending
  }
  const serve = (request: IncomingRequest, pending: PendingOutcome): void => {
    const plain = !request.meta.has(HttpMeta.method)
    const head: AppRequestHead = plain
      ? plainRequest(request, onInvalid)
      : { method: request.meta.get(HttpMeta.method)!, path: request.rawPath, headers: headersOf(request.meta, onInvalid), body: request.data }
    const authority = request.meta.get(HttpMeta.authority)
    const refused = badHead(head, authority)
    if (refused !== undefined) return pending.settle(failure(MeshErrorCode.badRequest, refused, false))
    const peer = request.context.peerIdentity
    if (options.authorization !== undefined) {
      const denied = options.authorization.check(peer, head.method, head.path, request.context.remoteAddress)
      if (denied !== undefined) return pending.settle(denied)
    }
    const limited = options.rateLimit?.(peer, request.context.remoteAddress, head.headers)
    if (limited !== undefined) return pending.settle(limited)
    // The filter dropped any the caller sent: the app sees the verified identity or nothing.
    if (peer !== undefined && isFieldValue(peer)) head.headers.push(clientId.of(peer))
    const { deadline, oneway, stream } = request.context
    const timeLeft = deadline > 0 ? Math.max(1, deadline - monotonicMs()) : 0
    const asked = request.meta.get(HttpMeta.upgrade)
    const protocols = upgradeProtocols(asked)
    if (asked !== undefined && protocols === undefined) return pending.settle(failure(MeshErrorCode.badRequest, "the upgrade names no valid protocol list", false))
    if (protocols !== undefined && carriedProtocols(protocols) !== protocols) return pending.settle(failure(MeshErrorCode.badRequest, "the upgrade names h2c, which the mesh never carries", false))
    // A push gets no answer, so nobody would read its tunnel: the app's socket would hold a place among maxTunnels for nothing.
    if (protocols !== undefined && oneway) return pending.settle(failure(MeshErrorCode.badRequest, "an upgrade cannot be sent one-way: its tunnel is its answer", false))
    const observation = new InboundObservation(options.telemetry, options.service, head.method, head.path, head.headers, request.context.remoteAddress)
    observation.callApp(options.appHost, options.appPort, head.headers)
    if (protocols !== undefined) {
      const upgradeHeaders: Array<string> = []
      for (const [name, value] of head.headers) upgradeHeaders.push(name, value)
      upgradeHeaders.push("host", authority ?? pool.authority)
      // The peer's deadline covers the wait for the 101; the upgraded connection has only its idle timeout.
      const waitMs = timeLeft > 0 ? timeLeft : options.defaultTimeoutMs
      return settleLater(pending, upgradeApp(upgradeLeg, request, { method: head.method, path: head.path, headers: upgradeHeaders, protocols }, observation, waitMs))
    }
    if (h2Leg !== undefined && (h2Only || isGrpcPairs(head.headers))) {
      if (stream === undefined) observation.requestBytes(0)
      const waitMs = deadline === 0 || oneway ? options.defaultTimeoutMs : timeLeft
      const h2Request: AppH2Request = { method: head.method, path: head.path, authority: authority ?? pool.authority, headers: head.headers, body: stream ?? head.body, timeLeftMs: waitMs, maxMetaBytes: request.context.maxMetaBytes, plain, trailers: request.context.trailers }
      // A plain caller's answer goes back whole: gathered here, within the answer budget.
      const answer = plain ? plainAnswer(leg.answers, leg.address, pending) : pending
      // Once loaded, the leg is called at once: no promise per call.
      const h2Peer = h2Peers.of(request.context.remoteAddress, peer)
      if (h2Loaded !== undefined) return forwardH2(h2Loaded, h2Request, observation, request.context.cancel, answer, h2Peer)
      return forwardH2Later(h2Leg, h2Request, observation, request.context.cancel, answer, h2Peer)
    }
    // One flat list, as the pool takes it; the hop's own headers after the peer's filtered ones.
    // Index loops: destructuring each pair in a for-of costs an iterator per pair.
    const pairs = head.headers
    const headers: Array<string> = []
    for (let i = 0; i < pairs.length; i++) {
      const pair = pairs[i]!
      headers.push(pair[0], pair[1])
    }
    if (authority !== undefined) headers.push("host", authority)
    if (timeLeft > 0) headers.push(TIMEOUT_HEADER, String(timeLeft))
    // A streamed body keeps the length its sender declared (held to it on the way); none: chunked.
    const declared = stream === undefined ? undefined : describedLength(sentValue(request.meta, "content-length"))
    if (declared !== undefined) headers.push("content-length", declared)
    if (stream === undefined) observation.requestBytes(head.body.length)
    const exchange = new AppExchange(leg, {
      method: head.method,
      path: head.path,
      headers,
      checked: true,
      body: stream ?? head.body,
      declaredLength: declared === undefined ? -1 : Number(declared),
      maxMetaBytes: request.context.maxMetaBytes,
      plain,
      oneway
    }, observation, pending)
    // The context's cancellation, not its AbortSignal: that one would be made for this alone.
    const cancel = request.context.cancel
    if (cancel.aborted) return exchange.handleEvent()
    // The exchange listens itself (its handleEvent): no closure per request; it stops when it ends.
    exchange.listen(cancel)
    // The mesh session enforces a deadline it was given, except for a push, until the answer streams; the rest get ours.
    exchange.start(deadline === 0 ? options.defaultTimeoutMs : oneway ? timeLeft : 0, deadline === 0 || oneway ? 0 : timeLeft, peers.of(request.context.remoteAddress, peer))
  }
  return { handle, close: async () => {
    await (await h2Leg)?.close()
    await pool.destroy()
  }, closeIdleAppSockets: () => pool.closeIdle(1), answerBytes: () => leg.answers.held, tunnels: upgradeLeg.tunnels, appStreams: () => ({ waiting: h2Loaded?.waitingStreams ?? 0, refused: h2Loaded?.refused ?? 0, longStreamsRefused: h2Loaded?.longStreamsRefused ?? 0, sessionsRotated: h2Loaded?.sessionsRotated ?? 0, resetRefused: h2Loaded?.resetRefused ?? 0, eventStreamsRefused: pool.eventStreamsRefused, poolWaiting: pool.waitingCount, poolSharePassed: pool.sharePassed + (h2Loaded?.peers.sharePassed ?? 0), poolShareReclaimed: pool.shareReclaimed + (h2Loaded?.peers.shareReclaimed ?? 0), h2HeldBytes: h2Loaded?.held.bytes ?? 0, h2HeldTakenBack: h2Loaded?.held.takenBack ?? 0, poolHeldBytes: leg.held.bytes, poolHeldTakenBack: leg.held.takenBack }) }
}
