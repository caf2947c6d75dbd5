// The IIP client for one server address: a pool of connections, each with channels opened ahead
// of need. Every connection starts with a hello (PROTOCOL.md §10): an iip-mesh server agrees to
// mesh mode (typed errors, metadata, deadlines, cancel, calls back to us), a plain IIP server
// answers with its unknown-path error and the connection stays plain. A request goes to a free
// channel, or to one opened for it while the client is under its channel limit: not behind
// another request while it need not be, since a server answers one channel's requests strictly in
// order and a hanging one would hold up whatever was written after it. At the limit it is written
// behind the least-loaded channel (`pipelineAtLimit`, the default) or waits in the client's queue
// (its deadline running, its cancel honoured) for the first channel that frees. A lost
// connection is redialled with exponential backoff and jitter, and requests that were never sent
// go out on the new one. Every request ends exactly once. The
// connection is TCP, TLS over TCP (`tls`: mutual TLS between sidecars, or the Go reference's TLS
// mode), or IIP over WebSocket (`transport: "websocket"`) where only HTTP passes.
// Here: the public API, routing requests to channels or the queue, opening channels ahead of
// need, the redial loop and the connections' lifecycle. Its options and errors are in
// clientOptions.ts, one request on its way in clientRequest.ts, the queue in clientQueue.ts, the
// choice of a channel and the channel limits in connectionPool.ts, one connection attempt with its
// hello in clientDial.ts.
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { defaultBudgets } from "../mux/budget.ts"
import type { ClientChannel, ClientSession } from "../mux/clientSession.ts"
import { monotonicMs } from "../mux/clock.ts"
import { defaultConnectionLimits } from "../mux/connection.ts"
import { ChannelOpenFailed, ConnectFailed, ConnectionClosed, Overloaded, RequestTimeout } from "../mux/errors.ts"
import { LateTimer } from "../mux/lateTimer.ts"
import { type MeshCallError, type MeshReply, type MeshSession, type OwnChannel, RemoteError } from "../mux/meshSession.ts"
import { offeredCodecs } from "../protocol/compression.ts"
import { PacketEncodeError } from "../protocol/errors.ts"
import { clampDeadlineMs, emptyMeta, localHello, MaxDeadlineMs, MeshErrorCode, type Meta } from "../protocol/mesh.ts"
import { backoffDelay, type DialSettings, dialOnce } from "./clientDial.ts"
import { checkClientOptions, type ClientCallback, type ClientError, type ClientOptions, type ReconnectOptions, type RequestOptions } from "./clientOptions.ts"
import { ClientQueue } from "./clientQueue.ts"
import { Pending, type PendingCount, sendPlain } from "./clientRequest.ts"
import { ConnectionPool, type Link, type Pooled } from "./connectionPool.ts"
import { type Handler, makeDispatch } from "./dispatch.ts"
import { defaultKeepAlive, keepAlive } from "./keepAlive.ts"
import { type Log, LogThrottle, stderrLog } from "./log.ts"
import { Router } from "./router.ts"
import { Supervisor } from "./supervisor.ts"

/** How long a drained connection with nothing awaited on it is left to its peer to close. */
const DRAINED_CLOSE_AFTER_MS = 1000

/** A mesh channel of a drained connection with nothing on it still wanted: every call over for its caller, nothing held, no stream either way. */
const nothingAwaited = (channel: ClientChannel | OwnChannel): boolean => {
  const own = channel as OwnChannel
  return own.held === 0 && !own.streaming && !own.tunnelOpening && own.fifo.every((call) => call.done)
}

const toBytes = (data: Uint8Array | string | undefined): Uint8Array =>
  data === undefined ? new Uint8Array(0) : typeof data === "string" ? Buffer.from(data, "utf8") : data

/** Overloaded `limit` of a tunnel refused for want of a stream place (RequestOptions.tunnel). */
export const StreamPlacesLimit = "streamChannels"

/** How long after a stream ended channels left over for streams are looked at (`trimSoon`). */
const TRIM_AFTER_MS = 1000

/**
 * The bound on `connect-failed` lines, 10 a minute: a client's own unless its owner gives one
 * (ClientOptions.connectFailedLines), as the owners of many clients (the sidecar's endpoint
 * registry, the load-balance client) do, one for all of them (`shared`). A shared one keeps half
 * for a client's first failure since it was last connected: an endpoint failing per request does
 * not hide another's first failure for the rest of the minute, or for good when it fails faster.
 * `now`: tests' clock.
 */
export const connectFailedThrottle = (shared = false, now: () => number = monotonicMs): LogThrottle => new LogThrottle(10, 60_000, now, shared ? 5 : 0)

