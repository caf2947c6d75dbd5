// The IIP client for one server address: a pool of connections, each with channels opened ahead
// of need. Every connection starts with a hello (PROTOCOL.md §10): an iip-mesh server agrees to
// mesh mode (typed errors, metadata, deadlines, cancel, calls back to us), a plain IIP server
// answers with its unknown-path error and the connection stays plain. A request goes to the
// least-loaded channel that can take it; while none can, it waits in a bounded queue with its
// deadline running; a lost connection is redialled with exponential backoff and jitter, and
// requests that were never sent go out on the new one. Every request ends exactly once. The
// connection is TCP, TLS over TCP (`tls`: mutual TLS between sidecars, or the Go reference's TLS
// mode), or IIP over WebSocket (`transport: "websocket"`) where only HTTP passes.
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as net from "node:net"
import type { CancelSignal } from "../mux/cancellation.ts"
import { type ClientChannel, ClientSession } from "../mux/clientSession.ts"
import { type ByteStream, type ConnectionLimits, Connection, defaultConnectionLimits } from "../mux/connection.ts"
import { type ChannelOpenFailed, ConnectFailed, ConnectionClosed, Overloaded, RequestTimeout } from "../mux/errors.ts"
import { Cancelled, type MeshCallError, type MeshReply, MeshSession, type OwnChannel, RemoteError } from "../mux/meshSession.ts"
import { dialWebSocket } from "../mux/webSocketStream.ts"
import { compressionFor, offeredCodecs, pickCodec } from "../protocol/compression.ts"
import type { PacketEncodeError } from "../protocol/errors.ts"
import { agree, clampDeadlineMs, decodeHello, emptyMeta, encodeHello, type Hello, localHello, MeshErrorCode, MeshPath, type Meta } from "../protocol/mesh.ts"
import { type Handler, makeDispatch } from "./dispatch.ts"
import { defaultKeepAlive, keepAlive } from "./keepAlive.ts"
import { type Log, stderrLog } from "./log.ts"
import type { PeerOptions } from "./peerOptions.ts"
import { Router } from "./router.ts"
import { Supervisor } from "./supervisor.ts"
import { type ClientTlsOptions, decodeTlsRefusal, dialTls, type TlsRefusal } from "./tls.ts"

export type ClientError = ConnectionClosed | RequestTimeout | Overloaded | ChannelOpenFailed | ConnectFailed | PacketEncodeError | MeshCallError
export type ClientCallback = (error: ClientError | undefined, data: Buffer | undefined) => void

export interface ReconnectOptions {
  /** First redial delay; each failure doubles it, up to `maxMs`; each delay is jittered to 50-100%. */
  readonly baseMs: number
  readonly maxMs: number
}

export interface ClientOptions extends PeerOptions {
  readonly host: string
  readonly port: number
  /** "websocket": IIP over WebSocket binary messages (PROTOCOL.md §18) to ws://host:port + `webSocketPath`. Default "tcp". */
  readonly transport?: "tcp" | "websocket"
  /** Path of the server's WebSocket endpoint (default "/iip"). */
  readonly webSocketPath?: string
  readonly maxConnections?: number
  readonly maxChannelsPerConnection?: number
  /**
   * Channels a mesh connection may open past maxChannelsPerConnection, one for each that a stream
   * holds (a WebSocket, a long streamed answer: out of use for its whole life), so that streams
   * never take every channel from other requests; never more than half the channels the server
   * takes. Left over once the streams end, they close (`trim`). Default 0: streams count against
   * maxChannelsPerConnection like any request.
   */
  readonly streamChannelsPerConnection?: number
  /** Idle channels kept open ahead of need, so a burst finds channels ready. */
  readonly idleChannelsAhead?: number
  /** Requests in flight plus waiting; one more fails with Overloaded. */
  readonly maxPending?: number
  readonly connectTimeoutMs?: number
  /** Default per-request timeout; 0 means none. */
  readonly requestTimeoutMs?: number
  /** Offer mesh mode (default true). A plain IIP server declines and the connection stays plain. */
  readonly mesh?: boolean
  readonly reconnect?: ReconnectOptions
  /**
   * Requests queued while no connection is up wait for the next attempt, within their deadline
   * (default true: one server, worth waiting for). False fails them at once with the attempt's
   * error (nothing was sent), for a caller with other servers to go to.
   */
  readonly waitForReconnect?: boolean
  /**
   * Told when the server says go-away (a graceful stop), or when a connection to it is closed for
   * not answering a ping (a frozen peer): the balancer holds the endpoint out without failing it.
   */
  readonly onPeerState?: (state: "go-away" | "unresponsive") => void
  /**
   * Run every connection inside TLS (PROTOCOL.md §19): mutual TLS with a mesh peer, or the Go
   * reference's TLS mode. A refused handshake fails with ConnectFailed naming the reason (`tls`).
   * TCP transport only: over WebSocket it is not used.
   */
  readonly tls?: ClientTlsOptions
}

