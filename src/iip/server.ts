// The IIP server: a TCP listener, one session per connection and a Router of handlers. Plain IIP
// peers get the reference's behaviour; an iip-mesh dialer that says hello gets mesh mode on that
// connection (typed errors, deadlines, cancel, streams, calls back to it). `attachWebSocket` also
// serves IIP over WebSocket on a path of an HTTP server: the same sessions over another byte
// stream. Its lifetime is a Scope: closing it closes every connection; `drain` says go-away first
// and lets in-flight work finish. Every connection gets a share of the server's budgets (what
// peers may make it hold, src/mux/budget.ts) and is watched by its timeouts (timeouts.ts). With
// `tls` every connection runs inside TLS (tls.ts, PROTOCOL.md §19): the handshake, and the client
// certificate's identity check, finish before the connection's first byte of IIP is read; in
// permissive mode a connection whose first byte is not a TLS record is taken as plain IIP.
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as http from "node:http"
import type { X509Certificate } from "node:crypto"
import * as net from "node:net"
import * as tls from "node:tls"
import { Budget, type BudgetLimits, defaultBudgets, SourceBudgets, WriteBudget } from "../mux/budget.ts"
import { monotonicMillis } from "../mux/clock.ts"
import { type ByteStream, type ConnectionLimits, Connection, defaultConnectionLimits } from "../mux/connection.ts"
import { MeshSession } from "../mux/meshSession.ts"
import { defaultServerSessionLimits, ServerSession } from "../mux/serverSession.ts"
import { acceptWebSocket, type WebSocketServerOptions } from "../mux/webSocketStream.ts"
import { compressionFor, offeredCodecs, pickCodec } from "../protocol/compression.ts"
import { agree, decodeHello, encodeHello, grantedCredit, type Hello, localHello } from "../protocol/mesh.ts"
import { type Handler, makeDispatch, type ServeHook, withHooks } from "./dispatch.ts"
import { EvictedDrains } from "./evictedDrains.ts"
import { FairPlaces, type Place } from "./fairPlaces.ts"
import { defaultKeepAlive, keepAlive } from "./keepAlive.ts"
import { type EventCount, type Log, LogThrottle, messageOf, stderrLog, throttledEvents, type ThrottledLog } from "./log.ts"
import { loggable } from "./redact.ts"
import { checkOptions, count, durationMs, type Limits } from "./optionLimits.ts"
import { checkPeerOptions, type PeerOptions } from "./peerOptions.ts"
import { Router } from "./router.ts"
import { IPV6_SOURCE_PREFIX, sourceKeyOf } from "./sourceKey.ts"
import { ServerStatistics, type StatisticsOptions } from "./statistics.ts"
import { Supervisor } from "./supervisor.ts"
import { ConnectionTimeouts, defaultTimeouts } from "./timeouts.ts"
import { classifyTlsError, encodeTlsRefusal, MESH_ALPN, type ServerTlsOptions, TLS_HANDSHAKE_RECORD, type TlsCredentials, type TlsRefusal } from "./tls.ts"
import { SourcePlaces } from "./sourcePlaces.ts"

export type { Body, Handler, HandlerResult, HandlerValue } from "./dispatch.ts"
export type { Failure, IncomingRequest, Reply } from "../mux/request.ts"
export { failure, reply } from "../mux/request.ts"

export { defaultBudgets } from "../mux/budget.ts"

export class ListenFailed extends Data.TaggedError("ListenFailed")<{ readonly message: string }> {}

