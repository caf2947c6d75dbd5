// The IIP client for one server address: a pool of connections, each with channels opened ahead
// of need (PROTOCOL.md §4.2). A request goes to the least-loaded channel that can take it; while
// none can (none open yet, or every connection's writer is congested) it waits in a bounded queue
// with its deadline running. Every request ends exactly once: an answer, RequestTimeout,
// ConnectionClosed (with whether it had been sent), ConnectFailed, Overloaded or PacketEncodeError.
import { Effect, type Scope } from "effect"
import * as net from "node:net"
import { type ConnectionLimits, Connection, defaultConnectionLimits } from "../mux/connection.ts"
import { type ClientChannel, ClientSession, type ResponseCallback } from "../mux/clientSession.ts"
import { type ChannelOpenFailed, ConnectFailed, ConnectionClosed, Overloaded, type RequestTimeout } from "../mux/errors.ts"
import type { PacketEncodeError } from "../protocol/errors.ts"
import { type Log, stderrLog } from "./log.ts"

export type ClientError = ConnectionClosed | RequestTimeout | Overloaded | ChannelOpenFailed | ConnectFailed | PacketEncodeError
export type ClientCallback = (error: ClientError | undefined, data: Buffer | undefined) => void

export interface ClientOptions {
  readonly host: string
  readonly port: number
  readonly maxConnections?: number
  readonly maxChannelsPerConnection?: number
  /** Idle channels kept open ahead of need, so a burst finds channels ready. */
  readonly idleChannelsAhead?: number
  /** Requests in flight plus waiting; one more fails with Overloaded. */
  readonly maxPending?: number
  readonly connectTimeoutMs?: number
  /** Default per-request timeout; 0 means none. */
  readonly requestTimeoutMs?: number
  readonly connectionLimits?: Partial<ConnectionLimits>
  readonly log?: Log
}

export interface RequestOptions {
  readonly timeoutMs?: number
}

interface Queued {
  readonly path: string
  readonly data: Uint8Array
  readonly deadline: number
  readonly callback: ClientCallback
  timer: NodeJS.Timeout | undefined
}

/** One pooled connection and the channels opened on it. */
interface Pooled {
  readonly session: ClientSession
  readonly channels: Array<ClientChannel>
  opening: number
  waitingWritable: boolean
}

const toBytes = (data: Uint8Array | string | undefined): Uint8Array =>
  data === undefined ? new Uint8Array(0) : typeof data === "string" ? Buffer.from(data, "utf8") : data

export class IipClient {
  private readonly pool: Array<Pooled> = []
  private readonly queue: Array<Queued> = []
  private dialing = 0
  private pending = 0
  private closed = false
  private readonly maxConnections: number
  private readonly maxChannelsPerConnection: number
  private readonly idleChannelsAhead: number
  private readonly maxPending: number
  private readonly connectTimeoutMs: number
  private readonly requestTimeoutMs: number
  private readonly limits: ConnectionLimits
  private readonly log: Log
  readonly address: string
  private readonly options: ClientOptions

  constructor(options: ClientOptions) {
    this.options = options
    this.address = `${options.host}:${options.port}`
    this.maxConnections = Math.max(1, options.maxConnections ?? 2)
    this.maxChannelsPerConnection = Math.max(1, options.maxChannelsPerConnection ?? 16)
    this.idleChannelsAhead = Math.max(1, options.idleChannelsAhead ?? 1)
    this.maxPending = options.maxPending ?? 10_000
    this.connectTimeoutMs = options.connectTimeoutMs ?? 3000
    this.requestTimeoutMs = options.requestTimeoutMs ?? 5000
    this.limits = { ...defaultConnectionLimits, ...options.connectionLimits }
    this.log = options.log ?? stderrLog
  }

  /** Connections, channels and requests right now. */
  get stats(): { readonly connections: number; readonly channels: number; readonly pending: number; readonly queued: number } {
    let channels = 0
    for (const pooled of this.pool) channels += pooled.channels.length
    return { connections: this.pool.length, channels, pending: this.pending, queued: this.queue.length }
  }

