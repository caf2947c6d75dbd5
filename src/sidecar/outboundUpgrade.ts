// Outbound upgrades (WebSocket and other HTTP/1.1 `Upgrade` requests, PROTOCOL.md §17.4): the app's
// upgrade request, which the outbound listener hands over with its socket (http1Listener.ts), becomes one mesh
// stream to an endpoint the balancer picks once, in the subset its route names: the request head in metadata (the protocols
// apart, under `http-upgrade`), the caller's bytes as the streamed body, the far app's answer
// streaming back. A 101 is written to the app and bytes flow both ways until either side closes;
// any other answer is written with `connection: close` and the socket ends, so nothing the caller
// sends after it is ever read as a request. Before the 101, failures are the usual
// `x-iip-mesh-error` answers, within the request's deadline; no retry (the caller's bytes are
// already on their way). After it, a connection silent both ways for the upgrade idle timeout is
// closed. Tracing and metrics see one request, from the head to the close. Open upgrades are bounded
// (`maxTunnels`; no bound by caller: they are the pod's own apps, tunnelSeats.ts), and so are the
// far apps' bytes they hold unread by their callers (`maxQueuedBytes`) and, per endpoint, the
// channels they hold (its client's stream places: past them refused at once, the requests keep theirs);
// one whose caller takes none of them for the stall timeout is ended (tunnelStalls.ts): its bytes
// released, its caller's connection closed, counted (101 outbound deadline).
import type * as net from "node:net"
import { Cancellation } from "../mux/cancellation.ts"
import { StreamPlacesLimit } from "../iip/client.ts"
import { Overloaded } from "../mux/errors.ts"
import { lingerAfterEnd } from "../mux/peerFin.ts"
import type { MeshReply } from "../mux/meshSession.ts"
import type { IncomingStream, UnreadPool } from "../mux/streams.ts"
import { EnvelopeError, MeshDefaults } from "../protocol/mesh.ts"
import { queuedInLibuv } from "./drained.ts"
import type { EndpointLease } from "./endpoints.ts"
import { carriedProtocols, endToEndHeaders, switchedAmong, upgradeProtocols } from "./headerFilter.ts"
import { headersOf, HttpMeta, requestMeta, withForwarded } from "./httpEnvelope.ts"
import { OutboundObservation } from "./observe.ts"
import { recordOutboundEnd } from "./outboundAccess.ts"
import type { OutboundRequest } from "./outboundCall.ts"
import type { OutboundOptions } from "./outboundOptions.ts"
import { dialRefusalOf, refusedOrDraining } from "./outboundRetry.ts"
import { applyRoute, chooseRoute } from "./outboundRoute.ts"
import { appTimeoutMs, pickContext, type Target, targetOf } from "./outboundTarget.ts"
import { ProxyError, proxyErrorOf, writeProxyError } from "./proxyError.ts"
import type { RouteCounters } from "./routeCounters.ts"
import type { TunnelSeats } from "./tunnelSeats.ts"
import type { TunnelStalls } from "./tunnelStalls.ts"
import { pipeToSocket, SocketSource } from "./upgradePipe.ts"
import { nodeHttp } from "../toolkit/nodeHttp.ts"

export interface OutboundUpgradeOptions extends OutboundOptions {
  /** An upgraded connection with no byte either way for this long is closed. */
  readonly upgradeIdleTimeoutMs: number
  /**
   * Upgraded connections open at once, from the request to the caller's close (`seats`: maxTunnels
   * alone, no bound by caller), and the bytes they hold unread (`unread.bytes`):
   * the far apps' their callers have not read yet (at most a stream window each) and the callers'
   * the mesh has not taken yet (a socket's queue each, upgradePipe.ts): at the first, or with no
   * room for one more window within the second, new upgrades are refused. `stalls` ends those
   * whose callers take none of their bytes for the upgrade stall timeout.
   */
  readonly tunnels: { readonly seats: TunnelSeats; readonly unread: UnreadPool; readonly maxUnreadBytes: number; readonly stalls: TunnelStalls }
}