/**
 * 2^40 ms: Date.now() has read more since November 2004, monotonicMs() (counted from this process's
 * or worker's start) reaches it after 34 years, so a `now` at or past it was read from the wall
 * clock. Not performance.timeOrigin: a wall clock stepped back by more than the process's age
 * (booted ahead, then NTP) reads below that for as long.
 */
const wallClockFloorMs = 2 ** 40

const nowNotMonotonic = (now: number): PacketEncodeError =>
  new PacketEncodeError({ rule: "now-not-monotonic", message: `RequestOptions.now ${now} is a wall-clock time: pass monotonicMs() (src/mux/clock.ts) or leave it out` })

/** A timeout of NaN (a deadline computed from an undefined) was read as none: the request waited forever. Refused instead. */
export const timeoutNotANumber = (): PacketEncodeError =>
  new PacketEncodeError({ rule: "timeout-not-a-number", message: "RequestOptions.timeoutMs is NaN: give a number of ms (0 for none) or leave it out" })

export class IipClient {
  readonly router = new Router<Handler>()
  readonly address: string
  private readonly pool: ConnectionPool
  /** Requests waiting for a channel (tunnels apart). */
  private readonly queue = new ClientQueue((request) => this.expired(request))
  /**
   * Tunnels (RequestOptions.tunnel) waiting for a stream place: a queue of their own, so that a
   * tunnel waiting for a connection to be dialled (the live ones' places taken) never holds up the
   * requests behind it, which a live connection's free channels can take now. Bounded by the places
   * that will come (tunnelRoom).
   */
  private readonly tunnelQueue = new ClientQueue((request) => this.expired(request))
  /** Callers of `mode` waiting for a connection. */
  private readonly modeWaiters: Array<(error: ClientError | undefined, mode: "mesh" | "plain" | undefined) => void> = []
  private dialing = false
  /** A connection attempt is under way (not the wait between attempts). */
  private attempting = false
  /** Why the last connection attempt failed, for requests that time out waiting for one. */
  private lastConnectError: ConnectFailed | undefined
  /** A dial failed since the last connection came up: its next failures are repeats (connectFailedLines). */
  private connectFailing = false
  /**
   * Mesh connections in a row that the peer drained or closed before they answered a call: each
   * dial succeeded, so without this the back-off started over every time, and a peer that goes away
   * at once after its hello was redialled in a loop, idle or not (a channel is kept open ahead).
   * The next dial waits as after as many failed ones; an answer on any connection clears it.
   */
  private churned = 0
  /** A connection the peer drains may still be open (closeDrained looks when a call or a stream ends). */
  private drainedOpen = false
  /** Set while closeDrained is due. */
  private drainedTimer: NodeJS.Timeout | undefined = undefined
  /** Requests sent and not yet answered. */
  private readonly pending: PendingCount = { value: 0 }
  private closed = false
  private readonly idleChannelsAhead: number
  private readonly maxPending: number
  private readonly connectTimeoutMs: number
  private readonly requestTimeoutMs: number
  private readonly reconnect: ReconnectOptions
  private readonly log: Log
  private readonly connectFailedLines: LogThrottle
  private readonly options: ClientOptions
  private readonly supervisor: Supervisor
  private readonly dial: DialSettings
  /** Set while channels opened for streams are left over and busy: `trim` looks again when it fires. */
  private trimTimer: NodeJS.Timeout | undefined = undefined

  /** Throws OptionInvalid (optionLimits.ts) for a numeric option out of range. */
  constructor(options: ClientOptions) {
    checkClientOptions(options)
    this.options = options
    this.address = options.transport === "websocket" ? `ws://${options.host}:${options.port}${options.webSocketPath ?? "/iip"}` : `${options.host}:${options.port}`
    this.pool = new ConnectionPool(
      options.maxConnections ?? 2,
      options.maxChannelsPerConnection ?? 16,
      options.streamChannelsPerConnection ?? 0,
      options.pipelineAtLimit !== false,
      () => this.drainQueue()
    )
    // 0 is honoured (checkClientOptions lets it by): a channel opens only for a request that waits.
    this.idleChannelsAhead = options.idleChannelsAhead ?? 1
    this.maxPending = options.maxPending ?? 10_000
    // Infinity (the one value over MaxDeadlineMs checkClientOptions lets by) as MaxDeadlineMs: past
    // what a Node timer holds, every dial failed after 1 ms.
    this.connectTimeoutMs = Math.min(options.connectTimeoutMs ?? 3000, MaxDeadlineMs)
    this.requestTimeoutMs = options.requestTimeoutMs ?? 5000
    this.reconnect = options.reconnect ?? { baseMs: 100, maxMs: 5000 }
    this.log = options.log ?? stderrLog
    this.connectFailedLines = options.connectFailedLines ?? connectFailedThrottle()
    this.supervisor = options.supervisor ?? new Supervisor()
    this.dial = {
      address: this.address,
      options,
      connectTimeoutMs: this.connectTimeoutMs,
      limits: { ...defaultConnectionLimits, ...options.connectionLimits },
      log: this.log,
      // It states its limits on the server's calls to it as a server does (§10): it never stops
      // reading, so past them it refuses instead of pausing (meshStatedLimits.ts).
      hello: localHello({
        node: options.node,
        maxMetaBytes: options.maxMetaBytes,
        maxRequests: options.maxQueuedRequestsPerConnection ?? defaultBudgets.maxQueuedRequestsPerConnection,
        maxBytes: options.maxQueuedBytesPerConnection ?? defaultBudgets.maxQueuedBytesPerConnection,
        compression: offeredCodecs(options.compression),
        streamWindow: options.streamWindow
      }),
      dispatch: makeDispatch(this.router, this.log),
      // Requests queued behind streaming channels go as soon as one is free; channels opened
      // for streams and no longer needed close.
      onChannelFree: () => {
        this.drainQueue()
        this.trimSoon()
        if (this.drainedOpen) this.closeDrainedSoon()
      },
      // A plain channel's oldest request was answered, its caller not yet told: a waiting request goes first.
      onPlainChannelFree: () => {
        if (this.waiting > 0) this.drainQueue()
      },
      onChannelRefused: (channel) => this.pool.dropRefused(channel),
      closed: () => this.closed
    }
  }