  /** The live connections of the pool (for inspection: writer congestion, channels). */
  get sessions(): ReadonlyArray<ClientSession> {
    return this.pool.map((pooled) => pooled.session)
  }

  /** Sends one request; `callback` is called exactly once. The core of `call` and `request`. */
  send(path: string, data: Uint8Array, timeoutMs: number, callback: ClientCallback): void {
    if (this.closed) return callback(new ConnectionClosed({ message: "client is closed", sent: false }), undefined)
    if (this.pending >= this.maxPending) {
      return callback(new Overloaded({ message: `${this.pending} requests pending to ${this.address}`, limit: "maxPending" }), undefined)
    }
    this.pending++
    const done: ClientCallback = (error, answer) => {
      this.pending--
      callback(error, answer)
    }
    const channel = this.pickChannel()
    if (channel !== undefined) this.dispatch(channel, path, data, timeoutMs, done)
    else this.enqueue(path, data, timeoutMs, done)
    this.grow()
  }

  /** Promise form of `send`. Empty data is sent as `{}`, as the reference does. */
  call(path: string, data?: Uint8Array | string, options?: RequestOptions): Promise<Buffer> {
    return new Promise((resolve, reject) =>
      this.send(path, toBytes(data), options?.timeoutMs ?? this.requestTimeoutMs, (error, answer) =>
        error === undefined ? resolve(answer!) : reject(error)
      )
    )
  }

  /** Effect form of `send`. Interrupting it abandons the answer; plain IIP cannot cancel a sent request. */
  request(path: string, data?: Uint8Array | string, options?: RequestOptions): Effect.Effect<Buffer, ClientError> {
    return Effect.callback<Buffer, ClientError>((resume) =>
      this.send(path, toBytes(data), options?.timeoutMs ?? this.requestTimeoutMs, (error, answer) =>
        resume(error === undefined ? Effect.succeed(answer!) : Effect.fail(error))
      )
    )
  }

  /** Closes every connection; outstanding requests fail with ConnectionClosed. */
  close(): void {
    if (this.closed) return
    this.closed = true
    this.failQueued(new ConnectionClosed({ message: "client is closed", sent: false }))
    for (const pooled of this.pool.splice(0)) pooled.session.connection.close("client closed", false)
  }

  private dispatch(channel: ClientChannel, path: string, data: Uint8Array, timeoutMs: number, done: ClientCallback): void {
    try {
      channel.session.request(channel, path, data, timeoutMs, done as ResponseCallback)
    } catch (error) {
      done(error as Overloaded | PacketEncodeError, undefined)
    }
  }

  /** The open channel with the fewest outstanding requests on a connection that is not congested. */
  private pickChannel(): ClientChannel | undefined {
    let best: ClientChannel | undefined
    for (let p = 0; p < this.pool.length; p++) {
      const pooled = this.pool[p]!
      if (pooled.session.connection.writer.congested) {
        this.waitWritable(pooled)
        continue
      }
      const channels = pooled.channels
      for (let c = 0; c < channels.length; c++) {
        const channel = channels[c]!
        if (best === undefined || channel.outstanding < best.outstanding) {
          best = channel
          if (channel.outstanding === 0) return best
        }
      }
    }
    return best
  }

  private enqueue(path: string, data: Uint8Array, timeoutMs: number, callback: ClientCallback): void {
    const entry: Queued = { path, data, deadline: timeoutMs > 0 ? Date.now() + timeoutMs : 0, callback, timer: undefined }
    if (timeoutMs > 0) {
      entry.timer = setTimeout(() => {
        const index = this.queue.indexOf(entry)
        if (index === -1) return
        this.queue.splice(index, 1)
        callback(new ConnectionClosed({ message: `no channel to ${this.address} became available within ${timeoutMs} ms`, sent: false }), undefined)
      }, timeoutMs)
    }
    this.queue.push(entry)
  }

