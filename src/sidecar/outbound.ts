// Outbound: the local app's HTTP call, in the order it happens. The app names the target service
// by Host (`catalog`, `catalog.mesh`) or by an absolute URI (so HTTP_PROXY works); the registry's
// balancer picks an endpoint; the request goes over that endpoint's pooled IIP connection (mesh
// mode: head in metadata, body streamed, the remaining deadline in the envelope; plain IIP: the
// reference adapter's `__http_hdr__` convention); the answer streams back to the app. A body is
// gathered whole only up to 64 KiB (held for retries) or for a plain IIP peer (one packet), and
// then within the request's deadline (outboundBody.ts).
//
// Retries go to another endpoint, only where safe: the request was not processed (no connection,
// refused while draining or overloaded, its app not listening), or its method is idempotent and
// the try failed in transport (connection lost, per-try timeout, the far side's own error), or
// took so long without an answer that another endpoint is worth a try (slowTry.ts). Every
// retry needs the service's retry budget and the body held whole; all tries share one deadline,
// which the app may shorten with an `iip-timeout` header (ms). Every endpoint at its concurrency
// limit sheds the request: 503 with retry-after. An event stream (a GET accepting
// text/event-stream) holds its channel as long as it lives: it takes a stream place on the
// connections to the endpoint, as an upgrade does; with none left there it goes to another
// endpoint (no retry budget: nothing was sent), and with none left on any it may try, is refused
// 503 at once.
//
// This module is the exchange and the handler; its parts are apart: the request's target
// (outboundTarget.ts), its route (outboundRoute.ts), which failures may be retried
// (outboundRetry.ts), the bodies (outboundBody.ts), its end and access record (outboundAccess.ts).
import type { IipClient } from "../iip/client.ts"
import { Cancellation } from "../mux/cancellation.ts"
import type { Deadlines } from "../mux/deadlines.ts"
import { monotonicMs } from "../mux/clock.ts"
import { StreamPlacesLimit } from "../iip/client.ts"
import { ConnectFailed, Overloaded, RequestTimeout } from "../mux/errors.ts"
import { Cancelled } from "../mux/meshChannels.ts"
import type { IncomingStream } from "../mux/streams.ts"
import { type MeshReply, RemoteError } from "../mux/meshSession.ts"
import { EnvelopeError, MeshErrorCode } from "../protocol/mesh.ts"
import type { MetaEntries } from "../protocol/metaEntries.ts"
import type { EndpointLease } from "./endpoints.ts"
import { type Failure, OutboundObservation } from "./observe.ts"
import { recordOutboundEnd } from "./outboundAccess.ts"
import { type BodyGather, pipeToResponse, plainStatus, readBody } from "./outboundBody.ts"
import type { HeldBodyReceiver, OutboundCall, OutboundRequest, OutboundResponse } from "./outboundCall.ts"
import type { OutboundOptions } from "./outboundOptions.ts"
import { dialRefusalOf, FREE_REFUSED_DIALS, IDEMPOTENT, MAX_ATTEMPTS, notProcessed, refusedByPolicy, refusedOrDraining, transportFailure } from "./outboundRetry.ts"
import { applyRoute, chooseRoute } from "./outboundRoute.ts"
import { appTimeoutMs, isEventStream, pickContext, type Target, targetOf } from "./outboundTarget.ts"
import { describedLength, endToEndHeaders } from "./headerFilter.ts"
import { grpcStatusIn, isGrpc, sendGrpcError } from "./grpcStatus.ts"
import { headersOf, HttpMeta, plainRequestPath, requestMeta, sentValue, trailersOf, withForwarded } from "./httpEnvelope.ts"
import { ProxyError, proxyErrorOf, sendProxyError } from "./proxyError.ts"
import { sendMirror } from "./mirror.ts"
import type { RouteCounters } from "./routeCounters.ts"
import type { SubsetChoice } from "./routing.ts"
import { slowTryAfterMs, TryWatch } from "./slowTry.ts"
import { ShapeAnchor } from "../mux/shapeAnchor.ts"

/** Bodies up to this size travel as one message; larger or unknown-length ones stream. */
const WHOLE_BODY_LIMIT = 64 * 1024
/** A plain IIP peer takes one packet. */
const PLAIN_BODY_LIMIT = 16 * 1024 * 1024
/** No endpoint tried yet (registry.hasUntried's question before a first try). */
const NONE_TRIED: ReadonlySet<string> = new Set()