  /** Registers a handler the server may call on this client's mesh connections (calls in both directions). */
  handle(path: string, handler: Handler): this {
    this.router.add(path, handler)
    return this
  }

  /** Connections, channels and requests right now. */
  get stats(): { readonly connections: number; readonly mesh: number; readonly channels: number; readonly pending: number; readonly queued: number } {
    let channels = 0
    let mesh = 0
    for (const pooled of this.pool.connections) {
      channels += pooled.channels.length
      if (pooled.link.mode === "mesh") mesh++
    }
    return { connections: this.pool.connections.length, mesh, channels, pending: this.pending.value, queued: this.waiting }
  }

  /** The live plain-IIP connections of the pool (for inspection: writer congestion, channels). */
  get sessions(): ReadonlyArray<ClientSession> {
    return this.pool.connections.flatMap((pooled) => (pooled.link.mode === "plain" ? [pooled.link.session] : []))
  }

  /** The live mesh connections of the pool. */
  get meshSessions(): ReadonlyArray<MeshSession> {
    return this.pool.connections.flatMap((pooled) => (pooled.link.mode === "mesh" ? [pooled.link.session] : []))
  }

  /** Sends one request; `callback` is called exactly once. The core of `call` and `request`. */
  send(path: string, data: Uint8Array, options: RequestOptions, callback: ClientCallback): void {
    if (this.closed) return callback(new ConnectionClosed({ message: "client is closed", sent: false }), undefined)
    if (this.pending.value >= this.maxPending) return callback(this.overloaded(), undefined)
    const timeoutMs = clampDeadlineMs(options.timeoutMs ?? this.requestTimeoutMs)
    // NaN only: it is the one value not equal to itself.
    if (options.timeoutMs !== options.timeoutMs) return callback(timeoutNotANumber(), undefined)
    this.pending.value++
    // One clock read per request: sent at once, its remaining time is its whole timeout.
    const now = timeoutMs > 0 ? monotonicMs() : 0
    const request = new Pending(this.pending, path, data, timeoutMs, timeoutMs > 0 ? now + timeoutMs : 0, options.meta ?? emptyMeta, options.signal, undefined, callback)
    this.route(request, now)
  }

  /**
   * A request whose body and answer may both stream (mesh mode): `body` as an AsyncIterable goes
   * out in chunks under the server's window; the answer comes back as soon as it starts, its
   * body an AsyncIterable that grants the server more as it is read. `timeoutMs` covers the whole
   * exchange; abort `signal` to stop it early. The pieces `body` yields are sent by reference, not
   * copied: as with a Node writable stream, a piece must not be changed once yielded.
   */
  stream(path: string, body: Uint8Array | AsyncIterable<Uint8Array>, options: RequestOptions = {}): Promise<MeshReply> {
    return new Promise((resolve, reject) => this.streamWith(path, body, options, (error, reply) => (error === undefined ? resolve(reply!) : reject(error))))
  }