export interface RequestOptions {
  readonly timeoutMs?: number
  /** Sent with the request in mesh mode (trace context and the like); a plain peer cannot take it. */
  readonly meta?: Meta
  /** Aborting it cancels the request (at the peer too, in mesh mode): an AbortSignal or a Cancellation (src/mux/cancellation.ts). */
  readonly signal?: CancelSignal
  /**
   * Date.now() as the caller read it in the same synchronous step, `timeoutMs` counting from it:
   * spares `stream` and `streamWith` a clock read. Absent or 0: they read the clock.
   */
  readonly now?: number
}

/** Requests sent and not yet answered, one counter per client (each Pending holds it to count itself out). */
interface PendingCount {
  value: number
}

/**
 * One request on its way, kept whole so it can wait, or move to another connection. Its answer
 * goes to the caller through its methods, not through closures made per request (the sidecar's
 * outbound path and the RPC client make one request per call): `streamed` for a request whose
 * answer is handed over as it starts (mesh mode only), `callback` for a whole answer or a failure.
 * Either counts the request out of its client's pending requests, once, before the caller hears.
 */
class Pending {
  readonly path: string
  readonly data: Uint8Array | AsyncIterable<Uint8Array>
  readonly timeoutMs: number
  /** Date.now() after which the caller stops waiting; 0 for never. */
  readonly deadline: number
  readonly meta: Meta
  readonly signal: CancelSignal | undefined
  timer: NodeJS.Timeout | undefined = undefined
  /** The connection it was last sent on (mesh mode). */
  pooled: Pooled | undefined = undefined
  private readonly count: PendingCount
  /** Set for `stream`: the answer is handed over as it starts, its body streaming. */
  private readonly onStream: ((error: ClientError | undefined, reply: MeshReply | undefined) => void) | undefined
  /** Set for `send`: the answer whole. */
  private readonly onAnswer: ClientCallback | undefined

  constructor(
    count: PendingCount,
    path: string,
    data: Uint8Array | AsyncIterable<Uint8Array>,
    timeoutMs: number,
    deadline: number,
    meta: Meta,
    signal: CancelSignal | undefined,
    onStream: ((error: ClientError | undefined, reply: MeshReply | undefined) => void) | undefined,
    onAnswer: ClientCallback | undefined
  ) {
    this.count = count
    this.path = path
    this.data = data
    this.timeoutMs = timeoutMs
    this.deadline = deadline
    this.meta = meta
    this.signal = signal
    this.onStream = onStream
    this.onAnswer = onAnswer
  }

  /** The answer is wanted as it starts (a `stream` request). */
  get streams(): boolean {
    return this.onStream !== undefined
  }

  /** A mesh answer as it starts, or the failure. */
  streamed(error: ClientError | undefined, reply: MeshReply | undefined): void {
    if (this.onStream === undefined) return this.callback(error, reply?.data)
    this.count.value--
    this.onStream(error, reply)
  }

  /** The answer whole (a plain peer's), or the failure. */
  callback(error: ClientError | undefined, answer: Buffer | undefined): void {
    this.count.value--
    if (this.onStream !== undefined) this.onStream(error, answer === undefined ? undefined : { meta: emptyMeta, data: answer, stream: undefined })
    else this.onAnswer!(error, answer)
  }
}

type Link = { readonly mode: "plain"; readonly session: ClientSession } | { readonly mode: "mesh"; readonly session: MeshSession }