  /** Moves waiting requests onto channels that can take them. */
  private drainQueue(): void {
    while (this.queue.length > 0) {
      const channel = this.pickChannel()
      if (channel === undefined) return
      const entry = this.queue.shift()!
      if (entry.timer !== undefined) clearTimeout(entry.timer)
      const remaining = entry.deadline === 0 ? 0 : Math.max(1, entry.deadline - Date.now())
      this.dispatch(channel, entry.path, entry.data, remaining, entry.callback)
    }
  }

  private failQueued(error: ClientError): void {
    for (const entry of this.queue.splice(0)) {
      if (entry.timer !== undefined) clearTimeout(entry.timer)
      entry.callback(error, undefined)
    }
  }

  private waitWritable(pooled: Pooled): void {
    if (pooled.waitingWritable) return
    pooled.waitingWritable = true
    pooled.session.connection.writer.whenWritable(() => {
      pooled.waitingWritable = false
      this.drainQueue()
    })
  }

  /** Opens channels (and connections) ahead of need, within the limits. */
  private grow(): void {
    if (this.closed) return
    let idle = 0
    let opening = 0
    for (const pooled of this.pool) {
      opening += pooled.opening
      for (const channel of pooled.channels) if (channel.outstanding === 0) idle++
    }
    const wanted = Math.max(this.idleChannelsAhead - idle - opening, this.queue.length > 0 && opening === 0 ? 1 : 0)
    for (let i = 0; i < wanted; i++) {
      const pooled = this.pool.find((p) => p.channels.length + p.opening < this.maxChannelsPerConnection)
      if (pooled !== undefined) this.openChannel(pooled)
      else if (this.pool.length + this.dialing < this.maxConnections) this.dial()
      else return
    }
  }

  private openChannel(pooled: Pooled): void {
    pooled.opening++
    pooled.session.openChannel(this.connectTimeoutMs, (error, channel) => {
      pooled.opening--
      if (channel !== undefined) {
        pooled.channels.push(channel)
        this.drainQueue()
        this.grow()
        return
      }
      this.log("channel-open-failed", { address: this.address, reason: error!.message })
      if (pooled.channels.length === 0 && this.queue.length > 0 && this.pool.every((p) => p.channels.length === 0)) {
        this.failQueued(error!)
      }
    })
  }

  private dial(): void {
    this.dialing++
    const socket = net.connect({ host: this.options.host, port: this.options.port, noDelay: true })
    const fail = (reason: string) => {
      socket.destroy()
      this.dialing--
      if (this.pool.length === 0 && this.dialing === 0) {
        this.failQueued(new ConnectFailed({ message: `cannot connect to ${this.address}: ${reason}`, address: this.address }))
      }
    }
    const timer = setTimeout(() => fail(`no connection within ${this.connectTimeoutMs} ms`), this.connectTimeoutMs)
    socket.once("error", (error: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      fail(error.code ?? error.message)
    })
    socket.once("connect", () => {
      clearTimeout(timer)
      socket.removeAllListeners("error")
      this.dialing--
      if (this.closed) return void socket.destroy()
      const session = new ClientSession(new Connection(socket, "client", this.limits, this.log))
      const pooled: Pooled = { session, channels: [], opening: 0, waitingWritable: false }
      this.pool.push(pooled)
      session.onClosed(() => this.drop(pooled))
      this.openChannel(pooled)
    })
  }

  private drop(pooled: Pooled): void {
    const index = this.pool.indexOf(pooled)
    if (index !== -1) this.pool.splice(index, 1)
    if (this.queue.length > 0) this.grow()
  }
}

/** A client whose connections close with the current Scope. */
export const make = (options: ClientOptions): Effect.Effect<IipClient, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => new IipClient(options)),
    (client) => Effect.sync(() => client.close())
  )