export interface ServerOptions extends PeerOptions {
  readonly host?: string
  /** 0 picks a free port; `address.port` tells which. */
  readonly port?: number
  /** Connections over this are accepted and closed at once, as the reference does. */
  readonly maxConnections?: number
  readonly maxChannelsPerConnection?: number
  /** Requests read but not answered per connection before its reading pauses (default 1024). */
  readonly maxQueuedRequestsPerConnection?: number
  /**
   * Bytes read but not consumed per connection (queued bodies, unfinished messages, unread stream
   * chunks) before its reading pauses (default 64 MiB). Also bounds `connectionLimits.maxMessageBytes`,
   * and the streamed answers gathered whole for a plain peer (one packet each): past it, with the
   * rest of what the connection holds, such an answer is refused "server overloaded" (the
   * connection's only one goes on, within the packet limit and `maxQueuedBytes`).
   */
  readonly maxQueuedBytesPerConnection?: number
  /** Requests read but not answered, all connections together; past it new requests are refused `overloaded` (default 16384). */
  readonly maxQueuedRequests?: number
  /**
   * Bytes read but not consumed, all connections together; past it new requests are refused
   * `overloaded` (default 512 MiB). Also the streamed answers gathered whole for plain peers, as
   * per connection (the server's only one goes on, within the packet limit).
   */
  readonly maxQueuedBytes?: number
  /** Channels open, all connections together; past it a new one is refused (default 65536). */
  readonly maxChannels?: number
  /**
   * Bytes of answers (all this server sends) queued in its connections' writers and sockets, all
   * together; past it a connection holding more than its share (this / connections) reads no new
   * requests until it holds under half its share or all are back under half; past twice it none
   * does until back under 1.5 times it (default 512 MiB).
   */
  readonly maxQueuedWriteBytes?: number
  /** A connection whose peer takes none of what it sends for this long is closed (default 60 s; 0: no limit). */
  readonly writeTimeoutMs?: number
  /** A new connection must complete its first packet (its hello) within this (default 10 s; 0: no limit). */
  readonly firstPacketTimeoutMs?: number
  /** A packet once started must be complete within this, unless this side paused reading (default 30 s; 0: no limit). */
  readonly packetTimeoutMs?: number
  /** A connection with nothing in flight and no packet for this long is closed (default 5 min; 0: never). Mesh pings keep live peers busy. */
  readonly idleTimeoutMs?: number
  /** Accept mesh mode from iip-mesh dialers (default true). */
  readonly mesh?: boolean
  /** How long closing the Scope of `make` lets in-flight requests finish (default 5 s). */
  readonly drainTimeoutMs?: number
  /** Count requests and serve the reference's /sys statistics paths to the peers it allows (statistics.ts). */
  readonly statistics?: StatisticsOptions
  /** Run connections inside TLS: mutual TLS for mesh peers, or the Go reference's TLS mode (tls.ts). */
  readonly tls?: ServerTlsOptions
  /** The prefix an IPv6 peer counts by when a connection is picked to make way at maxConnections (sourceKey.ts; default a /64). */
  readonly ipv6SourcePrefix?: number
  /** Told what happened to each newcomer at `maxConnections`: a connection evicted for it (by which rule), or it refused (for a metric). */
  readonly onAtLimit?: (result: AtLimit) => void
}

/** What a newcomer at `maxConnections` led to: evicting one that proved nothing, evicting one of the source holding the most, or its refusal. */
export type AtLimit = "evicted_unproven" | "evicted_fair_share" | "refused"

const defaultHandshakeTimeoutMs = 10_000
/** Connections the server holds at once unless told otherwise (a sidecar fits it to its open-file limit: src/sidecar/fileLimit.ts). */
export const defaultMaxConnections = 1000
/** `connection-evicted` and `connection-refused` lines (WebSocket upgrades refused too) at most per window: a flood at the cap is thousands a second. */
const acceptLines = 20
const acceptLinesWindowMs = 60_000
/** TLS handshakes that may run past `maxConnections` at once, of sources owed a place there (full). */
export const pastLimit = 16
/**
 * Events a peer can have logged once per connection or per request, as often as it likes: a bad
 * byte on each of connections opened in a loop, a failed handshake, a first packet never sent, a
 * request its handler dies on, a push that fails. Each at most `acceptLines` a window, as the accept lines.
 */
const peerRepeatedEvents = ["protocol-violation", "tls-refused", "handler-crashed", "push-failed", "no-first-packet", "packet-timeout", "stalled"]

/** What each numeric option takes (optionLimits.ts): 0 is "no limit" for the timeouts that say so. */
const serverLimits: Limits<ServerOptions> = {
  maxConnections: count(1),
  // A hello states it as a positive 31-bit number (mesh.ts decodeHello).
  maxChannelsPerConnection: count(1, 0x7fff_ffff),
  maxQueuedRequestsPerConnection: count(1),
  maxQueuedBytesPerConnection: count(1),
  maxQueuedRequests: count(1),
  maxQueuedBytes: count(1),
  maxChannels: count(1),
  maxQueuedWriteBytes: count(1),
  writeTimeoutMs: durationMs(0),
  firstPacketTimeoutMs: durationMs(0),
  packetTimeoutMs: durationMs(0),
  idleTimeoutMs: durationMs(0),
  drainTimeoutMs: durationMs(0),
  ipv6SourcePrefix: count(IPV6_SOURCE_PREFIX.min, IPV6_SOURCE_PREFIX.max)
}
const tlsLimits: Limits<ServerTlsOptions> = { handshakeTimeoutMs: durationMs(1) }
const webSocketLimits: Limits<WebSocketServerOptions> = { maxMessageBytes: count(1), maxConnections: count(1) }

/** Throws OptionInvalid (optionLimits.ts) for a numeric option of a server out of range. */
export const checkServerOptions = (options: ServerOptions): void => {
  checkOptions("IipServer", serverLimits, options)
  checkOptions("IipServer tls", tlsLimits, options.tls)
  checkPeerOptions("IipServer", options)
}