/** One pooled connection and the channels opened on it. */
interface Pooled {
  readonly link: Link
  readonly channels: Array<ClientChannel | OwnChannel>
  opening: number
  waitingWritable: boolean
  /** The server said go-away: no new requests here. */
  draining: boolean
}

const toBytes = (data: Uint8Array | string | undefined): Uint8Array =>
  data === undefined ? new Uint8Array(0) : typeof data === "string" ? Buffer.from(data, "utf8") : data

/** The redial delay after `failures` failed attempts. */
export const backoffDelay = (failures: number, options: ReconnectOptions, random: number): number => {
  const ceiling = Math.min(options.maxMs, options.baseMs * 2 ** Math.min(failures, 30))
  return Math.round(ceiling * (0.5 + random / 2))
}

/** How long after a stream ended channels left over for streams are looked at (`trimSoon`). */
const TRIM_AFTER_MS = 1000

export class IipClient {
  readonly router = new Router<Handler>()
  readonly address: string
  private readonly pool: Array<Pooled> = []
  private readonly queue: Array<Pending> = []
  /** Callers of `mode` waiting for a connection. */
  private readonly modeWaiters: Array<(error: ClientError | undefined, mode: "mesh" | "plain" | undefined) => void> = []
  private dialing = false
  /** A connection attempt is under way (not the wait between attempts). */
  private attempting = false
  /** Why the last connection attempt failed, for requests that time out waiting for one. */
  private lastConnectError: ConnectFailed | undefined
  /** Requests sent and not yet answered. */
  private readonly pending: PendingCount = { value: 0 }
  private closed = false
  private readonly maxConnections: number
  private readonly maxChannelsPerConnection: number
  private readonly streamChannelsPerConnection: number
  private readonly idleChannelsAhead: number
  private readonly maxPending: number
  private readonly connectTimeoutMs: number
  private readonly requestTimeoutMs: number
  private readonly limits: ConnectionLimits
  private readonly reconnect: ReconnectOptions
  private readonly log: Log
  private readonly options: ClientOptions
  private readonly supervisor: Supervisor
  private readonly hello: Hello
  private readonly dispatchReverse
  /** Set while channels opened for streams are left over and busy: `trim` looks again when it fires. */
  private trimTimer: NodeJS.Timeout | undefined = undefined

  constructor(options: ClientOptions) {
    this.options = options
    this.address = options.transport === "websocket" ? `ws://${options.host}:${options.port}${options.webSocketPath ?? "/iip"}` : `${options.host}:${options.port}`
    this.maxConnections = Math.max(1, options.maxConnections ?? 2)
    this.maxChannelsPerConnection = Math.max(1, options.maxChannelsPerConnection ?? 16)
    this.streamChannelsPerConnection = Math.max(0, options.streamChannelsPerConnection ?? 0)
    this.idleChannelsAhead = Math.max(1, options.idleChannelsAhead ?? 1)
    this.maxPending = options.maxPending ?? 10_000
    this.connectTimeoutMs = options.connectTimeoutMs ?? 3000
    this.requestTimeoutMs = options.requestTimeoutMs ?? 5000
    this.limits = { ...defaultConnectionLimits, ...options.connectionLimits }
    this.reconnect = options.reconnect ?? { baseMs: 100, maxMs: 5000 }
    this.log = options.log ?? stderrLog
    this.supervisor = options.supervisor ?? new Supervisor()
    this.dispatchReverse = makeDispatch(this.router, this.log)
    this.hello = localHello({ node: options.node, maxMetaBytes: options.maxMetaBytes, compression: offeredCodecs(options.compression) })
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
    for (const pooled of this.pool) {
      channels += pooled.channels.length
      if (pooled.link.mode === "mesh") mesh++
    }
    return { connections: this.pool.length, mesh, channels, pending: this.pending.value, queued: this.queue.length }
  }

  /** The live plain-IIP connections of the pool (for inspection: writer congestion, channels). */
  get sessions(): ReadonlyArray<ClientSession> {
    return this.pool.flatMap((pooled) => (pooled.link.mode === "plain" ? [pooled.link.session] : []))
  }