/** The status a peer answered with, if it is one an app may get: a final status, 200-599 (no 1xx, no 101 switch). */
const statusOf = (meta: MeshReply["meta"]): number | undefined => {
  const text = meta.get(HttpMeta.status)
  return text !== undefined && /^[2-5]\d\d$/.test(text) ? Number(text) : undefined
}

/** Keeps the hidden class of OutboundExchange alive while idle (shapeAnchor.ts). */
const exchangeShape = new ShapeAnchor<OutboundExchange>()

/**
 * One request from the app, from its head to the end of its answer. A class rather than closures:
 * its steps are methods, its state fields, so a request allocates this object and little else.
 */
class OutboundExchange implements HeldBodyReceiver, BodyGather {
  private readonly options: OutboundOptions
  readonly req: OutboundRequest
  private readonly res: OutboundResponse
  private readonly started: number
  private readonly method: string
  private readonly observation: OutboundObservation
  private target: Target | undefined = undefined
  private endpointName = "-"
  private attempts = 0
  /** Of `attempts`, the refused dials that cost the request no try (FREE_REFUSED_DIALS). */
  private freeTries = 0
  /** Of `attempts`, every dial the guard refused (free or not): nothing was sent on them, so the span and access log leave them out. */
  private refusedTries = 0
  /** The last try was refused by the dial guard: nothing sent, so the next one is no retry (iip_mesh_retries_total). */
  private lastRefused = false
  /** The first endpoint tried; a Set only once there is a second (a retry). */
  private firstTried: string | undefined = undefined
  private tried: Set<string> | undefined = undefined
  /** The app went away before its answer was written: the current try (and its body) stop. */
  private appGone = false
  /** The current try's cancellation; it stays the current one while the answer streams. */
  private tryControl: Cancellation | undefined = undefined
  /** Ends a route's injected delay early (the app went away): clears its timer. */
  private releaseHold: (() => void) | undefined = undefined
  /** The counters of the route that chose the request's subset, if one did (routeCounters.ts). */
  private routeCounters: RouteCounters | undefined = undefined
  // The request as forward() and send() made it, kept for its tries (each a step from a callback).
  /** The service the balancer picks in: the target's, or the one a route's split chose. */
  private service = ""
  private subset: string | undefined = undefined
  private choice: SubsetChoice | undefined = undefined
  private headers: Array<readonly [string, string]> | undefined = undefined
  private body: Uint8Array | AsyncIterable<Buffer> | undefined = undefined
  /** The body is held whole: a retry can send it again. */
  private whole = false
  /** The body's declared length (NaN for none). */
  private bodyLength = NaN
  private meta: MetaEntries | undefined = undefined
  private context: ReturnType<typeof pickContext> | undefined = undefined
  private deadline = 0
  /** What the deadline allows the whole request (ms). */
  private timeoutMs = 0
  private perTryTimeoutMs: number | undefined = undefined
  private maxAttempts = MAX_ATTEMPTS
  /** The last try's failure, thrown when no endpoint is left for a retry. */
  private lastError: unknown = undefined
  // The current try.
  private lease: EndpointLease | undefined = undefined
  private tryStarted = 0
  private tryDeadline = 0
  private slowAfterMs = 0
  private watch: TryWatch | undefined = undefined
  // A body being gathered (readBody): its deadline's place on the handler's heap, and whether it passed.
  private readonly bodyDeadlines: Deadlines<BodyGather>
  deadlineSlot = -1
  deadlineAt = 0
  bodyLate = false

  constructor(options: OutboundOptions, req: OutboundRequest, res: OutboundResponse, deadlines: Deadlines<BodyGather>) {
    exchangeShape.newest = this
    this.options = options
    this.bodyDeadlines = deadlines
    this.req = req
    this.res = res
    this.method = req.method
    this.started = req.startedAt
    this.observation = new OutboundObservation(options.telemetry, this.method, req.headers, this.started)
  }

  run(): void {
    const { res, options } = this
    const count = options.inFlight
    if (count !== undefined) count.value++
    res.onClose((finished) => {
      if (count !== undefined) count.value--
      if (finished) return
      this.appGone = true
      this.tryControl?.abort()
      this.releaseHold?.()
    })
    try {
      this.forward()
    } catch (error) {
      this.fail(error)
    }
  }