export class IipServer {
  readonly router = new Router<Handler>()
  private readonly plain = new Set<ServerSession>()
  private readonly meshes = new Set<MeshSession>()
  private readonly listener: net.Server
  /** Where its events go (options.log); what serves on it logs there too (files: a failed expiry). */
  readonly log: Log
  /** `log` with the lines a peer can repeat at will bounded (peerRepeatedEvents): what connections, timeouts and handlers log through. */
  private readonly peerLog: Log
  private readonly peerLines: ThrottledLog
  private readonly options: ServerOptions
  private readonly maxConnections: number
  private readonly limits: ConnectionLimits
  private readonly hello: Hello
  private readonly supervisor: Supervisor
  private readonly meshListeners: Array<(session: MeshSession) => void> = []
  /** Detach the WebSocket endpoints from their HTTP servers. */
  private readonly webSocketDetachers: Array<() => void> = []
  private readonly dispatch
  private readonly hooks: Array<ServeHook> = []
  readonly statistics: ServerStatistics | undefined
  /** What all connections together may make this server hold (budget.ts). */
  readonly budget: Budget
  /** Each source's part of `budget`: half of it at most (budget.ts SourceBudgets). */
  readonly sources: SourceBudgets
  /** What all connections together queue to send (budget.ts WriteBudget). */
  readonly writeBudget: WriteBudget
  private readonly connectionBudget: BudgetLimits
  private readonly timeouts: ConnectionTimeouts
  private draining = false
  /** Where TLS connections are handshaken (it never listens: the TCP listener hands sockets to it). */
  private readonly tlsServer: tls.Server | undefined
  /** Sockets between accept and a finished handshake (or their first byte), closed with the server. */
  private readonly handshaking = new Set<net.Socket>()
  /**
   * What has proven nothing, by source: the first to make way at the cap (evictUnproven). Sockets
   * still handshaking (or before their first byte), and connections with no verified client
   * certificate and no whole packet read, as far as known: one that moved to mesh mode leaves at
   * its hello, a plain peer's stays until it closes or is passed over at the cap. A plain socket
   * in permissive mode that sent a byte has proven no more than a handshake under way.
   */
  private readonly unproven = new SourcePlaces<net.Socket | Connection>()
  /** Connections whose client certificate was verified, with no whole packet read yet (as `unproven`): they make way only when nothing in `unproven` can. */
  private readonly unprovenIdentified = new SourcePlaces<Connection>()
  /** Every connection, by source: with nothing unproven left, a source holding more than a newcomer's gives up one (evictUnfair). */
  private readonly fair = new FairPlaces()
  /** Sockets closed at the cap while the TLS server had them: their failed handshake is not a peer's refusal. */
  private readonly evictedInTls = new WeakSet<net.Socket>()
  private readonly evictedLines = new LogThrottle(acceptLines, acceptLinesWindowMs)
  /** Evicted mesh connections still draining (drainEvicted) or whose sockets still carry their go-away and FIN (closeTelling). */
  private evictedClosing = 0
  /** Busy mesh connections evicted, draining outside the live ones (drainEvicted). */
  private readonly evictedDrains: EvictedDrains
  private readonly refusedLines = new LogThrottle(acceptLines, acceptLinesWindowMs)
  /** A plain peer's connection closed because its answer cannot be built (ServerSession): a peer can repeat it on connection after connection. */
  private readonly unanswerableLines = new LogThrottle(acceptLines, acceptLinesWindowMs)
  private readonly logUnanswerable = (remote: string, reason: string, identity: string | undefined) =>
    this.logAccept(this.unanswerableLines, "answer-unsendable", remote, reason, identity)

  /** Throws OptionInvalid (optionLimits.ts) for a numeric option out of range. */
  constructor(options: ServerOptions) {
    checkServerOptions(options)
    this.options = options
    this.maxConnections = options.maxConnections ?? defaultMaxConnections
    this.log = options.log ?? stderrLog
    // A push-failed line's path is the peer's: mux (meshServing.ts), below redact.ts, writes it whole; cut here, once admitted.
    const log = this.log
    const pathsCut: Log = (event, fields) => log(event, event === "push-failed" && typeof fields.path === "string" ? { ...fields, path: loggable(fields.path) } : fields)
    this.peerLines = throttledEvents(pathsCut, peerRepeatedEvents, acceptLines, acceptLinesWindowMs)
    this.peerLog = this.peerLines.log
    const perConnectionBytes = options.maxQueuedBytesPerConnection ?? defaultBudgets.maxQueuedBytesPerConnection
    const limits = { ...defaultConnectionLimits, ...options.connectionLimits }
    // A message that cannot fit in its connection's budget could never be assembled.
    this.limits = { ...limits, maxMessageBytes: Math.min(limits.maxMessageBytes, perConnectionBytes) }
    this.connectionBudget = {
      maxRequests: options.maxQueuedRequestsPerConnection ?? defaultBudgets.maxQueuedRequestsPerConnection,
      maxBytes: perConnectionBytes,
      maxChannels: Infinity // per connection: maxChannelsPerConnection, checked by the sessions
    }
    this.budget = new Budget({
      maxRequests: options.maxQueuedRequests ?? defaultBudgets.maxQueuedRequests,
      maxBytes: options.maxQueuedBytes ?? defaultBudgets.maxQueuedBytes,
      maxChannels: options.maxChannels ?? defaultBudgets.maxChannels
    })
    this.sources = new SourceBudgets(this.budget.limits)
    this.writeBudget = new WriteBudget(options.maxQueuedWriteBytes ?? defaultBudgets.maxQueuedWriteBytes)
    this.supervisor = options.supervisor ?? new Supervisor()
    this.timeouts = new ConnectionTimeouts(
      {
        firstPacketMs: options.firstPacketTimeoutMs ?? defaultTimeouts.firstPacketMs,
        packetMs: options.packetTimeoutMs ?? defaultTimeouts.packetMs,
        idleMs: options.idleTimeoutMs ?? defaultTimeouts.idleMs,
        writeMs: options.writeTimeoutMs ?? defaultTimeouts.writeMs
      },
      this.supervisor,
      this.peerLog
    )
    this.evictedDrains = new EvictedDrains(this.supervisor, this.log)
    this.statistics = options.statistics === undefined ? undefined : new ServerStatistics(options.statistics, this.router, this)
    this.dispatch = makeDispatch(this.router, this.peerLog, this.hooks, this.statistics)
    this.hello = localHello({
      node: options.node,
      maxMetaBytes: options.maxMetaBytes,
      maxChannels: options.maxChannelsPerConnection,
      maxRequests: this.connectionBudget.maxRequests,
      maxBytes: this.connectionBudget.maxBytes,
      compression: offeredCodecs(options.compression)
    })
    this.tlsServer = options.tls === undefined ? undefined : this.makeTlsServer(options.tls)
    this.listener = net.createServer({ noDelay: true }, (socket) => (this.tlsServer === undefined ? this.accept(socket, undefined) : this.sniff(socket)))
  }