  /** `stream` with a callback, called exactly once: no Promise per call (the RPC client's hot path). */
  streamWith(path: string, body: Uint8Array | AsyncIterable<Uint8Array>, options: RequestOptions, onReply: (error: ClientError | undefined, reply: MeshReply | undefined) => void): void {
    if (this.closed) return onReply(new ConnectionClosed({ message: "client is closed", sent: false }), undefined)
    // The sidecar's and the RPC client's calls come this way: past the bound they do not wait in the queue either.
    if (this.pending.value >= this.maxPending) return onReply(this.overloaded(), undefined)
    const timeoutMs = clampDeadlineMs(options.timeoutMs ?? 0)
    if (options.timeoutMs !== options.timeoutMs) return onReply(timeoutNotANumber(), undefined)
    // A `now` on the wall clock (Date.now()) would put the deadline decades away: the caller's bug, told at once.
    if (options.now !== undefined && options.now >= wallClockFloorMs) return onReply(nowNotMonotonic(options.now), undefined)
    // No stream place will come for it before its deadline is the likelier end: told now, nothing sent.
    if (options.tunnel === true && !this.pool.tunnelRoom(this.tunnelQueue.size)) return onReply(this.noStreamPlace(), undefined)
    this.pending.value++
    // One clock read per request (none when the caller gave it): its deadline, and its remaining time when sent at once.
    const now = timeoutMs > 0 ? (options.now || monotonicMs()) : 0
    const request = new Pending(this.pending, path, body, timeoutMs, timeoutMs > 0 ? now + timeoutMs : 0, options.meta ?? emptyMeta, options.signal, onReply, undefined)
    request.tunnel = options.tunnel === true
    this.route(request, now)
  }

  private noStreamPlace(): Overloaded {
    return new Overloaded({ message: `every stream place on the connections to ${this.address} is taken (the rest of their channels are the requests')`, limit: StreamPlacesLimit })
  }

  private overloaded(): Overloaded {
    return new Overloaded({ message: `${this.pending.value} requests pending to ${this.address}`, limit: "maxPending" })
  }

  /** The mode of a live connection, if there is one (no waiting, no dialing). */
  get currentMode(): "mesh" | "plain" | undefined {
    for (const pooled of this.pool.connections) if (!pooled.draining) return pooled.link.mode
    return undefined
  }

  /**
   * Connects if there is no connection yet and tells whether the server speaks mesh mode or plain
   * IIP. Fails with ConnectFailed when no connection is up within the connect timeout, or within
   * `timeoutMs` if that is shorter: nothing was sent, so the caller can go elsewhere.
   */
  mode(timeoutMs = this.connectTimeoutMs): Promise<"mesh" | "plain"> {
    const live = this.pool.connections.find((p) => !p.draining)
    if (live !== undefined) return Promise.resolve(live.link.mode)
    if (this.closed) return Promise.reject(new ConnectionClosed({ message: "client is closed", sent: false }))
    // Between failed attempts the answer is known: do not make the caller wait for the next one.
    // During an attempt it is not (on a lossy network one can take seconds and then succeed).
    if (this.dialing && !this.attempting && this.lastConnectError !== undefined) return Promise.reject(this.lastConnectError)
    return new Promise((resolve, reject) => {
      const waiter = (error: ClientError | undefined, mode: "mesh" | "plain" | undefined) => {
        timer.cancel()
        if (error === undefined) resolve(mode!)
        else reject(error)
      }
      this.modeWaiters.push(waiter)
      const waitMs = Math.max(1, Math.min(timeoutMs, this.connectTimeoutMs))
      // A late timer is this process's stall: a connection made meanwhile is not yet seen
      // (connect-own-stall.test.ts), so it waits its lateness more before the caller hears of a failure.
      const timer = new LateTimer(waitMs, () => {
        const index = this.modeWaiters.indexOf(waiter)
        if (index !== -1) this.modeWaiters.splice(index, 1)
        const message = `no connection to ${this.address} within ${waitMs} ms`
        reject(new ConnectFailed(waitMs < this.connectTimeoutMs ? { message, address: this.address, waitedOut: true } : { message, address: this.address }))
      })
      this.grow()
    })
  }

  /**
   * An active health check: connects if there is no connection, and pings over a mesh one (a
   * plain peer has no ping: a live connection is all it can show). Resolves with the time taken in
   * ms; fails with the connection's error, or RequestTimeout after `timeoutMs`.
   */
  probe(timeoutMs: number): Promise<number> {
    const started = performance.now()
    // As a Node timer takes it: past 2^31-1 ms, NaN or <= 0 it would fire after 1 ms.
    const waitMs = clampDeadlineMs(timeoutMs) || this.connectTimeoutMs
    return new Promise((resolve, reject) => {
      // A late timer is this process's stall: it waits its lateness more before the probe fails, or
      // a healthy endpoint whose answer sat unread in the kernel's buffer is marked (probe-own-stall.test.ts).
      const timer = new LateTimer(waitMs, () => reject(new RequestTimeout({ message: `no answer to a health check within ${waitMs} ms`, timeoutMs: waitMs })))
      const settle = (error: unknown) => {
        timer.cancel()
        if (error === undefined) resolve(performance.now() - started)
        else reject(error)
      }
      this.mode().then(() => {
        const live = this.pool.connections.find((p) => !p.draining)
        if (live === undefined || live.link.mode === "plain") return settle(undefined)
        live.link.session.ping((error) => settle(error))
      }, settle)
    })
  }