  /**
   * The request's head, in the order it happens, up to its body. Synchronous, as are the steps
   * after it: the common request (its body here with its head, a live mesh connection, an answer
   * held whole) goes out and comes back by callbacks, without an async frame or a promise (a
   * profile found the one async function that did it all ~6 % of A's allocation). What must wait
   * (a body still arriving, an injected delay, a connection, a plain peer, an answer that
   * streams) continues in a promise and comes back to the same steps.
   */
  private forward(): void {
    const { req, options, method, observation } = this
    const target = targetOf(req)
    this.target = target
    this.service = target.service
    observation.begin(target.service, target.uri)
    // UTF-8 takes at most 3 bytes per UTF-16 unit: a URI of up to 682 units needs no count (a call into C++).
    if (target.uri.length > 682 && Buffer.byteLength(target.uri) > 2048) throw new ProxyError({ status: 414, reason: "uri_too_long", hop: "outbound", message: "IIP paths are at most 2048 bytes" })
    // An h2c head past the HTTP/1.1 listener's head limit is refused as llhttp refuses one there,
    // 431 (RFC 9113 §10.5.1, RFC 6585 §5), before it crosses the mesh to an app that would refuse it.
    const headLimit = req.headPastLimit
    if (headLimit !== undefined && headLimit > 0) throw new ProxyError({ status: 431, reason: "headers_too_large", hop: "outbound", message: `the request's header fields are past ${headLimit} bytes` })
    const headers = withForwarded(endToEndHeaders(req.rawHeaders, options.onInvalidHeaders), req.remoteAddress, target.authority)
    this.headers = headers
    observation.propagate(headers)
    const route = chooseRoute(options, req, method, target)
    const { choice } = route
    this.choice = choice
    this.routeCounters = choice?.counters
    applyRoute(options, observation, req, target, route, headers)
    this.subset = choice?.subset
    // A split over services (HTTPRoute backendRefs): the balancer picks among the other service's endpoints.
    if (choice?.service !== undefined) this.service = choice.service
    // A route's injected abort refuses the request whatever its body, as a rate limit does: before
    // the body is read, so that an HTTP/1.1 caller waiting for its 100 Continue is not invited to
    // send a body only for it to be dropped (a small one was gathered first: the 100 went).
    const aborted = choice?.actions?.abortStatus?.()
    if (aborted !== undefined) throw new ProxyError({ status: aborted, reason: "fault_injected", hop: "outbound", message: `route ${choice!.route} injected a fault` })
    const length = Number(req.headers["content-length"] ?? NaN)
    this.bodyLength = length
    // A body held whole can be sent again to another endpoint; a streamed one cannot.
    const here = !req.hasBody ? noBody : length <= WHOLE_BODY_LIMIT ? req.bodyIfHere?.(WHOLE_BODY_LIMIT) : undefined
    if (here !== undefined) return this.send(here, length)
    // HTTP/2 without a length (a gRPC call): the body comes back to bodyHeld, whole if it ends within this turn.
    if (!(length <= WHOLE_BODY_LIMIT) && req.heldBody !== undefined) return req.heldBody(WHOLE_BODY_LIMIT, this)
    this.awaitBody(length).catch((error: unknown) => this.fail(error))
  }

  /** Total: the held body (heldBody, sendsAtReadEnd), whole or streaming on; then sent. */
  bodyHeld(body: Uint8Array | AsyncIterable<Buffer>): void {
    try {
      this.send(body, this.bodyLength)
    } catch (error) {
      this.fail(error)
    }
  }

  /** Total: the caller reset the request while it was held (heldBody, sendsAtReadEnd): it ends cancelled, nothing sent. */
  bodyReset(): void {
    this.fail(new Cancelled({ message: "the caller reset its stream before the request went on" }))
  }

  /**
   * A body not here with the head: gathered (up to the whole-body limit) or streamed; then sent.
   * Gathered, the request's deadline runs from now: the body must come within it.
   */
  private async awaitBody(length: number): Promise<void> {
    const { req } = this
    let body: Uint8Array | AsyncIterable<Buffer>
    // A caller waiting for its 100 Continue is asked for its body (by the reading) only for a
    // request that can go (RFC 9110 10.1.1): with no endpoint to take it, the body streams instead,
    // unread until the try, whose pick refuses it (503) before the 100.
    if (length <= WHOLE_BODY_LIMIT && (req.awaitsContinue !== true || this.options.registry.hasUntried(this.service, NONE_TRIED, this.subset))) {
      this.setDeadline(monotonicMs())
      body = await readBody(this, this.bodyDeadlines, WHOLE_BODY_LIMIT, this.timeoutMs, this.timeoutMs)
    } else body = req.body()
    this.send(body, length)
  }