/** The head written back for a status other than 101: the socket closes after its body. */
const closingHead = (status: number, headers: ReadonlyArray<readonly [string, string]>): string => {
  let head = `HTTP/1.1 ${status} ${nodeHttp.STATUS_CODES[status] ?? ""}\r\n`
  for (const [name, value] of headers) head += `${name}: ${value}\r\n`
  return `${head}connection: close\r\n\r\n`
}

/** One upgrade request, from its head to the close of the upgraded connection. */
class OutboundUpgrade {
  private readonly options: OutboundUpgradeOptions
  /** The request's URL, for the access log: the request itself is forward's alone (held no longer than the head's exchange). */
  private readonly url: string
  private readonly socket: net.Socket
  private readonly source: SocketSource
  private readonly observation: OutboundObservation
  private readonly method: string
  private readonly started = performance.now()
  private readonly control = new Cancellation()
  private target: Target | undefined = undefined
  /** The counters of the route that chose the upgrade's subset, if one did (routeCounters.ts). */
  private routeCounters: RouteCounters | undefined = undefined
  private endpointName = "-"
  private attempts = 0
  /** Counted in flight until the answer head is written (the drain waits for that, not for the whole connection). */
  private counted = false
  /** Holds a place among the open tunnels until the caller's socket closes or the upgrade is refused. */
  private tunnel = false
  /** The far app's bytes after the 101, counted in `tunnels.unread` until the caller's socket closes. */
  private answer: IncomingStream | undefined = undefined
  /** Why the tunnel was ended here, once its caller took none of the far app's bytes for the stall timeout. */
  private stall: ProxyError | undefined = undefined
  private finished = false
  /** The answers to the requests before this one on its connection (keep-alive): an answer of this one has begun once more is written. */
  private readonly writtenBefore: number

  constructor(options: OutboundUpgradeOptions, req: OutboundRequest, socket: net.Socket, head: Buffer) {
    this.options = options
    this.url = req.url
    this.socket = socket
    this.method = req.method
    this.observation = new OutboundObservation(options.telemetry, this.method, req.headers)
    this.source = new SocketSource(socket, head)
    this.writtenBefore = socket.bytesWritten
  }

  run(req: OutboundRequest): void {
    const { socket, options } = this
    if (options.inFlight !== undefined) {
      options.inFlight.value++
      this.counted = true
    }
    socket.setNoDelay(true)
    // A reset socket says so with 'error' and 'close': the close is what ends the exchange.
    socket.on("error", () => {})
    socket.on("close", () => {
      this.uncount()
      this.leaveTunnels()
      this.answer?.leaveUnreadPool()
      this.source.leavePool()
      this.control.abort()
    })
    this.forward(req).catch((error: unknown) => this.fail(error))
  }

