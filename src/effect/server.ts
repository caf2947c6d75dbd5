// The IIP server as an Effect service. A route's handler is an Effect, `(request) => Effect<value,
// E, R>`, or a streaming one, `(request, body: Stream) => Stream<Uint8Array, E, R>`; its `R` is
// taken from the context of whoever registers it (the layer that adds the routes provides it).
// Each request runs in a fiber of the server's FiberSet, interrupted when the answer can no longer
// matter: the peer's cancel, the connection's close and the server's drain (all three abort the
// request's cancellation, src/mux/request.ts), or the request's deadline, which runs on the
// fiber's Clock (so TestClock drives it). Interruption runs the handler's finalizers. A typed
// failure answers `handler_failed` with the error's tag and message; a defect answers the same
// code and logs its cause; nothing escapes to crash the process and the server keeps serving.
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import type { Handler, HandlerValue } from "../iip/dispatch.ts"
import { checkServerOptions, type IncomingRequest, IipServer as CoreServer, type ListenFailed, make as makeCore, reply, type ServerOptions, failure } from "../iip/server.ts"
import { monotonicMs } from "../mux/clock.ts"
import { StreamFailed } from "../mux/streams.ts"
import { MeshErrorCode } from "../protocol/mesh.ts"
import { fromIncoming, toOutgoing } from "./streams.ts"
import { checkedConfig } from "./checkedConfig.ts"

export type EffectHandler<E, R> = (request: IncomingRequest) => Effect.Effect<HandlerValue, E, R>
export type StreamHandler<E, R> = (request: IncomingRequest, body: Stream.Stream<Uint8Array, StreamFailed>) => Stream.Stream<Uint8Array, E, R>

export type RunFork = (effect: Effect.Effect<HandlerValue>) => Fiber.Fiber<HandlerValue>

const messageOf = (error: unknown): string => {
  if (typeof error === "object" && error !== null) {
    const { _tag, message } = error as { _tag?: unknown; message?: unknown }
    const text = typeof message === "string" && message !== "" ? message : undefined
    if (typeof _tag === "string") return text === undefined ? _tag : `${_tag}: ${text}`
    if (text !== undefined) return text
  }
  return String(error)
}

/** A cause that is not an interruption as the failure the caller gets; a defect is logged. */
const answerOf = (request: IncomingRequest, cause: Cause.Cause<unknown>): Effect.Effect<HandlerValue> => {
  const error = Cause.findErrorOption(cause)
  if (error._tag === "Some") return Effect.succeed(failure(MeshErrorCode.handlerFailed, messageOf(error.value), true))
  return Effect.logError("iip handler defect", cause).pipe(
    Effect.annotateLogs({ path: request.path, remote: request.remoteAddress }),
    Effect.as(failure(MeshErrorCode.handlerFailed, `handler defect: ${messageOf(Cause.squash(cause))}`, true))
  )
}

/**
 * The request's deadline on the fiber's Clock: past it the handler is interrupted and the caller
 * told. The deadline is in monotonicMs() terms (src/mux/clock.ts), never compared with the Clock's
 * time: what is left of it becomes a duration, and only the duration runs on the Clock.
 */
const withDeadline = (request: IncomingRequest, effect: Effect.Effect<HandlerValue, unknown>): Effect.Effect<HandlerValue, unknown> => {
  const deadline = request.context.deadline
  if (deadline === 0) return effect
  const remaining = Math.max(0, deadline - monotonicMs())
  return Effect.timeoutOrElse(effect, {
    duration: Duration.millis(remaining),
    orElse: () => Effect.succeed(failure(MeshErrorCode.deadlineExceeded, `deadline of ${remaining} ms passed`, true))
  })
}

const interrupted = failure(MeshErrorCode.cancelled, "handler interrupted", true)

/** Runs one request's Effect in a supervised fiber; the promise settles with what to answer. */
export const supervise = (runFork: RunFork, request: IncomingRequest, effect: Effect.Effect<HandlerValue, unknown>): Promise<HandlerValue> =>
  new Promise((resolve) => {
    const cancel = request.context.cancel
    if (cancel.aborted) return resolve(interrupted)
    const fiber = runFork(withDeadline(request, effect).pipe(Effect.catchCause((cause) => answerOf(request, cause))))
    const interrupt = () => fiber.interruptUnsafe()
    cancel.addEventListener("abort", interrupt)
    fiber.addObserver((exit) => {
      cancel.removeEventListener("abort", interrupt)
      resolve(Exit.isSuccess(exit) ? exit.value : interrupted)
    })
  })