  /** The request's one deadline, `timeoutMs` from `now` (the app's `iip-timeout` or its route's timeout, within the configured one). */
  private setDeadline(now: number): void {
    this.timeoutMs = appTimeoutMs(this.req, this.choice?.actions?.timeoutMs ?? this.options.requestTimeoutMs)
    this.deadline = now + this.timeoutMs
  }

  /** The body in hand (or streaming): the request's metadata, its route's fault, deadline and delay; then its first try. */
  private send(body: Uint8Array | AsyncIterable<Buffer>, length: number): void {
    const { req, options, method, observation } = this
    // HTTP/2: a request whose END_STREAM came may be reset by a RST_STREAM later in the same read,
    // which is parsed after it: it goes at that read's end, or not at all (outboundH2Call.ts).
    if (req.sendsAtReadEnd?.(this, body) === true) return
    const target = this.target!
    const headers = this.headers!
    // The matched route's actions (routeActions.ts): its header modifiers (applied), faults, timeout and retries.
    const actions = this.choice?.actions
    const whole = body instanceof Uint8Array
    this.body = body
    this.whole = whole
    observation.requestBytes(whole ? body.length : Number.isFinite(length) ? length : 0)
    // A streamed body of known length declares it to a mesh peer (node's parser checked it); the far side holds the body to it.
    const declares = !whole && Number.isSafeInteger(length)
    if (declares) headers.push(["content-length", String(length)])
    this.meta = requestMeta(method, target.authority, headers)
    if (declares) headers.pop()
    this.context = pickContext(req, target.uri, options.hashKey)
    // One deadline for the whole request, however many endpoints it tries (an injected delay
    // included), on the monotonic clock (clock.ts): a wall clock step moves no request's deadline.
    // A body gathered first (awaitBody) set it at its head.
    const now = monotonicMs()
    if (this.deadline === 0) this.setDeadline(now)
    const deadline = this.deadline
    const delayMs = actions?.delayMs?.() ?? 0
    if (delayMs > 0) this.hold(delayMs, deadline).then(() => this.firstTry(0)).catch((error: unknown) => this.fail(error))
    else this.firstTry(now)
  }

  /**
   * After the head, body and any injected delay: the mirror, if the route has one, and the first
   * try. `now`: monotonicMs() as read in this synchronous step (0: not read), passed down to the
   * try so that one request reads the clock for its deadlines once, not four times.
   */
  private firstTry(now: number): void {
    const { options } = this
    const actions = this.choice?.actions
    // A mirror needs the body held whole: a streamed one goes once, to the primary only.
    const mirrorSubset = actions?.mirrorSubset?.()
    // The mirror's subset is one of the route's service, wherever the split sent the request.
    const { body, target } = this
    if (mirrorSubset !== undefined && body instanceof Uint8Array) {
      sendMirror(actions!.mirrorGate!, { registry: options.registry, service: target!.service, subset: mirrorSubset, uri: target!.uri, body, meta: this.meta!, context: this.context!, deadline: this.deadline })
    }
    this.perTryTimeoutMs = actions?.perTryTimeoutMs ?? options.perTryTimeoutMs
    this.maxAttempts = actions?.attempts ?? MAX_ATTEMPTS
    this.nextTry(now)
  }

  /** Total (called from callbacks): picks an endpoint and makes a try on it; again for each retry. `now` as for firstTry. */
  private nextTry(now: number): void {
    try {
      this.tryOnce(now)
    } catch (error) {
      this.fail(error)
    }
  }