  /** Promise form of `send`. Empty data is sent as `{}` to plain peers, as the reference does. */
  call(path: string, data?: Uint8Array | string, options: RequestOptions = {}): Promise<Buffer> {
    return new Promise((resolve, reject) =>
      this.send(path, toBytes(data), options, (error, answer) => (error === undefined ? resolve(answer!) : reject(error)))
    )
  }

  /** Effect form of `send`. Interrupting it cancels the request (at the peer too, in mesh mode). */
  request(path: string, data?: Uint8Array | string, options: RequestOptions = {}): Effect.Effect<Buffer, ClientError> {
    return Effect.callback<Buffer, ClientError>((resume, signal) =>
      this.send(path, toBytes(data), { ...options, signal: options.signal ?? signal }, (error, answer) =>
        resume(error === undefined ? Effect.succeed(answer!) : Effect.fail(error))
      )
    )
  }

  /** Sends a message that gets no answer (mesh mode only: a plain peer would answer it). */
  push(path: string, data: Uint8Array | string, meta: Meta = emptyMeta): void {
    for (const pooled of this.pool.connections) {
      if (pooled.link.mode === "mesh" && !pooled.draining && pooled.channels.length > 0) {
        pooled.link.session.push(pooled.channels[0] as OwnChannel, path, toBytes(data), meta)
        return
      }
    }
    throw new ConnectionClosed({ message: `no mesh connection to ${this.address} to push on`, sent: false })
  }

  /** Closes every connection; outstanding requests fail with ConnectionClosed. */
  close(): void {
    if (this.closed) return
    this.closed = true
    clearTimeout(this.trimTimer)
    clearTimeout(this.drainedTimer)
    this.supervisor.interruptAll()
    this.failQueued(new ConnectionClosed({ message: "client is closed", sent: false }))
    for (const pooled of this.pool.connections.splice(0)) pooled.link.session.connection.close("client closed", false)
  }

  /** Requests and tunnels waiting. */
  private get waiting(): number {
    return this.queue.size + this.tunnelQueue.size
  }

  /** `now`: monotonicMs() when the request was made (0: read the clock when it is dispatched). */
  private route(request: Pending, now = 0): void {
    // Behind others of its kind already waiting, a new one waits too: first come, first served. With
    // none free, `grow` opens a channel for it (a mesh one at once, taking it from the queue).
    const queue = request.tunnel ? this.tunnelQueue : this.queue
    const picked = queue.size === 0 ? this.pool.pick(request.tunnel) : undefined
    if (picked !== undefined) this.dispatch(picked[0], picked[1], request, now)
    else queue.push(request)
    this.grow()
  }

  private dispatch(pooled: Pooled, channel: ClientChannel | OwnChannel, request: Pending, now = 0): void {
    const remaining = request.deadlineAt === 0 ? 0 : Math.max(1, request.deadlineAt - (now === 0 ? monotonicMs() : now))
    try {
      if (pooled.link.mode === "plain") {
        if (!(request.data instanceof Uint8Array)) {
          return request.callback(new ConnectionClosed({ message: `${this.address} speaks plain IIP: streaming needs mesh mode`, sent: false }), undefined)
        }
        sendPlain(pooled.link.session, channel as ClientChannel, request.data, request, remaining)
        return
      }
      request.pooled = pooled
      if (request.tunnel) {
        // A stream's place from now: a tunnel with a whole body streams only once its answer comes.
        request.tunnelChannel = channel as OwnChannel
        request.tunnelChannel.tunnelOpening = true
      }
      pooled.link.session.send(channel as OwnChannel, request.path, request.data, remaining, request.meta, request.signal, request.streams, this.onMeshAnswer, request, request.deadlineAt)
    } catch (error) {
      this.tunnelAnswered(request)
      request.callback(error as Overloaded | PacketEncodeError, undefined)
    }
  }