  /**
   * New credentials (a renewed leaf, a new trust bundle) for connections accepted from now on;
   * established connections keep theirs.
   */
  updateTlsCredentials(credentials: TlsCredentials): void {
    this.tlsServer?.setSecureContext(this.secureContextOptions(credentials))
  }

  /** Registers `handler` for requests whose parsed path is exactly `path`, inside its own `hooks` (dispatch.ts). */
  handle(path: string, handler: Handler, hooks: ReadonlyArray<ServeHook> = []): this {
    this.router.add(path, withHooks(handler, hooks, this.peerLog))
    return this
  }

  /** Registers `handler` for every path under `prefix` that has no exact route. */
  handlePrefix(prefix: string, handler: Handler, hooks: ReadonlyArray<ServeHook> = []): this {
    this.router.addPrefix(prefix, withHooks(handler, hooks, this.peerLog))
    return this
  }

  /** Adds a global hook: it sees every request, outside the route hooks (order in dispatch.ts). */
  use(hook: ServeHook): this {
    this.hooks.push(hook)
    return this
  }

  /** Calls `listener` with every connection that enters mesh mode: it can call the dialer back. */
  onMeshConnection(listener: (session: MeshSession) => void): this {
    this.meshListeners.push(listener)
    return this
  }

  /**
   * Serves IIP over WebSocket (PROTOCOL.md §18) on `options.path` (default "/iip") of an HTTP
   * server the caller owns and listens with; same routes, both modes, calls in both directions.
   * Closing this server detaches it and closes those connections; the HTTP server stays. Throws
   * OptionInvalid (optionLimits.ts) for a numeric option out of range, attaching nothing.
   */
  attachWebSocket(server: http.Server, options: WebSocketServerOptions = {}): this {
    checkOptions("IipServer attachWebSocket", webSocketLimits, options)
    // An upgrade flood at the cap is a line each otherwise: the same line and budget as the TCP listener's refusals.
    const refused = (remote: string, reason: string) => this.logAccept(this.refusedLines, "connection-refused", remote, reason)
    this.webSocketDetachers.push(acceptWebSocket(server, options, (stream) => this.accept(stream, undefined), refused))
    return this
  }

  /** The TCP listener's address (after `listen`). */
  get address(): { readonly host: string; readonly port: number } {
    const address = this.listener.address() as net.AddressInfo
    return { host: address.address, port: address.port }
  }

  /** The live plain-IIP connections (for inspection: paused reading, writer congestion, channels). */
  get sessions(): ReadonlySet<ServerSession> {
    return this.plain
  }

  /** The live mesh connections. */
  get meshSessions(): ReadonlySet<MeshSession> {
    return this.meshes
  }

  get connectionCount(): number {
    return this.plain.size + this.meshes.size
  }