  private tryOnce(now: number): void {
    const { options, observation, service, subset, deadline, perTryTimeoutMs } = this
    const { registry } = options
    // One monotonic reading for the try: the retry budget's deposit (a first try), the pick, the
    // try's start, and (in whole ms, as monotonicMs() reads it) its deadline when `now` was not read.
    const at = performance.now()
    const nowMs = now || Math.floor(at)
    if (this.attempts === 0) registry.countRequest(service, at)
    const picked = registry.pick(service, this.context!, this.triedSet(), subset, at)
    if (picked._tag !== "Picked") {
      if (this.lastError !== undefined) throw this.lastError
      if (picked._tag === "Overloaded") {
        throw new ProxyError({ status: 503, reason: "overloaded", hop: "outbound", message: `every endpoint of ${service} is at its concurrency limit` })
      }
      throw new ProxyError({ status: 503, reason: "no_endpoint", hop: "outbound", message: `no endpoint known for service ${service}${subset === undefined ? "" : ` in subset ${subset}`}` })
    }
    const { lease } = picked
    // A retry counts once there is another endpoint to send it to, and the request was sent before:
    // a try the dial guard refused sent nothing (a hostile list would read as a retry storm).
    if (this.lastError !== undefined && !this.lastRefused) observation.retried()
    this.lastRefused = false
    this.endpointName = lease.endpoint.id
    this.addTried(lease.endpoint.id)
    this.attempts++
    const client = registry.clientOf(lease.endpoint.endpoint)
    this.lease = lease
    this.tryStarted = at
    // This try ends at the request's deadline or its own timeout, whichever comes first.
    const tryDeadline = perTryTimeoutMs === undefined ? deadline : Math.min(deadline, nowMs + perTryTimeoutMs)
    this.tryDeadline = tryDeadline
    const control = new Cancellation()
    this.tryControl = control
    if (this.appGone) control.abort()
    const watched = perTryTimeoutMs === undefined && options.slowTryFloorMs !== undefined && this.whole && IDEMPOTENT.has(this.method)
    this.slowAfterMs = watched ? slowTryAfterMs(options.slowTryFloorMs!, lease.expectedMs) : 0
    this.watch = watched
      ? new TryWatch(control, this.slowAfterMs, () => this.triesLeft() && monotonicMs() < deadline && registry.hasUntried(service, this.triedSet()!, subset) && registry.allowRetry(service))
      : undefined
    const mode = client.currentMode
    if (mode !== undefined) return this.sendTry(client, mode, nowMs)
    // No connection within the client's connect timeout (3 s: time for TCP to resend a lost SYN)
    // is a try that failed before sending: another endpoint may take the request.
    client.mode(Math.max(1, tryDeadline - nowMs)).then((mode) => this.sendTry(client, mode, 0), (error: unknown) => this.tryFailed(error))
  }

  /** Total: the try goes out over a connection in `mode`; its answer (or failure) comes to `replied` / `tryFailed`. `now` as for firstTry. */
  private sendTry(client: IipClient, mode: "mesh" | "plain", now: number): void {
    const nowMs = now || monotonicMs()
    const timeoutMs = Math.max(1, this.tryDeadline - nowMs)
    if (mode === "plain") {
      this.forwardPlain(client, this.lease!, this.tryStarted, this.target!, this.headers!, this.body!, timeoutMs, this.tryControl!)
        .then(() => this.watch?.settled(), (error: unknown) => this.tryFailed(error))
      return
    }
    try {
      // An event stream holds its channel as long as it lives: a stream place, as an upgrade, never the requests' channels.
      const tunnel = isEventStream(this.req)
      client.streamWith(this.target!.uri, this.body!, { meta: this.meta!, timeoutMs, signal: this.tryControl!, now: nowMs, tunnel }, (error, reply) => this.replied(error, reply))
    } catch (error) {
      this.tryFailed(error)
    }
  }

  /** Total: a mesh try's outcome (called once per try). */
  private replied(error: unknown, reply: MeshReply | undefined): void {
    if (error !== undefined) return this.tryFailed(error)
    try {
      const status = statusOf(reply!.meta)
      // One reading for the try's end and, for an answer held whole, the request's.
      const at = performance.now()
      this.endLease(this.lease!, this.tryStarted, status !== undefined && status < 500, false, false, at)
      this.watch?.settled()
      this.answer(status, reply!, at)
    } catch (failure) {
      this.fail(failure)
    }
  }