  /** A mesh call's answer, for the request it was sent for (the call's context): one function for all calls. */
  private readonly onMeshAnswer = (error: MeshCallError | undefined, reply: MeshReply | undefined, context: unknown): void => {
    const request = context as Pending
    this.tunnelAnswered(request)
    // The peer answered (a reply, or its typed error): the connection served, whatever comes next.
    if (reply !== undefined || error instanceof RemoteError) {
      request.pooled!.answered = true
      this.churned = 0
    }
    // Its channel may be free now (a whole answer): a waiting request takes it before this caller,
    // told next, can make a new one.
    if (this.waiting > 0) this.drainQueue()
    if (error instanceof RemoteError && error.code === MeshErrorCode.draining && !error.processed && !this.closed) {
      // The server is stopping (or drains this connection alone: its go-away said `closing`, read
      // before this refusal) and never ran it: move it to another live connection if there is
      // one; otherwise hand the refusal back, so the caller can go to another server now.
      const pooled = request.pooled!
      pooled.draining = true
      this.drainedOpen = true
      if (pooled.link.mode !== "mesh" || !pooled.link.session.peerClosing) this.options.onPeerState?.("go-away")
      if (this.pool.connections.some((p) => !p.draining)) return this.route(request)
    }
    request.streamed(error, reply)
    if (this.drainedOpen) this.closeDrainedSoon()
  }

  /** closeDrained, once the peer had DRAINED_CLOSE_AFTER_MS to close them itself (as a draining server does within a tick of their last answer). */
  private closeDrainedSoon(): void {
    if (this.drainedTimer !== undefined || this.closed) return
    this.drainedTimer = setTimeout(() => {
      this.drainedTimer = undefined
      this.closeDrained()
    }, DRAINED_CLOSE_AFTER_MS)
    this.drainedTimer.unref()
  }

  /**
   * Closes the connections the peer drains once nothing on them is waited for: no call whose caller
   * waits (one given up stays in its channel's order until its answer, which may never come), no
   * stream, no call of the peer's being served. Such a connection is never used again, and a peer
   * that never closes it (as a draining server does once done) kept it open for good: one more per
   * call made while it went away. Called a while after (closeDrainedSoon), so a peer that does
   * close it is the one that does.
   */
  private closeDrained(): void {
    let open = false
    for (const pooled of [...this.pool.connections]) {
      if (!pooled.draining || pooled.link.mode !== "mesh") continue
      const session = pooled.link.session
      if (session.servingCount === 0 && pooled.channels.every(nothingAwaited)) session.connection.close("drained by the peer, nothing on it awaited", true)
      else open = true
    }
    this.drainedOpen = open
    // A call of the peer's ending tells this client nothing (no answer, no channel freed): while one
    // is served on a drained connection, look again later, or a peer that never closes it kept it.
    if (open) this.closeDrainedSoon()
  }

  /** A tunnel's answer came (or it failed): its channel counts as a stream's only while the answer streams. */
  private tunnelAnswered(request: Pending): void {
    const channel = request.tunnelChannel
    if (channel === undefined) return
    channel.tunnelOpening = false
    request.tunnelChannel = undefined
  }

  /** A request's deadline passed while it waited (out of the queue already; nothing of it was sent). */
  private expired(request: Pending): void {
    if (this.pool.connections.some((p) => !p.draining)) {
      const message = `no channel to ${this.address} free within ${request.timeoutMs} ms (all busy at the client's limit; nothing sent)`
      return request.callback(new RequestTimeout({ message, timeoutMs: request.timeoutMs }), undefined)
    }
    const waited = `no connection to ${this.address} within ${request.timeoutMs} ms`
    const last = this.lastConnectError
    request.callback(
      last === undefined
        ? new ConnectionClosed({ message: waited, sent: false })
        : new ConnectFailed({ message: `${waited}; last attempt: ${last.message}`, address: this.address }),
      undefined
    )
  }

  /** Moves waiting requests, then waiting tunnels, onto free channels. */
  private drainQueue(): void {
    while (this.queue.size > 0) {
      const picked = this.pool.pick(false)
      if (picked === undefined) break
      this.dispatch(picked[0], picked[1], this.queue.shift()!)
    }
    let refused = false
    while (this.tunnelQueue.size > 0) {
      const picked = this.pool.pick(true)
      if (picked !== undefined) this.dispatch(picked[0], picked[1], this.tunnelQueue.shift()!)
      // A tunnel first in line waits only for a place that will come (a channel opening, a connection
      // dialled). Admitted with none up (tunnelRoom), it may find fewer places than tunnels waiting:
      // told now, not at its deadline (the tunnels behind it may want a connection dialled).
      else if (!this.pool.tunnelRoom(this.tunnelQueue.size - 1)) {
        this.tunnelQueue.shift()!.callback(this.noStreamPlace(), undefined)
        refused = true
      } else break
    }
    if (refused && this.waiting > 0) this.grow()
  }

  private failQueued(error: ClientError): void {
    for (const waiter of this.modeWaiters.splice(0)) waiter(error, undefined)
    for (const request of this.queue.takeAll()) request.callback(error, undefined)
    for (const request of this.tunnelQueue.takeAll()) request.callback(error, undefined)
  }