  /** Busy mesh connections evicted at the cap, still draining outside connectionCount (evictedDrains.ts), and their peers' channels. */
  get evictedDraining(): { readonly connections: number; readonly channels: number } {
    return { connections: this.evictedDrains.size, channels: this.evictedDrains.peerChannels }
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (error: NodeJS.ErrnoException) =>
        reject(new ListenFailed({ message: `cannot listen on ${this.options.host ?? "127.0.0.1"}:${this.options.port ?? 0}: ${error.code ?? error.message}` }))
      this.listener.once("error", onError)
      this.listener.listen(this.options.port ?? 0, this.options.host ?? "127.0.0.1", () => {
        this.listener.off("error", onError)
        resolve()
      })
    })
  }

  /**
   * Runs `effect` as a fiber under this server's Supervisor: on its creator's Clock (make), stopped
   * when the server closes. For the background work of what serves on it (files: expiry sweeps).
   */
  background(effect: Effect.Effect<void>): void {
    this.supervisor.fork(effect)
  }

  /**
   * The events a peer can repeat at will (protocol-violation, tls-refused, handler-crashed,
   * push-failed, no-first-packet, packet-timeout, stalled), each counted since start: lines written
   * (at most 20 a minute each) and occurrences held back. For a metric: the lines are bounded, these are not.
   */
  peerEvents(): ReadonlyArray<EventCount> {
    return this.peerLines.counts()
  }

  /** Stops listening and closes every connection at once; counts of lines held back are written. */
  close(): Promise<void> {
    this.supervisor.interruptAll()
    this.timeouts.stop()
    for (const socket of this.handshaking) socket.destroy()
    for (const detach of this.webSocketDetachers.splice(0)) detach()
    for (const session of this.plain) session.connection.close("server closed", false)
    for (const session of this.meshes) session.connection.close("server closed", false)
    this.evictedDrains.closeAll()
    this.peerLines.close()
    return new Promise((resolve) => (this.listener.listening ? this.listener.close(() => resolve()) : resolve()))
  }

  /**
   * Graceful stop (PROTOCOL.md §11): stop accepting, say go-away on every mesh connection, let
   * in-flight requests finish, and close each connection once it is idle or at `deadlineMs`.
   * Plain peers cannot be told; their connections close once idle or at the deadline too.
   */
  drain(deadlineMs: number): Effect.Effect<void> {
    const server = this
    return Effect.gen(function*() {
      server.draining = true
      if (server.listener.listening) server.listener.close()
      for (const detach of server.webSocketDetachers.splice(0)) detach()
      for (const session of server.meshes) session.goAway("server is stopping")
      // The deadline by the clock (ticks counted as 10 ms each overran it on a loaded machine), its
      // monotonic time: a wall clock stepped back would hold the stop for the step's length.
      const started = yield* monotonicMillis
      for (;;) {
        for (const session of server.meshes) {
          if (session.goAwayAcknowledged && session.servingCount === 0) session.connection.close("drained", true)
        }
        for (const session of server.plain) if (session.idle) session.connection.close("drained", true)
        // Busy evicted connections drain on (evictedDrains.ts) until their own deadline or this one.
        if (server.connectionCount === 0 && server.evictedDrains.size === 0) return
        const left = deadlineMs - ((yield* monotonicMillis) - started)
        if (left <= 0) break
        yield* Effect.sleep(Math.min(10, left))
      }
      server.log("drain-deadline", { open: server.connectionCount + server.evictedDrains.size, afterMs: (yield* monotonicMillis) - started })
      yield* Effect.promise(() => server.close())
    })
  }

  private secureContextOptions(credentials: TlsCredentials): tls.SecureContextOptions {
    return {
      key: credentials.key,
      cert: credentials.cert,
      ...(credentials.ca === undefined ? {} : { ca: credentials.ca }),
      // node's TLS server picks by its own order (honorCipherOrder, default true there), whatever the client's.
      ...(this.options.tls?.ciphers === undefined ? {} : { ciphers: this.options.tls.ciphers, honorCipherOrder: true }),
      minVersion: this.options.tls?.minVersion ?? "TLSv1.3"
    }
  }

  private makeTlsServer(options: ServerTlsOptions): tls.Server {
    const server = tls.createServer(
      {
        ...this.secureContextOptions(options.credentials),
        // The client's chain is judged in `secured`, not by the handshake: a refusal there can tell
        // the client why (in TLS 1.3 the handshake's own refusal reaches a client as a bare close).
        requestCert: options.requireClientCertificate,
        rejectUnauthorized: false,
        ALPNProtocols: [...(options.alpn ?? [MESH_ALPN])],
        handshakeTimeout: options.handshakeTimeoutMs ?? defaultHandshakeTimeoutMs
      },
      (socket) => this.secured(socket, options)
    )
    server.on("tlsClientError", (error: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
      const parent = parentOf(socket)
      if (parent === undefined || !this.evictedInTls.has(parent)) this.refused(classifyTlsError(error), socket, peerCertificateOf(socket))
      socket.destroy()
    })
    return server
  }

  private refused(refusal: TlsRefusal, socket: ByteStream, peer: X509Certificate | undefined): void {
    const remote = `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? 0}`
    if (this.options.tls?.onRefused !== undefined) this.options.tls.onRefused(refusal, remote, peer)
    else this.peerLog("tls-refused", { remote, reason: refusal.reason, message: refusal.message })
  }

  /** A TLS server's new socket: TLS or (permissive) plain IIP, as its first byte says, within the handshake timeout. */
  private sniff(socket: net.Socket): void {
    const tlsOptions = this.options.tls!
    if (this.full(socket, true)) return
    this.handshaking.add(socket)
    this.unproven.add(socket, this.sourceOf(socket))
    const timeoutMs = tlsOptions.handshakeTimeoutMs ?? defaultHandshakeTimeoutMs
    const timer = setTimeout(() => {
      this.refused({ reason: "tls_handshake", message: `nothing received within ${timeoutMs} ms` }, socket, undefined)
      socket.destroy()
    }, timeoutMs)
    const settle = () => {
      clearTimeout(timer)
      socket.off("error", onError)
      socket.off("close", settle)
    }
    const onError = () => socket.destroy()
    socket.on("error", onError)
    socket.once("close", () => {
      settle()
      this.handshaken(socket)
    })
    socket.once("data", (chunk: Buffer) => {
      settle()
      socket.pause()
      socket.unshift(chunk)
      if (chunk[0] === TLS_HANDSHAKE_RECORD) {
        // Handed to the TLS server; `secured` takes it over once its handshake is done.
        this.tlsServer!.emit("connection", socket)
        return
      }
      const held = this.handshaken(socket)
      if (tlsOptions.acceptPlain !== true) return this.refuseClient(socket, { reason: "plain_refused", message: "peer speaks plain IIP; this side requires TLS" }, undefined)
      tlsOptions.onPlain?.(`${socket.remoteAddress ?? "?"}:${socket.remotePort ?? 0}`)
      this.accept(socket, undefined, held)
      socket.resume()
    })
  }

  /** `socket` left its handshake (finished, closed, or found plain): it holds a place as a connection now, or none. True when it held a handshake's place (full): its connection takes that one's. */
  private handshaken(socket: net.Socket): boolean {
    this.unproven.delete(socket)
    return this.handshaking.delete(socket)
  }

  /** A finished handshake: the client's certificate verified (mesh) and its identity checked, then IIP. */
  private secured(socket: tls.TLSSocket, options: ServerTlsOptions): void {
    let held = false
    for (const raw of this.handshaking) if (raw.remotePort === socket.remotePort && raw.remoteAddress === socket.remoteAddress) held = this.handshaken(raw)
    let identity: string | undefined
    if (options.requireClientCertificate) {
      const peer = peerCertificateOf(socket)
      const verdict: string | TlsRefusal | undefined = peer === undefined
        ? { reason: "peer_no_certificate", message: "peer presented no certificate" }
        : !socket.authorized
        ? classifyTlsError({ name: "Error", message: String(socket.authorizationError), code: String(socket.authorizationError) })
        : options.identifyPeer?.(peer)
      if (verdict !== undefined && typeof verdict !== "string") return this.refuseClient(socket, verdict, peer)
      identity = verdict
    }
    options.onHandshake?.(identity)
    this.accept(socket, identity, held)
  }

  /** Tells a refused client why (an answer to its hello, §19), without reading anything it sent, and closes. */
  private refuseClient(socket: net.Socket, refusal: TlsRefusal, peer: X509Certificate | undefined): void {
    this.refused(refusal, socket, peer)
    socket.on("error", () => socket.destroy())
    // Whatever it sent is dropped unread; reading on lets its close be seen.
    socket.resume()
    socket.end(encodeTlsRefusal(refusal))
    setTimeout(() => socket.destroy(), 1000).unref()
  }

  /**
   * Refuses (and closes) a connection over the limit (handshakes under way count) or while draining.
   * At the limit a connection that has proven nothing yet makes way for the newcomer instead
   * (evictUnproven): else one source holding the places with silent sockets, reconnecting as each
   * reaches its first-packet or handshake timeout, would keep every honest peer out. With none
   * such, a source holding more places than the newcomer's gives one up (evictUnfair): else one
   * holding them all with connections kept alive would. A TLS handshake about to begin (`handshake`)
   * has shown no certificate yet: one owed a place that way takes one of `pastLimit` places past
   * the limit and claims its place once its handshake is done (accept calls this again), so a
   * socket that never finishes one (no certificate needed) closes nobody's connection, nor makes a
   * peer redial and handshake. Several such places, not one: handshakes past the limit are the
   * unproven, a flood of them from one source closes its own (evictUnproven), not another's. A
   * finished handshake (`handshakeHeld`: it held a place, within the limit or past it) turns its
   * place into a connection's: one is closed for it only when the connections alone are at the
   * limit, and then a connection, never another handshake (that left more connections than the
   * limit, and closed a handshake under way for one no more owed a place than it): the largest
   * source's first (else an honest peer's verified a moment ago, its hello still on its way, went
   * before a hog's idle one), then one verified with no whole packet (plain ones in permissive
   * mode are in `unproven` with the handshakes: not looked at here).
   */
  private full(socket: ByteStream, handshake = false, handshakeHeld = false): boolean {
    const max = this.maxConnections
    if (this.draining) return this.refuseAtAccept(socket, "server is draining")
    if (handshakeHeld) {
      if (this.connectionCount < max || this.evictUnfair(socket) || this.evictFrom(this.unprovenIdentified)) return false
    } else {
      const held = this.connectionCount + this.handshaking.size
      if (held < max) return false
      if (handshake && held < max + pastLimit && this.fair.owes(this.sourceOf(socket))) return false
      if (this.evictUnproven() || (!handshake && this.evictUnfair(socket))) return false
    }
    this.options.onAtLimit?.("refused")
    return this.refuseAtAccept(socket, `server connections limited (${max})`)
  }

  /**
   * Closes one connection that proved nothing: of the source holding the most such (sourcePlaces.ts),
   * its oldest; one with a verified client certificate only when no other is left. Honest peers
   * send their hello at once; sockets still silent when the places run out are the likeliest to be
   * an attacker's, and an attacker's are the most of one source unless it spreads them over as
   * many sources as there are places. False when every connection has proven itself (those keep
   * their places: the newcomer is refused).
   */
  private evictUnproven(): boolean {
    return this.evictFrom(this.unproven) || this.evictFrom(this.unprovenIdentified)
  }

  private evictFrom(places: SourcePlaces<net.Socket | Connection>): boolean {
    for (;;) {
      const victim = places.takeOldestOfLargest()
      if (victim === undefined) return false
      if (victim instanceof Connection) {
        // A plain peer's first packet is not reported: it is seen here, and the connection passed over for good.
        if (victim.closed || victim.packetsReceived > 0) continue
        this.options.onAtLimit?.("evicted_unproven")
        this.logAccept(this.evictedLines, "connection-evicted", victim.remoteAddress, "no whole packet at the connection limit")
        victim.close("evicted at the connection limit", false)
        return true
      }
      this.handshaking.delete(victim)
      this.evictedInTls.add(victim)
      this.options.onAtLimit?.("evicted_unproven")
      this.logAccept(this.evictedLines, "connection-evicted", `${victim.remoteAddress}:${victim.remotePort}`, "handshake unfinished at the connection limit")
      victim.destroy()
      return true
    }
  }

  /**
   * Closes one connection of the source holding the most places for a newcomer whose source, with
   * it, would still hold fewer (fairPlaces.ts: its connection idle longest; one with requests in
   * flight only when none looked at is idle: a mesh one drains, drainEvicted; a plain one's end
   * as a connection loss). False when the newcomer's source holds its share already: it is refused.
   */
  private evictUnfair(socket: ByteStream): boolean {
    const eviction = this.fair.evictFor(this.sourceOf(socket))
    if (eviction === undefined) return false
    const { connection } = eviction.place
    const reason = `fair share at the connection limit: its source held ${eviction.held} places, the newcomer's ${eviction.newcomerHeld}; ${
      eviction.busy ? "requests in flight on every connection looked at" : "idle longest"
    }`
    this.options.onAtLimit?.("evicted_fair_share")
    this.logAccept(this.evictedLines, "connection-evicted", connection.remoteAddress, reason, connection.peerIdentity)
    if (eviction.busy) eviction.place.closeBusy("evicted at the connection limit (fair share), requests in flight")
    else eviction.place.closeIdle("evicted at the connection limit (fair share)")
    return true
  }

  /**
   * An idle mesh connection evicted: its place is free at once (the session is gone), its peer told
   * with a go-away `closing` that it read none of the requests still in the air, so they go
   * elsewhere unfailed (MeshSession.closeNow). Its socket stays until the peer takes those bytes and
   * closes (at most 5 s); past `maxConnections` such sockets at once, an eviction closes at once,
   * untold, so evictions cannot pile up half-closed sockets.
   */
  private closeTelling(mesh: MeshSession, reason: string): void {
    const { connection } = mesh
    if (this.evictedClosing >= this.maxConnections) return connection.close(reason, false)
    this.evictedClosing++
    connection.socket.once("close", () => this.evictedClosing--)
    mesh.closeNow(reason)
  }

  /**
   * A busy mesh connection evicted: drained, not cut (PROTOCOL.md §11 "Evicted busy"). Its place is
   * free at once (it leaves the live sessions: connectionCount drops it; fairPlaces dropped it
   * already), its peer is told go-away `closing` expecting an answer, so it sends nothing new on
   * it and a request that crosses the go-away is refused not processed (sent elsewhere); what runs
   * finishes and its answers reach the peer, until it closes drained or at evictedDrainMs
   * (evictedDrains.ts). It counts with closeTelling's sockets: past `maxConnections` of them it
   * closes at once, untold, so a hog keeping requests open everywhere gains nothing.
   */
  private drainEvicted(mesh: MeshSession, isIdle: () => boolean, reason: string): void {
    const { connection } = mesh
    if (this.evictedClosing >= this.maxConnections) return connection.close(reason, false)
    this.evictedClosing++
    connection.socket.once("close", () => this.evictedClosing--)
    this.meshes.delete(mesh)
    this.evictedDrains.add(mesh, isIdle, reason)
  }

  private refuseAtAccept(socket: ByteStream, reason: string): true {
    this.logAccept(this.refusedLines, "connection-refused", `${socket.remoteAddress}:${socket.remotePort}`, reason)
    socket.destroy()
    return true
  }

  /** A line of `event` unless `lines` says too many went out lately (the first after them counts the rest). */
  private logAccept(lines: LogThrottle, event: string, remote: string, reason: string, identity?: string): void {
    const admitted = lines.admit()
    if (admitted !== undefined) this.log(event, { remote, reason, ...(identity === undefined ? {} : { identity }), ...admitted })
  }

  private sourceOf(socket: ByteStream): string {
    return sourceKeyOf(socket.remoteAddress ?? "", this.options.ipv6SourcePrefix ?? IPV6_SOURCE_PREFIX.default)
  }

  private accept(socket: ByteStream, peerIdentity: string | undefined, handshakeHeld = false): void {
    if (this.full(socket, false, handshakeHeld)) return
    const source = this.sourceOf(socket)
    const connection = new Connection(socket, "server", this.limits, this.peerLog, { own: this.connectionBudget, shared: this.budget, writes: this.writeBudget, source: this.sources.join(source) })
    // Before the session exists: it copies the identity into every request's context.
    connection.peerIdentity = peerIdentity
    const session = new ServerSession(
      connection,
      this.dispatch,
      { maxChannels: this.options.maxChannelsPerConnection ?? defaultServerSessionLimits.maxChannels },
      (closed) => {
        this.plain.delete(closed)
        this.dropUnproven(connection)
        this.fair.delete(place)
      },
      this.options.mesh === false ? undefined : (data) => this.upgrade(session, connection, place, data),
      this.logUnanswerable
    )
    this.plain.add(session)
    const unproven = peerIdentity === undefined ? this.unproven : this.unprovenIdentified
    unproven.add(connection, source)
    const isIdle = () => session.idle
    const place = this.fair.add(connection, source, isIdle)
    this.timeouts.watch(connection, isIdle)
  }

  /** `connection` read a whole packet, or closed: it no longer makes way at the cap. */
  private dropUnproven(connection: Connection): void {
    this.unproven.delete(connection)
    this.unprovenIdentified.delete(connection)
  }

  /** Answers an iip-mesh hello and moves the connection to a mesh session. */
  private upgrade(session: ServerSession, connection: Connection, place: Place, data: Buffer) {
    const theirs = decodeHello(data)
    if (theirs === undefined) return undefined
    const agreed = agree(this.hello, theirs)
    // This side picks the codec: the first of its own that the dialer offers (PROTOCOL.md §12.1).
    const codec = pickCodec(this.hello.compression ?? [], theirs.compression ?? [])
    return {
      answer: encodeHello({ ...this.hello, features: agreed.features, compression: codec === undefined ? [] : [codec] }, true),
      upgrade: () => {
        this.plain.delete(session)
        // Its hello was a whole packet.
        this.dropUnproven(connection)
        const mesh = new MeshSession(connection, {
          isDialer: false,
          agreed,
          receiveWindow: this.hello.streamWindow,
          grantCredit: grantedCredit(this.hello, agreed),
          dispatch: this.dispatch,
          maxMessageBytes: this.limits.maxMessageBytes,
          compression: compressionFor(codec, this.options.compression),
          log: this.peerLog
        })
        this.meshes.add(mesh)
        mesh.onClosed(() => {
          this.meshes.delete(mesh)
          this.fair.delete(place)
        })
        const isIdle = () => mesh.servingCount === 0 && mesh.callingCount === 0
        place.isIdle = isIdle
        place.closeIdle = (reason) => this.closeTelling(mesh, reason)
        place.closeBusy = (reason) => this.drainEvicted(mesh, isIdle, reason)
        this.timeouts.watch(connection, isIdle)
        if (this.options.keepAlive !== false) this.supervisor.fork(keepAlive(mesh, this.options.keepAlive ?? defaultKeepAlive))
        for (const listener of this.meshListeners) listener(mesh)
      }
    }
  }
}