  /** Total: a try failed; another endpoint takes the request where that is safe and possible, else the app gets the error. */
  private tryFailed(error: unknown): void {
    try {
      const { watch, lease, tryStarted, method } = this
      watch?.settled()
      if (watch?.givenUp === true) {
        // Too slow, and another endpoint may do better: the retry budget already paid for it.
        this.endLease(lease!, tryStarted, false, false, true)
        this.lastError = new RequestTimeout({ message: `no answer from ${lease!.endpoint.id} within ${Math.round(this.slowAfterMs)} ms`, timeoutMs: this.slowAfterMs })
        return this.nextTry(0)
      }
      // No stream place left for an event stream on the connections to the endpoint: refused here,
      // nothing sent, saying nothing of the endpoint's health. Another endpoint's connections may
      // have places (the balancer does not count open streams): tried next, with no retry budget
      // (nothing was sent); with none left untried, 503 overloaded at once (tryOnce throws it).
      if (error instanceof Overloaded && error.limit === StreamPlacesLimit) {
        lease!.release()
        this.lastError = error
        return this.triesLeft() ? this.nextTry(0) : this.fail(error)
      }
      // A request the app gave up on says nothing about the endpoint; a connection that could not
      // be made holds it out until a background redial connects (no failure: one slow to connect, on
      // a lossy network, is back as soon as a connection to it is up).
      const refusal = dialRefusalOf(error)
      if (refusal !== undefined) {
        this.options.registry.refusedDial(this.service, lease!, refusal)
        this.refusedTries++
      }
      // Nothing sent, nothing connected: a try the request does not pay for (FREE_REFUSED_DIALS).
      const free = refusal !== undefined && this.freeTries < FREE_REFUSED_DIALS
      if (free) this.freeTries++
      // An event stream B refused unsent for want of a place (its app pool's share for event
      // streams held): no failure of B either, else a burst of them ejected it and its plain
      // requests, which it answers, went elsewhere. Another endpoint may take it (notProcessed).
      // One B cut once it showed it would last (processed: an answer head saying text/event-stream
      // for a request that did not say so, appPool.ts; a gRPC call's second message,
      // appH2Exchange.ts) is a failure of B, as an app's own 503 is: released instead, a B that
      // refuses everything so (a broken app answering all with event streams, a hostile B) was
      // never ejected nor penalised (a refusal is no latency sample, so it stayed a cold endpoint
      // every first draw takes) and kept its share of traffic for ever (event-stream-answer.test.ts).
      if (error instanceof RemoteError && error.code === MeshErrorCode.overloaded && !error.processed && isEventStream(this.req)) lease!.release()
      else this.endLease(lease!, tryStarted, this.appGone || refusedByPolicy(error), refusedOrDraining(error))
      const safe = notProcessed(error) || (IDEMPOTENT.has(method) && (transportFailure(error) || this.perTryDeadlinePassed(error)))
      const retry = safe && this.whole && this.triesLeft() && !this.appGone && monotonicMs() < this.deadline && (free || this.options.registry.allowRetry(this.service))
      if (!retry) return this.fail(this.connectOutlastedDeadline(error) ? new RequestTimeout({ message: `no connection to ${lease!.endpoint.id} before the deadline (${error.message})`, timeoutMs: this.timeoutMs }) : error)
      this.lastError = error
      this.lastRefused = refusal !== undefined
      this.nextTry(0)
    } catch (failure) {
      this.fail(failure)
    }
  }

  /** Whether the request has a try left: the tries it made, less the refused dials it did not pay for. */
  private triesLeft(): boolean {
    return this.attempts - this.freeTries < this.maxAttempts
  }

  /**
   * A connection still being made when the request's deadline came (the wait for it is bounded by
   * the deadline): the request ran out of time, a 504, not a broken endpoint's 502. The wait's
   * timer counts whole milliseconds, hence the millisecond of slack.
   */
  private connectOutlastedDeadline(error: unknown): error is ConnectFailed {
    return error instanceof ConnectFailed && error.tls === undefined && monotonicMs() + 1 >= this.deadline
  }

  /**
   * The far side's deadline error for a try that had a per-try timeout shorter than the request's
   * deadline: the deadline it passed was the try's, which this side's own per-try timer would have
   * ended a moment later (a RequestTimeout, retried). Both timers run out at about the same time,
   * and whichever is read first must not decide whether the request is retried.
   */
  private perTryDeadlinePassed(error: unknown): boolean {
    return error instanceof RemoteError && error.code === MeshErrorCode.deadlineExceeded && this.tryDeadline < this.deadline
  }

  /** The peer answered (`at`: then, performance.now()): its head to the app, then its body (held whole: at once; streamed: piped, in a promise). */
  private answer(status: number | undefined, reply: MeshReply, at: number): void {
    if (status === undefined) {
      this.tryControl?.abort() // its body, if it streams, is not wanted
      throw new ProxyError({ status: 502, reason: "bad_response", hop: "inbound", message: `${this.endpointName} answered with status ${JSON.stringify(String(reply.meta.get(HttpMeta.status)).slice(0, 16))}` })
    }
    const answerLength = this.writeAnswer(status, reply)
    if (reply.stream !== undefined && !this.res.writableEnded) {
      this.pipeAnswer(status, reply.stream, answerLength).catch((error: unknown) => this.answerFailed(status, error))
      return
    }
    this.observation.responseBytes(reply.data.length)
    // An answer held whole had its status read with its trailers (writeAnswer).
    if (reply.stream !== undefined) this.observation.grpcStatus(undefined, reply.stream.trailers)
    // Cut here even so: an h2c caller's limit on its head or trailers (outboundH2Call.ts).
    this.finish(status, this.cutHere(), at)
  }