  /** The live mesh connections of the pool. */
  get meshSessions(): ReadonlyArray<MeshSession> {
    return this.pool.flatMap((pooled) => (pooled.link.mode === "mesh" ? [pooled.link.session] : []))
  }

  /** Sends one request; `callback` is called exactly once. The core of `call` and `request`. */
  send(path: string, data: Uint8Array, options: RequestOptions, callback: ClientCallback): void {
    if (this.closed) return callback(new ConnectionClosed({ message: "client is closed", sent: false }), undefined)
    if (this.pending.value >= this.maxPending) {
      return callback(new Overloaded({ message: `${this.pending.value} requests pending to ${this.address}`, limit: "maxPending" }), undefined)
    }
    this.pending.value++
    const timeoutMs = clampDeadlineMs(options.timeoutMs ?? this.requestTimeoutMs)
    // One clock read per request: sent at once, its remaining time is its whole timeout.
    const now = timeoutMs > 0 ? Date.now() : 0
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
    const timeoutMs = clampDeadlineMs(options.timeoutMs ?? 0)
    this.pending.value++
    // One clock read per request (none when the caller gave it): its deadline, and its remaining time when sent at once.
    const now = timeoutMs > 0 ? (options.now || Date.now()) : 0
    this.route(new Pending(this.pending, path, body, timeoutMs, timeoutMs > 0 ? now + timeoutMs : 0, options.meta ?? emptyMeta, options.signal, onReply, undefined), now)
  }

  /** The mode of a live connection, if there is one (no waiting, no dialing). */
  get currentMode(): "mesh" | "plain" | undefined {
    for (const pooled of this.pool) if (!pooled.draining) return pooled.link.mode
    return undefined
  }