  private async forward(req: OutboundRequest): Promise<void> {
    const { options, observation, socket } = this
    const target = targetOf(req)
    this.target = target
    observation.begin(target.service, target.uri)
    // Each tunnel may hold a stream window of answer bytes its caller has not read: their number is bounded, before any work.
    const { tunnels } = options
    // As at the inbound side (PROTOCOL.md §8): admitted only while one more stalled window fits (this side's window: its hello's), or nothing is held.
    if (tunnels.unread.bytes > 0 && tunnels.unread.bytes + MeshDefaults.streamWindow > tunnels.maxUnreadBytes) {
      tunnels.seats.refusedFor("bytes")
      throw new ProxyError({ status: 503, reason: "overloaded", hop: "outbound", message: `the outbound sidecar's upgraded connections hold ${tunnels.unread.bytes} bytes their readers have not read yet, no room for one more stream window within maxQueuedBytes; retry later` })
    }
    const full = tunnels.seats.take()
    if (full !== undefined) throw new ProxyError({ status: 503, reason: "overloaded", hop: "outbound", message: `${full} at the outbound sidecar; retry later` })
    this.tunnel = true
    // The caller's bytes wait in a queue of the socket's (up to 64 KiB and a read) while the mesh
    // has no credit for them: a far app that reads none would make it hold that much per tunnel.
    if (!socket.closed) this.source.countIn(tunnels.unread)
    if (Buffer.byteLength(target.uri) > 2048) throw new ProxyError({ status: 414, reason: "uri_too_long", hop: "outbound", message: "IIP paths are at most 2048 bytes" })
    const protocols = upgradeProtocols(req.headers.upgrade)
    if (protocols === undefined) throw new ProxyError({ status: 400, reason: "bad_upgrade", hop: "outbound", message: "the Upgrade header is not a list of protocol tokens" })
    // The caller's bytes after the head are the upgraded connection's: a body declared as well would be read two ways.
    if (req.hasBody) throw new ProxyError({ status: 400, reason: "bad_upgrade", hop: "outbound", message: "an upgrade request carries no body" })
    // h2c is dropped; a request that asked for it alone never comes here (http1HeadRules.ts: it is read as an ordinary request).
    const carried = carriedProtocols(protocols)
    const headers = withForwarded(endToEndHeaders(req.rawHeaders, options.onInvalidHeaders), req.remoteAddress, target.authority)
    observation.propagate(headers)
    // Routes apply as to any request (subset, split, rate limit, header modifiers, an injected
    // abort, the timeout); a delay, a mirror and retries do not: the caller's bytes stream already.
    const route = chooseRoute(options, req, this.method, target)
    const { choice } = route
    this.routeCounters = choice?.counters
    applyRoute(options, observation, req, target, route, headers)
    const service = choice?.service ?? target.service
    const subset = choice?.subset
    const aborted = choice?.actions?.abortStatus?.()
    if (aborted !== undefined) throw new ProxyError({ status: aborted, reason: "fault_injected", hop: "outbound", message: `route ${choice!.route} injected a fault` })
    const meta = requestMeta(this.method, target.authority, headers)
    meta.set(HttpMeta.upgrade, carried)
    const { registry } = options
    registry.countRequest(service)
    const picked = registry.pick(service, pickContext(req, target.uri, options.hashKey), undefined, subset)
    if (picked._tag === "Overloaded") throw new ProxyError({ status: 503, reason: "overloaded", hop: "outbound", message: `every endpoint of ${service} is at its concurrency limit` })
    if (picked._tag !== "Picked") throw new ProxyError({ status: 503, reason: "no_endpoint", hop: "outbound", message: `no endpoint known for service ${service}${subset === undefined ? "" : ` in subset ${subset}`}` })
    const { lease } = picked
    this.endpointName = lease.endpoint.id
    this.attempts = 1
    const client = registry.clientOf(lease.endpoint.endpoint)
    const tryStarted = performance.now()
    // Until the answer's head: the request's deadline. After it: the idle timeout, no deadline.
    const timeoutMs = appTimeoutMs(req, choice?.actions?.timeoutMs ?? options.requestTimeoutMs)
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      this.control.abort()
    }, timeoutMs)
    let reply: MeshReply
    try {
      const mode = client.currentMode ?? (await client.mode(timeoutMs))
      if (mode === "plain") throw new ProxyError({ status: 502, reason: "upgrade_unsupported", hop: "outbound", message: `${lease.endpoint.id} speaks plain IIP, which carries no upgrade` })
      reply = await client.stream(target.uri, this.source, { meta, signal: this.control, tunnel: true })
    } catch (error) {
      // No stream place on its connections to the endpoint: refused here, at once, nothing sent; says nothing of the endpoint's health.
      if (error instanceof Overloaded && error.limit === StreamPlacesLimit) {
        lease.release()
        options.tunnels.seats.refusedFor("channels")
        throw new ProxyError({ status: 503, reason: "overloaded", hop: "outbound", message: `${error.message} at the outbound sidecar; retry later` })
      }
      const refusal = dialRefusalOf(error)
      if (refusal !== undefined) this.options.registry.refusedDial(target.service, lease, refusal)
      this.endLease(lease, tryStarted, false, refusedOrDraining(error))
      if (timedOut) throw new ProxyError({ status: 504, reason: "deadline", hop: "outbound", message: `no answer to the upgrade from ${lease.endpoint.id} within ${timeoutMs} ms` })
      throw error
    } finally {
      clearTimeout(timer)
    }
    // The balancer learns from the time to the answer's head; the connection's life is no latency.
    const statusText = reply.meta.get(HttpMeta.status) ?? ""
    const status = /^(101|[2-5]\d\d)$/.test(statusText) ? Number(statusText) : 0
    this.endLease(lease, tryStarted, status !== 0 && status < 500)
    const switched = status === 101 ? upgradeProtocols(reply.meta.get(HttpMeta.upgrade)) : undefined
    if (status === 0 || (status === 101 && (switched === undefined || !switchedAmong(switched, carried) || reply.stream === undefined))) {
      this.control.abort()
      throw new ProxyError({ status: 502, reason: "bad_response", hop: "inbound", message: `${this.endpointName} answered the upgrade with status ${JSON.stringify(statusText.slice(0, 16))}` })
    }
    const answerHeaders = headersOf(reply.meta, options.onInvalidHeaders)
    if (status !== 101) {
      // Not switched: the answer, then the end of this connection; the caller's bytes are not wanted.
      this.source.stop()
      this.closeAfterAnswer()
      socket.write(closingHead(status, answerHeaders), "latin1")
      this.uncount()
      const sent = reply.stream === undefined ? (socket.end(reply.data), reply.data.length) : await pipeToSocket(reply.stream, socket)
      observation.responseBytes(sent)
      // Refused by the far app: its answer is out, nothing more comes, whether the caller closes or not.
      this.leaveTunnels()
      return this.finish(status)
    }
    let head = `HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: ${switched}\r\n`
    for (const [name, value] of answerHeaders) head += `${name}: ${value}\r\n`
    socket.write(`${head}\r\n`, "latin1")
    this.uncount()
    socket.setTimeout(options.upgradeIdleTimeoutMs, () => socket.destroy())
    const answer = reply.stream!
    this.answer = answer
    // A caller gone already would never take the bytes out of the count again.
    if (!socket.closed) {
      answer.countUnreadIn(options.tunnels.unread)
      // The connections state a smaller first window for answers (ANSWER_FIRST_WINDOW); a tunnel
      // has the full one at once, bounded by its pool (maxUnreadBytes) and the stall timeout.
      answer.widen(MeshDefaults.streamWindow)
      socket.once("close", options.tunnels.stalls.watch(answer, { service: target.service, endpoint: this.endpointName, path: target.uri }, () => this.stalled(answer)))
    }
    return this.relay(answer)
  }

  /**
   * The far app's bytes to the caller, until the tunnel ends. Apart from forward, whose frame ends
   * here: what it holds (the caller's request and its connection's parse state, the headers, the
   * route, the endpoint's reply) would otherwise stay as long as the tunnel is open.
   */
  private async relay(answer: IncomingStream): Promise<void> {
    const { socket } = this
    this.observation.responseBytes(await pipeToSocket(answer, socket))
    // The exchange ends when both directions are over: the caller's socket closes.
    if (socket.closed) this.finishUpgraded()
    else socket.once("close", () => this.finishUpgraded())
  }

  private finishUpgraded(): void {
    this.observation.requestBytes(this.source.bytes)
    this.finish(101, this.stall)
  }

  /** Its caller took none of the far app's bytes for the stall timeout: they go, and so does the caller's connection (its close cancels the mesh request). */
  private stalled(answer: IncomingStream): void {
    this.stall = new ProxyError({ status: 101, reason: "deadline", hop: "outbound", message: `the caller read none of the upgraded connection's bytes for ${this.options.tunnels.stalls.stallMs} ms` })
    this.socket.destroy()
    answer.discard()
  }

  /**
   * The answer being written (an error, or the far app's without a switch) is the connection's
   * last: the socket closes once it is out and the caller's FIN came (its bytes read and dropped
   * meanwhile, within lingerAfterEnd's bounds), not only when the caller closes its side (the listener is
   * half-open: one keeping its side open held the socket and a place among the app connections for
   * ever), and with none of it moving for the upgrade idle timeout (a caller that takes none of it,
   * or a far app that sends no more) it is cut. The caller's bytes are still read and dropped until
   * then (SocketSource.stop): the close seldom finds bytes unread, which would make it a reset (as
   * node:http's destroySoon). They are no sign of life here: the socket's own idle timer, which
   * they restart, let a caller that sends and never reads hold the socket, its tunnel place and the
   * far app's answer for ever.
   */
  private closeAfterAnswer(): void {
    const { socket } = this
    if (socket.destroyed) return
    lingerAfterEnd(socket)
    const idleMs = this.options.upgradeIdleTimeoutMs
    // The answer moves when more of it is written, or the caller takes some (the socket's queue or libuv's share shrinks).
    let written = socket.bytesWritten
    let left = socket.writableLength
    let queued = queuedInLibuv(socket)
    let since = performance.now()
    const watch = setInterval(() => {
      const now = performance.now()
      if (socket.bytesWritten !== written || socket.writableLength !== left || queuedInLibuv(socket) !== queued) {
        written = socket.bytesWritten
        left = socket.writableLength
        queued = queuedInLibuv(socket)
        since = now
      } else if (now - since >= idleMs) socket.destroy()
    }, Math.max(10, Math.min(1000, idleMs / 4)))
    watch.unref()
    socket.once("close", () => clearInterval(watch))
  }

  /** Once: the place among the open tunnels goes back (the caller closed, or the upgrade was refused). */
  private leaveTunnels(): void {
    if (!this.tunnel) return
    this.tunnel = false
    this.options.tunnels.seats.give()
  }

  private uncount(): void {
    if (!this.counted) return
    this.counted = false
    this.options.inFlight!.value--
  }

  private endLease(lease: EndpointLease, tryStarted: number, ok: boolean, unreachable = false): void {
    if (this.options.registry.endLease(lease, tryStarted, ok, unreachable, false) !== undefined) this.observation.ejected(this.target!.service, lease.endpoint.id)
  }

  /** Once: the span and metrics, and the access log line when it is on. */
  private finish(status: number, error?: ProxyError): void {
    if (this.finished) return
    this.finished = true
    this.routeCounters?.finished(status, error !== undefined)
    recordOutboundEnd(this.observation, this.options.onAccess, this.target, this.url, this.endpointName, this.method, status, this.started, this.attempts, error)
  }

  /** Total: before the answer's head, the caller gets an error answer; after it, a cut connection. */
  private fail(error: unknown): void {
    this.uncount()
    // No tunnel follows an error answer; a caller keeping its side open must not hold a place.
    this.leaveTunnels()
    this.control.abort()
    const proxyError = error instanceof EnvelopeError
      ? new ProxyError({ status: 400, reason: "headers_too_large", hop: "outbound", message: error.message })
      : proxyErrorOf(error, this.endpointName)
    this.source.stop()
    // No answer of this one begun: its refusal goes out, even after answers to requests before it on a kept-alive connection.
    if (this.socket.writable && this.socket.bytesWritten === this.writtenBefore) {
      writeProxyError(this.socket, proxyError, this.method === "HEAD")
      this.closeAfterAnswer()
    } else this.socket.destroy()
    this.finish(proxyError.status, proxyError)
  }
}

/** What the outbound listener does with an upgrade request and its socket. */
export const makeUpgradeHandler = (options: OutboundUpgradeOptions) => (req: OutboundRequest, socket: net.Socket, head: Buffer): void => {
  new OutboundUpgrade(options, req, socket, head).run(req)
}