  /** Why this side cut the answer off, as the request's failure, if it did; a gRPC status it sent in place of the app's is the call's (the span's). */
  private cutHere(): Failure | undefined {
    const sent = this.res.grpcStatusSent
    if (sent !== undefined) this.observation.grpcStatus(sent)
    const cutReason = this.res.cutReason
    return cutReason === undefined ? undefined : { hop: "outbound", reason: cutReason }
  }

  private async pipeAnswer(status: number, stream: IncomingStream, length: number): Promise<void> {
    // Counted, and widened from ANSWER_FIRST_WINDOW while that limits it; out once the pipe is done with it.
    const pool = this.options.answerStreams
    if (pool !== undefined) stream.countUnreadIn(pool)
    try {
      this.observation.responseBytes(await pipeToResponse(this.res, stream, length, this.options.onInvalidHeaders))
    } finally {
      stream.leaveUnreadPool()
    }
    this.observation.grpcStatus(undefined, stream.trailers)
    // Cut off by this side (its caller took none of it for the answer idle timeout): the request failed here.
    this.finish(status, this.cutHere())
  }

  /**
   * The streamed answer failed. Cut off by this side, its mesh stream was cancelled with the cut
   * (onClose): with no chunk of it left to read, the cancellation is what the pipe sees, and the
   * request failed as the cut, as pipeAnswer counts it when a chunk was still there.
   */
  private answerFailed(status: number, error: unknown): void {
    const cut = this.cutHere()
    if (cut === undefined) return this.fail(error)
    this.finish(status, cut)
  }