  /**
   * Connects if there is no connection yet and tells whether the server speaks mesh mode or plain
   * IIP. Fails with ConnectFailed when no connection is up within the connect timeout, or within
   * `timeoutMs` if that is shorter: nothing was sent, so the caller can go elsewhere.
   */
  mode(timeoutMs = this.connectTimeoutMs): Promise<"mesh" | "plain"> {
    const live = this.pool.find((p) => !p.draining)
    if (live !== undefined) return Promise.resolve(live.link.mode)
    if (this.closed) return Promise.reject(new ConnectionClosed({ message: "client is closed", sent: false }))
    // Between failed attempts the answer is known: do not make the caller wait for the next one.
    // During an attempt it is not (on a lossy network one can take seconds and then succeed).
    if (this.dialing && !this.attempting && this.lastConnectError !== undefined) return Promise.reject(this.lastConnectError)
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined
      const waiter = (error: ClientError | undefined, mode: "mesh" | "plain" | undefined) => {
        clearTimeout(timer)
        if (error === undefined) resolve(mode!)
        else reject(error)
      }
      this.modeWaiters.push(waiter)
      const waitMs = Math.max(1, Math.min(timeoutMs, this.connectTimeoutMs))
      timer = setTimeout(() => {
        const index = this.modeWaiters.indexOf(waiter)
        if (index !== -1) this.modeWaiters.splice(index, 1)
        reject(new ConnectFailed({ message: `no connection to ${this.address} within ${waitMs} ms`, address: this.address }))
      }, waitMs)
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
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new RequestTimeout({ message: `no answer to a health check within ${timeoutMs} ms`, timeoutMs })), timeoutMs)
      const settle = (error: unknown) => {
        clearTimeout(timer)
        if (error === undefined) resolve(performance.now() - started)
        else reject(error)
      }
      this.mode().then(() => {
        const live = this.pool.find((p) => !p.draining)
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
    for (const pooled of this.pool) {
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
    this.supervisor.interruptAll()
    this.failQueued(new ConnectionClosed({ message: "client is closed", sent: false }))
    for (const pooled of this.pool.splice(0)) pooled.link.session.connection.close("client closed", false)
  }

  /** `now`: Date.now() when the request was made (0: read the clock when it is dispatched). */
  private route(request: Pending, now = 0): void {
    const picked = this.pick()
    if (picked !== undefined) this.dispatch(picked[0], picked[1], request, now)
    else this.enqueue(request)
    this.grow()
  }

  private dispatch(pooled: Pooled, channel: ClientChannel | OwnChannel, request: Pending, now = 0): void {
    const remaining = request.deadline === 0 ? 0 : Math.max(1, request.deadline - (now === 0 ? Date.now() : now))
    try {
      if (pooled.link.mode === "plain") {
        if (!(request.data instanceof Uint8Array)) {
          return request.callback(new ConnectionClosed({ message: `${this.address} speaks plain IIP: streaming needs mesh mode`, sent: false }), undefined)
        }
        this.dispatchPlain(pooled.link.session, channel as ClientChannel, request.data, request, remaining)
        return
      }
      request.pooled = pooled
      pooled.link.session.send(channel as OwnChannel, request.path, request.data, remaining, request.meta, request.signal, request.streams, this.onMeshAnswer, request, request.deadline)
    } catch (error) {
      request.callback(error as Overloaded | PacketEncodeError, undefined)
    }
  }

  /** A mesh call's answer, for the request it was sent for (the call's context): one function for all calls. */
  private readonly onMeshAnswer = (error: MeshCallError | undefined, reply: MeshReply | undefined, context: unknown): void => {
    const request = context as Pending
    if (error instanceof RemoteError && error.code === MeshErrorCode.draining && !error.processed && !this.closed) {
      // The server is stopping and never ran it: move it to another live connection if there
      // is one; otherwise hand the refusal back, so the caller can go to another server now.
      request.pooled!.draining = true
      this.options.onPeerState?.("go-away")
      if (this.pool.some((p) => !p.draining)) return this.route(request)
    }
    request.streamed(error, reply)
  }

  /** Plain IIP cannot cancel: an aborted request fails here at once and its late answer is consumed. */
  private dispatchPlain(session: ClientSession, channel: ClientChannel, data: Uint8Array, request: Pending, timeoutMs: number): void {
    const signal = request.signal
    if (signal === undefined) return session.request(channel, request.path, data, timeoutMs, (error, answer) => request.callback(error, answer))
    let settled = false
    const settle: ClientCallback = (error, answer) => {
      if (settled) return
      settled = true
      signal.removeEventListener("abort", onAbort)
      request.callback(error, answer)
    }
    const onAbort = () => settle(new Cancelled({ message: "request cancelled by the caller" }), undefined)
    signal.addEventListener("abort", onAbort)
    session.request(channel, request.path, data, timeoutMs, settle)
    if (signal.aborted) onAbort()
  }

  /** The open channel with the fewest outstanding requests on a connection that can take one. */
  private pick(): readonly [Pooled, ClientChannel | OwnChannel] | undefined {
    let best: ClientChannel | OwnChannel | undefined
    let bestOutstanding = 0
    let bestPooled: Pooled | undefined
    for (let p = 0; p < this.pool.length; p++) {
      const pooled = this.pool[p]!
      if (pooled.draining) continue
      if (pooled.link.session.connection.writer.congested) {
        this.waitWritable(pooled)
        continue
      }
      const channels = pooled.channels
      for (let c = 0; c < channels.length; c++) {
        const channel = channels[c]!
        // The load first: at saturation every channel is busy and most lose on it alone.
        const outstanding = channel.outstanding
        if (best !== undefined && outstanding >= bestOutstanding) continue
        // A channel busy with a stream (its request body going out, or its answer coming in and
        // perhaps not read yet) must not hold up a new request: skip it, `grow` opens another.
        if (channel.streaming) continue
        if (outstanding === 0) return [pooled, channel]
        best = channel
        bestOutstanding = outstanding
        bestPooled = pooled
      }
    }
    return best === undefined ? undefined : [bestPooled!, best]
  }

  private enqueue(request: Pending): void {
    if (request.deadline > 0) {
      request.timer = setTimeout(() => {
        const index = this.queue.indexOf(request)
        if (index === -1) return
        this.queue.splice(index, 1)
        const waited = `no connection to ${this.address} within ${request.timeoutMs} ms`
        const last = this.lastConnectError
        request.callback(
          last === undefined
            ? new ConnectionClosed({ message: waited, sent: false })
            : new ConnectFailed({ message: `${waited}; last attempt: ${last.message}`, address: this.address }),
          undefined
        )
      }, Math.max(1, request.deadline - Date.now()))
    }
    this.queue.push(request)
  }

  /** Moves waiting requests onto channels that can take them. */
  private drainQueue(): void {
    while (this.queue.length > 0) {
      const picked = this.pick()
      if (picked === undefined) return
      const request = this.queue.shift()!
      if (request.timer !== undefined) clearTimeout(request.timer)
      this.dispatch(picked[0], picked[1], request)
    }
  }

  private failQueued(error: ClientError): void {
    for (const waiter of this.modeWaiters.splice(0)) waiter(error, undefined)
    for (const request of this.queue.splice(0)) {
      if (request.timer !== undefined) clearTimeout(request.timer)
      request.callback(error, undefined)
    }
  }

  private waitWritable(pooled: Pooled): void {
    if (pooled.waitingWritable) return
    pooled.waitingWritable = true
    pooled.link.session.connection.writer.whenWritable(() => {
      pooled.waitingWritable = false
      this.drainQueue()
    })
  }

  /** Opens channels (and connections) ahead of need, within the limits. */
  private grow(): void {
    if (this.closed) return
    // Per request with every channel busy: answer "nothing to open" without scanning the channels.
    if (this.queue.length === 0 && this.modeWaiters.length === 0 && this.atCapacity()) return
    let idle = 0
    let opening = 0
    let usable = 0
    for (const pooled of this.pool) {
      if (pooled.draining) continue
      usable++
      opening += pooled.opening
      for (const channel of pooled.channels) if (channel.outstanding === 0) idle++
    }
    const waiting = this.queue.length > 0 || this.modeWaiters.length > 0
    const wanted = Math.max(this.idleChannelsAhead - idle - opening, waiting && opening === 0 ? 1 : 0)
    for (let i = 0; i < wanted; i++) {
      const pooled = this.pool.find((p) => this.hasRoom(p))
      if (pooled !== undefined) this.openChannel(pooled)
      else if (!this.dialing && usable < this.maxConnections) {
        this.dialing = true
        this.supervisor.fork(this.redial())
        return
      } else return
    }
  }

  /**
   * Channels this side may open on a connection: its own setting, and in mesh mode no more than the
   * server takes (§10), nor than it took when it last refused one (§11 `refuse`).
   */
  private channelLimit(pooled: Pooled): number {
    const link = pooled.link
    return link.mode === "mesh" ? Math.min(this.maxChannelsPerConnection, link.session.agreed.maxChannels, link.session.channelCap) : this.maxChannelsPerConnection
  }

  /** The server refused `channel` (§11 `refuse`): no new request goes on it; its session closes it once its calls are answered. */
  private dropRefused(channel: OwnChannel): void {
    for (const pooled of this.pool) {
      const index = pooled.channels.indexOf(channel)
      if (index !== -1) pooled.channels.splice(index, 1)
    }
  }

  /**
   * Whether a connection may open another channel. A channel a stream holds is out of use for its
   * whole life, and `pick` skips it: past its own limit, a mesh connection opens one more channel
   * for each such channel (streamChannelsPerConnection of them at most), up to half what the
   * server takes, so streams do not leave other requests without a channel (the sidecar: 40
   * WebSockets took all 2 x 16, and every later request waited for its deadline), nor pass the
   * server's request budget per connection (which pauses reading from the whole connection).
   */
  private hasRoom(pooled: Pooled): boolean {
    if (pooled.draining) return false
    const open = pooled.channels.length + pooled.opening
    const limit = this.channelLimit(pooled)
    if (open < limit) return true
    // A server that refused a channel has none to spare for streams either.
    if (this.streamChannelsPerConnection === 0 || pooled.link.mode !== "mesh" || pooled.link.session.channelCap !== Infinity) return false
    if (open >= Math.min(limit + this.streamChannelsPerConnection, pooled.link.session.agreed.maxChannels / 2)) return false
    let streaming = 0
    for (const channel of pooled.channels) if (channel.streaming) streaming++
    return open - streaming < limit
  }

  /**
   * A stream ended: if a mesh connection holds channels past its limit (opened for streams,
   * hasRoom), `trim` looks at them a little later. Not at once: a steady flow of streams reuses
   * them meanwhile, and only the ones still left over close.
   */
  private trimSoon(): void {
    if (this.trimTimer !== undefined || this.closed) return
    for (const pooled of this.pool) {
      if (pooled.link.mode === "mesh" && pooled.link.session.closesChannels && pooled.channels.length > this.channelLimit(pooled)) return this.trimLater()
    }
  }

  private trimLater(): void {
    this.trimTimer = setTimeout(() => {
      this.trimTimer = undefined
      this.trim()
    }, TRIM_AFTER_MS)
    this.trimTimer.unref()
  }

  /**
   * Closes idle channels that a mesh connection opened past its limit for streams and that fewer
   * streams hold now: after a burst of WebSockets they would otherwise stay open for the
   * connection's life, here and at the server (whose channel budget they hold). What `hasRoom`
   * allows stays: one channel past the limit per channel a stream holds. While some left over are
   * busy (a request on them), it looks again later; streams still open wait for their end. Needs a
   * server that closes channels (§11 `close`); with one that does not, they stay, as before.
   */
  private trim(): void {
    if (this.closed) return
    let leftOver = false
    for (const pooled of this.pool) {
      const link = pooled.link
      if (link.mode !== "mesh" || !link.session.closesChannels) continue
      const channels = pooled.channels as Array<OwnChannel>
      const limit = this.channelLimit(pooled)
      if (channels.length <= limit) continue
      let streaming = 0
      for (const channel of channels) if (channel.streaming) streaming++
      let over = channels.length - streaming - limit
      for (let i = channels.length - 1; i >= 0 && over > 0; i--) {
        const channel = channels[i]!
        if (channel.outstanding === 0 && !channel.streaming && link.session.closeChannel(channel)) {
          channels.splice(i, 1)
          over--
        }
      }
      if (over > 0) leftOver = true
    }
    if (leftOver) this.trimLater()
  }

  /**
   * Every connection at its own channel limit. Streams are not counted here: a request that finds
   * every channel streaming waits in the queue, and `grow` (which does look) opens one for it.
   */
  private atCapacity(): boolean {
    if (this.pool.length < this.maxConnections) return false
    for (const pooled of this.pool) {
      if (!pooled.draining && pooled.channels.length + pooled.opening < this.channelLimit(pooled)) return false
    }
    return true
  }

  private openChannel(pooled: Pooled): void {
    const link = pooled.link
    if (link.mode === "mesh") {
      pooled.channels.push(link.session.openChannel())
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
      if (this.queue.length > 0 && this.pool.every((p) => p.channels.length === 0)) this.failQueued(error!)
    })
  }

  /**
   * Dials until a connection is up, waiting longer after each failure (on Effect's Clock, so
   * tests drive it). Gives up when nothing waits for a connection any more.
   */
  private redial(): Effect.Effect<void> {
    const client = this
    return Effect.gen(function*() {
      for (let failures = 0; ; failures++) {
        client.attempting = true
        const error = yield* Effect.callback<ConnectFailed | undefined>((resume) => client.dialOnce((e) => resume(Effect.succeed(e))))
        client.attempting = false
        if (error === undefined || client.closed) break
        client.log("connect-failed", { address: client.address, reason: error.message, failures: failures + 1 })
        // A live connection serves the waiting requests. A draining one does not: it still counts in
        // the pool until its last answers are in, and the waiters must hear this failure now.
        if (client.pool.some((p) => !p.draining)) break
        client.lastConnectError = error
        // `mode` callers want an answer now; requests wait for the next attempt while their deadline allows.
        for (const waiter of client.modeWaiters.splice(0)) waiter(error, undefined)
        if (client.options.waitForReconnect === false) client.failQueued(error)
        if (client.queue.length === 0) break
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

  /** One connection attempt, TLS handshake and hello included; `done` gets undefined on success. */
  private dialOnce(done: (error: ConnectFailed | undefined) => void): void {
    let finished = false
    let abandon = () => {}
    /** Over TLS: the refusal behind a connection that failed after its handshake (TLS 1.3: the server's verdict on our certificate comes then). */
    let refusedAfterHandshake: () => TlsRefusal | undefined = () => undefined
    const fail = (reason: string, refusal?: TlsRefusal) => {
      if (finished) return
      finished = true
      abandon()
      done(
        new ConnectFailed({
          message: `cannot connect to ${this.address}: ${refusal?.message ?? reason}`,
          address: this.address,
          refused: reason === "ECONNREFUSED",
          ...(refusal === undefined ? {} : { tls: refusal.reason })
        })
      )
    }
    const timer = setTimeout(() => fail(`no connection within ${this.connectTimeoutMs} ms`), this.connectTimeoutMs)
    // The stream is open: say hello, and adopt the connection in the mode the server answers with.
    const opened = (socket: ByteStream) => {
      if (this.closed) return fail("client closed")
      const connection = new Connection(socket, "client", this.limits, this.log)
      const plain = new ClientSession(connection)
      const adopt = (link: Link) => {
        clearTimeout(timer)
        finished = true
        this.adopt(link)
        done(undefined)
      }
      if (this.options.mesh === false) return adopt({ mode: "plain", session: plain })
      plain.request(plain.system, MeshPath.hello, encodeHello(this.hello, false), this.connectTimeoutMs, (error, data) => {
        if (error !== undefined) return fail(`no answer to hello: ${error.message}`, refusedAfterHandshake())
        const refusal = decodeTlsRefusal(data!)
        if (refusal !== undefined) {
          this.options.tls?.onRefused?.(refusal, undefined)
          return fail(refusal.message, refusal)
        }
        const theirs = decodeHello(data!)
        if (theirs === undefined) return adopt({ mode: "plain", session: plain })
        // The acceptor names the codec it picked from our offer (PROTOCOL.md §12.1).
        const codec = pickCodec(theirs.compression ?? [], this.hello.compression ?? [])
        const mesh = new MeshSession(connection, {
          isDialer: true,
          agreed: agree(this.hello, theirs),
          receiveWindow: this.hello.streamWindow,
          dispatch: this.dispatchReverse,
          maxMessageBytes: this.limits.maxMessageBytes,
          compression: compressionFor(codec, this.options.compression),
          log: this.log,
          // Requests queued behind streaming channels go as soon as one is free; channels opened
          // for streams and no longer needed close.
          onChannelFree: () => {
            this.drainQueue()
            this.trimSoon()
          },
          onChannelRefused: (channel) => this.dropRefused(channel)
        })
        adopt({ mode: "mesh", session: mesh })
      })
    }
    if (this.options.transport === "websocket") {
      abandon = dialWebSocket(this.address, (error, stream) => (error === undefined ? opened(stream!) : fail(error)))
      return
    }
    if (this.options.tls !== undefined) {
      const dial = dialTls(this.options.host, this.options.port, this.options.tls, opened, fail)
      abandon = dial.abandon
      refusedAfterHandshake = dial.refusedAfterHandshake
      return
    }
    const socket = net.connect({ host: this.options.host, port: this.options.port, noDelay: true })
    abandon = () => socket.destroy()
    socket.once("error", (error: NodeJS.ErrnoException) => fail(error.code ?? error.message))
    socket.once("connect", () => {
      socket.removeAllListeners("error")
      opened(socket)
    })
  }

  private adopt(link: Link): void {
    const pooled: Pooled = { link, channels: [], opening: 0, waitingWritable: false, draining: false }
    this.pool.push(pooled)
    this.lastConnectError = undefined
    for (const waiter of this.modeWaiters.splice(0)) waiter(undefined, link.mode)
    link.session.onClosed(() => this.drop(pooled))
    if (link.mode === "mesh") {
      link.session.onPeerDraining(() => {
        pooled.draining = true
        this.options.onPeerState?.("go-away")
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
    for (const pooled of [...this.pool]) pooled.link.session.connection.close("peer stopped answering on another connection", false)
    this.options.onPeerState?.("unresponsive")
  }

  private drop(pooled: Pooled): void {
    const index = this.pool.indexOf(pooled)
    if (index !== -1) this.pool.splice(index, 1)
    if (this.queue.length > 0) this.grow()
  }
}

/** A client whose connections close with the current Scope; its timers run on the caller's Clock. */
export const make = (options: ClientOptions): Effect.Effect<IipClient, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.map(Supervisor.current, (supervisor) => new IipClient({ ...options, supervisor: options.supervisor ?? supervisor })),
    (client) => Effect.sync(() => client.close())
  )