  /** Opens channels (and connections) ahead of need, within the limits. */
  private grow(): void {
    if (this.closed) return
    // Per request with every channel busy: answer "nothing to open" without scanning the channels.
    if (this.waiting === 0 && this.modeWaiters.length === 0 && this.pool.atCapacity()) return
    // With nothing waiting, only idle channels ahead are wanted: stop at the first ones found
    // instead of counting every channel of every connection per request. Newest first: `pick`
    // takes the first free channel from the oldest, and channels opened ahead go at the end, so
    // idle ones gather at the end, behind the busy ones a scan from the front walks past (issue
    // 14: this scan was ~0.4 µs a request of sidecar A's profile at saturation, none newest first).
    const onlyAhead = this.waiting === 0 && this.modeWaiters.length === 0
    const connections = this.pool.connections
    let idle = 0
    let opening = 0
    let usable = 0
    for (let p = connections.length - 1; p >= 0; p--) {
      const pooled = connections[p]!
      if (pooled.draining) continue
      usable++
      opening += pooled.opening
      if (onlyAhead && idle + opening >= this.idleChannelsAhead) return
      const channels = pooled.channels
      for (let c = channels.length - 1; c >= 0; c--) {
        if (channels[c]!.outstanding !== 0) continue
        idle++
        if (onlyAhead && idle + opening >= this.idleChannelsAhead) return
      }
    }
    // A channel for each waiting request (none is written behind another), one for `mode` callers.
    const wanted = Math.max(this.idleChannelsAhead - idle - opening, this.waiting - opening, this.modeWaiters.length > 0 && opening === 0 ? 1 : 0)
    for (let i = 0; i < wanted; i++) {
      // Requests first (drainQueue serves them first); then a tunnel needs a connection with a stream
      // place: none live, another is dialled. Looked at each time: a channel opened takes one (drainQueue).
      let tunnel = this.queue.size === 0 && this.tunnelQueue.size > 0
      let pooled = this.pool.connections.find((p) => this.pool.hasRoom(p, tunnel))
      // Requests waiting with no room for theirs: a waiting tunnel still gets a channel of its stream
      // places, else under steady load it waited for the requests' queue to empty (or its deadline).
      if (pooled === undefined && !tunnel && this.tunnelQueue.size > 0) {
        tunnel = true
        pooled = this.pool.connections.find((p) => this.pool.hasRoom(p, true))
      }
      if (pooled !== undefined) this.openChannel(pooled, tunnel)
      else if (!this.dialing && usable < this.pool.maxConnections) {
        this.dialing = true
        this.supervisor.fork(this.redial())
        return
      } else return
    }
  }

  /**
   * A stream ended: if a mesh connection holds channels past its limit (opened for streams,
   * hasRoom), `trim` looks at them a little later. Not at once: a steady flow of streams reuses
   * them meanwhile, and only the ones still left over close.
   */
  private trimSoon(): void {
    if (this.trimTimer !== undefined || this.closed) return
    if (this.pool.hasLeftOver()) this.trimLater()
  }

  private trimLater(): void {
    this.trimTimer = setTimeout(() => {
      this.trimTimer = undefined
      this.trim()
    }, TRIM_AFTER_MS)
    this.trimTimer.unref()
  }

  /** Closes channels left over for streams (ConnectionPool.trim); while some are busy, looks again later. */
  private trim(): void {
    if (this.closed) return
    if (this.pool.trim()) this.trimLater()
  }

  /** `tunnel`: opened for the first tunnel waiting, which takes it (a mesh one, open at once) before any request. */
  private openChannel(pooled: Pooled, tunnel = false): void {
    const link = pooled.link
    if (link.mode === "mesh") {
      const channel = link.session.openChannel()
      pooled.channels.push(channel)
      // A stream place's channel: requests waiting would take it first (drainQueue), past their own.
      // Only where `pick` would send now: not on a closed or congested connection (drainQueue waits).
      const connection = link.session.connection
      if (tunnel && this.tunnelQueue.size > 0 && !connection.closed && !connection.writer.congested) this.dispatch(pooled, channel, this.tunnelQueue.shift()!)
      this.drainQueue()
      return
    }
    pooled.opening++
    link.session.openChannel(this.connectTimeoutMs, (error, channel) => {
      pooled.opening--
      if (channel !== undefined) {
        pooled.channels.push(channel)
        this.drainQueue()
        this.grow()
        return
      }
      this.log("channel-open-failed", { address: this.address, reason: error!.message })
      // Refused (not lost or late) beside channels it gave: asking again on this connection is
      // refused again, once per waiting request each time one is made. With none given, each
      // request still asks, and fails at once below rather than wait for a channel that never comes.
      if (error instanceof ChannelOpenFailed && pooled.channels.length > 0) pooled.plainCap = Math.min(pooled.plainCap, pooled.channels.length + pooled.opening)
      if (this.waiting > 0 && this.pool.connections.every((p) => p.channels.length === 0)) this.failQueued(error!)
    })
  }