const bodyOf = (request: IncomingRequest): Stream.Stream<Uint8Array, StreamFailed> =>
  request.context.stream !== undefined
    ? fromIncoming(request.context.stream, (error) => (error instanceof StreamFailed ? error : new StreamFailed({ message: messageOf(error) })))
    : request.data.length === 0 ? Stream.empty : Stream.make(request.data)

export interface IipServerService {
  /** The plain server underneath (its router, hooks, statistics, sessions). */
  readonly core: CoreServer
  readonly address: { readonly host: string; readonly port: number }
  /** Serves `path` with an Effect per request; its requirements come from the caller's context. */
  readonly handle: <E, R>(path: string, handler: EffectHandler<E, R>) => Effect.Effect<void, never, R>
  /** Serves `path` with a Stream answer to a Stream body (mesh mode), both under the channel's window. */
  readonly handleStream: <E, R>(path: string, handler: StreamHandler<E, R>) => Effect.Effect<void, never, R>
}

const makeService = Effect.fnUntraced(function*(options: ServerOptions) {
  // Made before the server, so closed after it: the server's drain lets handlers finish first.
  const fibers = yield* FiberSet.make<HandlerValue>()
  const core = yield* makeCore(options)
  const register = <R>(path: string, make: (runFork: RunFork, context: Context.Context<R>) => Handler) =>
    Effect.gen(function*() {
      const runFork = yield* FiberSet.runtime(fibers)<R>()
      const context = yield* Effect.context<R>()
      core.handle(path, make(runFork as unknown as RunFork, context))
    })
  return IipServer.of({
    core,
    address: core.address,
    handle: <E, R>(path: string, handler: EffectHandler<E, R>) =>
      register<R>(path, (runFork) => (request) => supervise(runFork, request, Effect.suspend(() => handler(request)) as Effect.Effect<HandlerValue, E>)),
    handleStream: <E, R>(path: string, handler: StreamHandler<E, R>) =>
      register<R>(path, (_runFork, context) => (request) => reply(toOutgoing(handler(request, bodyOf(request)), context, request.context.cancel)))
  })
})

/** Settings of a server read from Config: `<prefix>_HOST`, `_PORT` (0 picks one), `_DRAIN_TIMEOUT` (a Duration), `_NODE`. */
export const serverConfig = (prefix = "IIP_SERVER"): Config.Config<ServerOptions> =>
  Config.all({
    host: Config.String(`${prefix}_HOST`).pipe(Config.withDefault("127.0.0.1")),
    port: Config.Int(`${prefix}_PORT`).pipe(Config.withDefault(0)),
    drainTimeout: Config.Duration(`${prefix}_DRAIN_TIMEOUT`).pipe(Config.withDefault(Duration.seconds(5))),
    node: Config.String(`${prefix}_NODE`).pipe(Config.withDefault("iip-mesh"))
  }).pipe(
    Config.map(({ drainTimeout, ...rest }): ServerOptions => ({ ...rest, drainTimeoutMs: Math.round(Duration.toMillis(drainTimeout)) })),
    (config) => checkedConfig(config, checkServerOptions, { drainTimeoutMs: `${prefix}_DRAIN_TIMEOUT` })
  )

export class IipServer extends Context.Service<IipServer, IipServerService>()("iip-mesh/IipServer") {
  /** A listening server; closing the layer drains it (in-flight handlers finish, then the rest are interrupted). */
  static readonly layer = (options: ServerOptions = {}): Layer.Layer<IipServer, ListenFailed> => Layer.effect(IipServer, makeService(options))
  /** The same, its settings read from Config (see `serverConfig`). */
  static readonly layerConfig = (config: Config.Config<ServerOptions> = serverConfig()): Layer.Layer<IipServer, ListenFailed | Config.ConfigError> =>
    Layer.effect(IipServer, Effect.flatMap(config, (options: ServerOptions) => makeService(options)))
  /** A layer that adds routes to the server in context; its requirements are the handlers' `R`. */
  static readonly routes = <E, R>(register: (server: IipServerService) => Effect.Effect<void, E, R>): Layer.Layer<never, E, R | IipServer> =>
    Layer.effectDiscard(Effect.flatMap(IipServer, register))
}
