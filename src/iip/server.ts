// The IIP server: a TCP listener, one ServerSession per connection, a Router of handlers, and
// the mapping of handler outcomes to the reference's answers (PROTOCOL.md §5): unknown path ->
// 102, a handler that throws or fails -> -1 "handler fail:<message>", a handler that returns
// nothing or dies (an Effect defect) -> 101. Its lifetime is a Scope: closing it closes every
// connection.
import { Cause, Data, Effect, Exit, type Scope } from "effect"
import * as net from "node:net"
import { type ConnectionLimits, Connection, defaultConnectionLimits } from "../mux/connection.ts"
import { type Failure, failure, type IncomingRequest, type Outcome, type Reply } from "../mux/request.ts"
import { defaultServerSessionLimits, ServerSession } from "../mux/serverSession.ts"
import { MeshErrorCode } from "../protocol/mesh.ts"
import { type Log, messageOf, stderrLog } from "./log.ts"
import { Router } from "./router.ts"

export type { Failure, IncomingRequest, Reply } from "../mux/request.ts"
export { failure, reply } from "../mux/request.ts"

export type Body = Uint8Array | string
/** What a handler gives back: a body, a body with metadata or streaming out (`reply`), or a typed `failure`. */
export type HandlerValue = Body | Reply | Failure
export type HandlerResult = HandlerValue | PromiseLike<HandlerValue> | Effect.Effect<HandlerValue, unknown>
export type Handler = (request: IncomingRequest) => HandlerResult

export class ListenFailed extends Data.TaggedError("ListenFailed")<{ readonly message: string }> {}

export interface ServerOptions {
  readonly host?: string
  /** 0 picks a free port; `address.port` tells which. */
  readonly port?: number
  /** Connections over this are accepted and closed at once, as the reference does. */
  readonly maxConnections?: number
  readonly maxChannelsPerConnection?: number
  /** Requests read but not answered per connection before reading pauses. */
  readonly maxQueuedRequestsPerConnection?: number
  readonly connectionLimits?: Partial<ConnectionLimits>
  readonly log?: Log
}

const toOutcome = (value: HandlerValue): Outcome => (typeof value === "string" ? Buffer.from(value, "utf8") : value)
const failed = (error: unknown): Failure => failure(MeshErrorCode.handlerFailed, messageOf(error), true)
const noResponse = failure(MeshErrorCode.noResponse, "handle no response", true)

export class IipServer {
  readonly router = new Router<Handler>()
  private readonly live = new Set<ServerSession>()
  private readonly listener: net.Server
  private readonly log: Log
  private readonly options: ServerOptions
  private readonly limits: ConnectionLimits

  constructor(options: ServerOptions) {
    this.options = options
    this.log = options.log ?? stderrLog
    this.limits = { ...defaultConnectionLimits, ...options.connectionLimits }
    this.listener = net.createServer({ noDelay: true }, (socket) => this.accept(socket))
  }

  /** Registers `handler` for requests whose parsed path is exactly `path`. */
  handle(path: string, handler: Handler): this {
    this.router.add(path, handler)
    return this
  }

  /** Registers `handler` for every path under `prefix` that has no exact route. */
  handlePrefix(prefix: string, handler: Handler): this {
    this.router.addPrefix(prefix, handler)
    return this
  }

  get address(): { readonly host: string; readonly port: number } {
    const address = this.listener.address() as net.AddressInfo
    return { host: address.address, port: address.port }
  }

  /** The live connections (for inspection: paused reading, writer congestion, channels). */
  get sessions(): ReadonlySet<ServerSession> {
    return this.live
  }

  get connectionCount(): number {
    return this.live.size
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (error: NodeJS.ErrnoException) => reject(new ListenFailed({ message: `cannot listen on ${this.options.host ?? "127.0.0.1"}:${this.options.port ?? 0}: ${error.code ?? error.message}` }))
      this.listener.once("error", onError)
      this.listener.listen(this.options.port ?? 0, this.options.host ?? "127.0.0.1", () => {
        this.listener.off("error", onError)
        resolve()
      })
    })
  }

  /** Stops listening and closes every connection at once. */
  close(): Promise<void> {
    for (const session of this.live) session.connection.close("server closed", false)
    return new Promise((resolve) => this.listener.close(() => resolve()))
  }

  private accept(socket: net.Socket): void {
    const max = this.options.maxConnections ?? 1000
    if (this.live.size >= max) {
      this.log("connection-refused", { remote: `${socket.remoteAddress}:${socket.remotePort}`, reason: `server connections limited (${max})` })
      socket.destroy()
      return
    }
    const connection = new Connection(socket, "server", this.limits, this.log)
    const session = new ServerSession(
      connection,
      this.dispatch,
      {
        maxChannels: this.options.maxChannelsPerConnection ?? defaultServerSessionLimits.maxChannels,
        maxQueuedRequests: this.options.maxQueuedRequestsPerConnection ?? defaultServerSessionLimits.maxQueuedRequests
      },
      (closed) => this.live.delete(closed)
    )
    this.live.add(session)
  }

  private readonly dispatch = (request: IncomingRequest): Outcome | PromiseLike<Outcome> => {
    const handler = this.router.lookup(request.path)
    if (handler === undefined) return failure(MeshErrorCode.notFound, `no handler for ${request.path}`, false)
    let result: HandlerResult
    try {
      result = handler(request)
    } catch (error) {
      return failed(error)
    }
    if (typeof result === "string" || result instanceof Uint8Array) return toOutcome(result)
    if (Effect.isEffect(result)) return this.runEffect(request, result)
    if ("_tag" in result) return result
    return Promise.resolve(result).then(toOutcome, failed)
  }

  private runEffect(request: IncomingRequest, effect: Effect.Effect<HandlerValue, unknown>): Promise<Outcome> {
    return Effect.runPromiseExit(effect, { signal: request.signal }).then((exit) => {
      if (Exit.isSuccess(exit)) return toOutcome(exit.value)
      const cause = exit.cause
      if (Cause.hasFails(cause)) {
        const found = Cause.findErrorOption(cause)
        return failed(found._tag === "Some" ? found.value : "failed")
      }
      if (Cause.hasDies(cause)) {
        this.log("handler-crashed", { path: request.path, remote: request.remoteAddress, cause: Cause.pretty(cause) })
      }
      return noResponse
    })
  }
}

/** Starts a server whose lifetime is the current Scope. */
export const make = (options: ServerOptions = {}): Effect.Effect<IipServer, ListenFailed, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        const server = new IipServer(options)
        await server.listen()
        return server
      },
      catch: (error) => (error instanceof ListenFailed ? error : new ListenFailed({ message: messageOf(error) }))
    }),
    (server) => Effect.promise(() => server.close())
  )