  /**
   * Dials until a connection is up, waiting longer after each failure (on Effect's Clock, so
   * tests drive it). Gives up when nothing waits for a connection any more.
   */
  private redial(): Effect.Effect<void> {
    const client = this
    return Effect.gen(function*() {
      // Connections that ended unused since the last answer wait as failed dials do (churned).
      if (client.churned > 0) yield* Effect.sleep(backoffDelay(client.churned - 1, client.reconnect, Math.random()))
      for (let failures = client.churned; ; failures++) {
        client.attempting = true
        const error = yield* Effect.callback<ConnectFailed | undefined>((resume) =>
          dialOnce(client.dial, (e, link) => {
            if (link !== undefined) client.adopt(link)
            resume(Effect.succeed(e))
          })
        )
        client.attempting = false
        if (error === undefined || client.closed) break
        const admitted = client.connectFailedLines.admit(!client.connectFailing)
        client.connectFailing = true
        if (admitted !== undefined) client.log("connect-failed", { address: client.address, reason: error.message, failures: failures + 1, ...admitted })
        // A live connection serves the waiting requests. A draining one does not: it still counts in
        // the pool until its last answers are in, and the waiters must hear this failure now.
        if (client.pool.connections.some((p) => !p.draining)) break
        client.lastConnectError = error
        // `mode` callers want an answer now; requests wait for the next attempt while their deadline allows.
        for (const waiter of client.modeWaiters.splice(0)) waiter(error, undefined)
        if (client.options.waitForReconnect === false) client.failQueued(error)
        if (client.waiting === 0) break
        yield* Effect.sleep(backoffDelay(failures, client.reconnect, Math.random()))
      }
    }).pipe(
      Effect.ensuring(
        Effect.sync(() => {
          client.dialing = false
          client.attempting = false
        })
      )
    )
  }

  private adopt(link: Link): void {
    const pooled: Pooled = { link, channels: [], opening: 0, waitingWritable: false, draining: false, plainCap: Infinity, answered: false, ended: false, since: monotonicMs() }
    this.pool.connections.push(pooled)
    this.lastConnectError = undefined
    this.connectFailing = false
    for (const waiter of this.modeWaiters.splice(0)) waiter(undefined, link.mode)
    link.session.onClosed(() => this.drop(pooled))
    if (link.mode === "mesh") {
      link.session.onPeerDraining(() => {
        pooled.draining = true
        this.ended(pooled)
        this.drainedOpen = true
        this.closeDrainedSoon()
        // A `closing` go-away is one connection evicted at the server's cap, not the server
        // stopping: the balancer must not take a refused redial as a restart (and reset its stats).
        if (!link.session.peerClosing) this.options.onPeerState?.("go-away")
        this.grow()
      })
      if (this.options.keepAlive !== false) this.supervisor.fork(keepAlive(link.session, this.options.keepAlive ?? defaultKeepAlive, () => this.unresponsive()))
    }
    this.openChannel(pooled)
    this.grow()
  }

  /**
   * A connection was closed for an unanswered ping: the peer has stopped (a frozen process), so its
   * other connections are no better. Closed too, their requests move on now, and no request or
   * `mode()` call is answered by a connection that only looks alive.
   */
  private unresponsive(): void {
    for (const pooled of [...this.pool.connections]) pooled.link.session.connection.close("peer stopped answering on another connection", false)
    this.options.onPeerState?.("unresponsive")
  }

  /**
   * A mesh connection is drained or closed by its peer (once, whichever comes first): one that
   * answered nothing counts in `churned`, unless it lived the back-off's cap. Such a peer is
   * redialled no more often than a capped back-off would, and an honest one restarted (drained)
   * while this client carried no call to it is one: counted, each restart held the next dial longer.
   */
  private ended(pooled: Pooled): void {
    if (pooled.ended || pooled.link.mode !== "mesh") return
    pooled.ended = true
    if (pooled.answered || monotonicMs() - pooled.since >= this.reconnect.maxMs) this.churned = 0
    else this.churned++
  }

  private drop(pooled: Pooled): void {
    this.ended(pooled)
    const index = this.pool.connections.indexOf(pooled)
    if (index !== -1) this.pool.connections.splice(index, 1)
    if (this.waiting > 0) this.grow()
  }
}

/** A client whose connections close with the current Scope; its timers run on the caller's Clock. */
export const make = (options: ClientOptions): Effect.Effect<IipClient, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.map(Supervisor.current, (supervisor) => new IipClient({ ...options, supervisor: options.supervisor ?? supervisor })),
    (client) => Effect.sync(() => client.close())
  )