/**
 * Starts a server whose lifetime is the current Scope; its timers run on the caller's Clock.
 * Closing the Scope (SIGTERM under NodeRuntime.runMain, say) drains it first (`drainTimeoutMs`).
 */
export const make = (options: ServerOptions = {}): Effect.Effect<IipServer, ListenFailed, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      const supervisor = options.supervisor ?? (yield* Supervisor.current)
      const server = new IipServer({ ...options, supervisor })
      yield* Effect.tryPromise({
        try: () => server.listen(),
        catch: (error) => (error instanceof ListenFailed ? error : new ListenFailed({ message: messageOf(error) }))
      })
      return server
    }),
    (server) => server.drain(options.drainTimeoutMs ?? 5000).pipe(Effect.andThen(Effect.promise(() => server.close())))
  )

/**
 * The socket a TLS socket of the server wraps: the one sniff handed over. Node keeps it in the
 * undocumented `_parent` (set by the TLSSocket constructor since its first version); without it, an
 * evicted handshake is logged as a refusal, as before eviction existed.
 */
const parentOf = (socket: tls.TLSSocket): net.Socket | undefined => (socket as unknown as { readonly _parent?: net.Socket })._parent

const peerCertificateOf = (socket: tls.TLSSocket): X509Certificate | undefined => {
  try {
    return socket.getPeerX509Certificate()
  } catch {
    return undefined
  }
}