  /**
   * A route's injected delay: `ms` on a timer, cut short at the deadline (then the request times
   * out) or when the app goes away (the timer is cleared, the request ends as cancelled).
   */
  private async hold(ms: number, deadline: number): Promise<void> {
    const left = deadline - monotonicMs()
    if (!this.appGone) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.releaseHold = undefined
          resolve()
        }, Math.max(0, Math.min(ms, left)))
        this.releaseHold = () => {
          clearTimeout(timer)
          this.releaseHold = undefined
          resolve()
        }
      })
    }
    if (this.appGone) throw new Cancelled({ message: "the app went away during an injected delay" })
    if (ms >= left) throw new RequestTimeout({ message: `an injected delay of ${ms} ms outlasted the deadline`, timeoutMs: Math.max(0, left) })
  }

  private triedSet(): ReadonlySet<string> | undefined {
    if (this.tried === undefined && this.firstTried !== undefined) this.tried = new Set([this.firstTried])
    return this.tried
  }

  private addTried(endpoint: string): void {
    if (this.firstTried === undefined) this.firstTried = endpoint
    else (this.tried ??= new Set([this.firstTried])).add(endpoint)
  }

  /**
   * The peer's answer head, end-to-end headers only; framing is ours: the length of a whole body;
   * for a streamed one the length the peer declared (pipeToResponse holds the body to it), else
   * chunked; none for the answer to HEAD, 204 or 304 (whose content-length only describes, and
   * goes on when it is a plain number). Returns the declared length of a streamed body, or -1.
   */
  private writeAnswer(status: number, reply: MeshReply): number {
    const { res, method } = this
    const headers = headersOf(reply.meta, this.options.onInvalidHeaders)
    const bodiless = method === "HEAD" || status === 204 || status === 304
    // Read apart only where it means something (the filter drops it): a second parse, off the usual path.
    const declared = status === 204 || (!bodiless && reply.stream === undefined) ? undefined : describedLength(sentValue(reply.meta, "content-length"))
    if (bodiless) {
      if (declared !== undefined) headers.push(["content-length", declared])
      if (reply.stream !== undefined) this.tryControl?.abort()
      res.writeHead(status, headers)
      res.end()
      if (reply.stream === undefined) this.observation.grpcStatus(undefined, reply.meta)
      return -1
    }
    // An answer held whole carries its trailers (gRPC's status) in its metadata (PROTOCOL.md §17.5).
    // One with trailers goes without a length: HTTP/2 frames it by END_STREAM and the gRPC app
    // sent none (its caller sees the head as the app wrote it, and node builds one field less per
    // call), and HTTP/1.1 (http1Call.ts) frames a body ended at once itself.
    const trailers = reply.stream === undefined ? trailersOf(reply.meta, this.options.onInvalidHeaders) : undefined
    if (reply.stream === undefined) {
      if (trailers === undefined) headers.push(["content-length", String(reply.data.length)])
    } else if (declared !== undefined) headers.push(["content-length", declared])
    res.writeHead(status, headers)
    if (reply.stream !== undefined) return declared === undefined ? -1 : Number(declared)
    res.end(reply.data, trailers)
    this.observation.grpcStatus(grpcStatusIn(trailers))
    return -1
  }

  private endLease(lease: EndpointLease, tryStarted: number, ok: boolean, unreachable = false, slow = false, at: number = performance.now()): void {
    if (this.options.registry.endLease(lease, tryStarted, ok, unreachable, slow, at) !== undefined) this.observation.ejected(this.target!.service, lease.endpoint.id)
  }

  private async forwardPlain(
    client: IipClient,
    lease: EndpointLease,
    tryStarted: number,
    target: Target,
    headers: ReadonlyArray<readonly [string, string]>,
    held: Uint8Array | AsyncIterable<Buffer>,
    timeoutMs: number,
    signal: Cancellation
  ): Promise<void> {
    let body = held
    if (!(body instanceof Uint8Array)) {
      try {
        body = await readBody(this, this.bodyDeadlines, PLAIN_BODY_LIMIT, this.deadline - monotonicMs(), this.timeoutMs)
      } catch (error) {
        // The caller's body failed (too large, too slow, cut), not the endpoint: the try ends saying
        // nothing of it (tryFailed would count a failure against it; a success, the gather's time
        // as its latency), the request with the error.
        lease.release()
        return this.fail(error)
      }
      // The try's time for the endpoint from when its body came (after a gather longer than a
      // per-try timeout what the try had left was nothing: a timeout counted against the endpoint),
      // within what the request's deadline leaves.
      timeoutMs = Math.max(1, Math.min(timeoutMs, this.deadline - monotonicMs()))
    }
    const data = await client.call(plainRequestPath(target.uri, headers), body.length === 0 ? "{}" : body, { timeoutMs, signal })
    const { status, error } = plainStatus(data)
    this.endLease(lease, tryStarted, status < 500)
    if (error !== undefined) throw error
    this.res.writeHead(status, [["content-length", String(data.length)]])
    this.res.end(data)
    this.observation.responseBytes(data.length)
    this.finish(status)
  }

  /** The request ended (exactly once; `at`: now, if read): its span and metrics, and the access log line when it is on. */
  private finish(status: number, error?: Failure, at: number = performance.now()): void {
    this.routeCounters?.finished(status, error !== undefined)
    recordOutboundEnd(this.observation, this.options.onAccess, this.target, this.req.url, this.endpointName, this.method, status, this.started, this.attempts - this.refusedTries, error, at)
  }

  /** Total: whatever the failure, the app gets an answer (or a cut connection), never a rejection. */
  private fail(error: unknown): void {
    try {
      // An event stream with no stream place on any endpoint tried (upgrades count theirs in tunnelSeats.ts).
      if (error instanceof Overloaded && error.limit === StreamPlacesLimit && this.options.eventStreamsRefused !== undefined) this.options.eventStreamsRefused.value++
      const proxyError = error instanceof EnvelopeError
        ? new ProxyError({ status: 400, reason: "headers_too_large", hop: "outbound", message: error.message })
        : proxyErrorOf(error, this.endpointName)
      // A gRPC caller reads failures from grpc-status, not from an HTTP status and a JSON body.
      if (isGrpc(this.req.headers["content-type"])) this.observation.grpcStatus(sendGrpcError(this.res, proxyError))
      else sendProxyError(this.res, proxyError)
      this.finish(proxyError.status, proxyError)
    } catch {
      this.res.destroy()
    }
  }
}

const noBody = Buffer.alloc(0)

/**
 * The handler of a sidecar's outbound requests. The deadlines of the bodies its exchanges gather
 * share `deadlines` (outboundBody.ts bodyDeadlines: one timer), which the sidecar clears as it stops.
 */
export const makeOutboundHandler = (options: OutboundOptions, deadlines: Deadlines<BodyGather>) => (call: OutboundCall): void => {
  new OutboundExchange(options, call, call, deadlines).run()
}
