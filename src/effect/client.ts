// The IIP client as an Effect service: `IipClient` (one server address) and `IipLoadBalancer`
// (the load-balance client over a backend list), each a Layer whose scope is the client's
// lifetime, built from options or from Config. Calls are Effects, streamed calls are Streams:
// the request body is pulled only as the server's window opens, the answer's body grants the
// server more only as the consumer pulls, and interrupting the consumer cancels the call at the
// server (mesh mode). A deadline is a Duration; it travels to the server, which stops the handler
// when it passes. Calls from the server are served by supervised Effect handlers as on the server
// (server.ts); its pushes come as a Stream. The hot path underneath is the plain client
// (src/iip/client.ts).
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import { IipClient as CoreClient, make as makeCore } from "../iip/client.ts"
import { checkClientOptions, type ClientError, type ClientOptions } from "../iip/clientOptions.ts"
import type { HandlerValue } from "../iip/dispatch.ts"
import { Cancellation } from "../mux/cancellation.ts"
import type { IncomingRequest } from "../mux/request.ts"
import { StreamFailed } from "../mux/streams.ts"
import type { Meta } from "../protocol/mesh.ts"
import type { InvalidBackendList } from "../toolkit/backendList.ts"
import { type LbCallError, type LoadBalanceClient as CoreLoadBalancer, type LoadBalanceClientOptions, make as makeLoadBalancer } from "../toolkit/loadBalanceClient.ts"
import { type EffectHandler, type RunFork, supervise } from "./server.ts"
import { fromIncoming, toOutgoing } from "./streams.ts"
import { checkedConfig } from "./checkedConfig.ts"

export interface CallOptions {
  /** How long the caller waits; the server stops the handler when it passes. Unset: the client's default (0: none). */
  readonly deadline?: Duration.Input
  /** Sent with the request in mesh mode (trace context and the like). */
  readonly meta?: Meta
}

/** What a streamed call can end in: the call's errors, or its body stream breaking. */
export type StreamError = ClientError | StreamFailed

const knownErrors = new Set(["ConnectionClosed", "RequestTimeout", "Overloaded", "ChannelOpenFailed", "ConnectFailed", "PacketEncodeError", "RemoteError", "Cancelled", "StreamFailed", "DecompressionFailed"])
/** An error out of the plain client or an IIP stream, typed: ours as they are, anything else a StreamFailed. */
export const asStreamError = (error: unknown): StreamError =>
  typeof error === "object" && error !== null && knownErrors.has((error as { _tag?: string })._tag ?? "")
    ? (error as StreamError)
    : new StreamFailed({ message: error instanceof Error ? error.message : String(error) })

const timeoutOf = (options: CallOptions | undefined): { timeoutMs?: number } =>
  options?.deadline === undefined ? {} : { timeoutMs: Math.max(0, Math.round(Duration.toMillis(options.deadline))) }

export interface IipClientService {
  /** The plain client underneath (stats, handlers for calls from the server, push). */
  readonly core: CoreClient
  /** One request, its answer whole. Interrupting it cancels it at the server. */
  readonly request: (path: string, body?: Uint8Array | string, options?: CallOptions) => Effect.Effect<Buffer, ClientError>
  /**
   * A request whose body and answer both stream (mesh mode). `body` (a Stream) is pulled only as the
   * server's window allows; the answer is pulled by the consumer, and the server sends only as
   * fast as it is consumed. Interrupting the consumer (or ending it early) cancels the call.
   */
  readonly stream: <E = never, R = never>(path: string, body: Stream.Stream<Uint8Array, E, R> | Uint8Array, options?: CallOptions) => Stream.Stream<Uint8Array, StreamError, R>
  /** Serves calls the server makes to this client on `path` (mesh mode), each in a supervised fiber as on the server. */
  readonly handle: <E, R>(path: string, handler: EffectHandler<E, R>) => Effect.Effect<void, never, R>
  /**
   * The server's pushes to `path` as a Stream, from when it is run. At most `bufferSize` (default
   * 256) wait for the consumer; past that new ones are dropped (a push has no answer to slow its sender).
   */
  readonly pushes: (path: string, bufferSize?: number) => Stream.Stream<IncomingRequest>
}

const noAnswer = new Uint8Array(0)

const service = (core: CoreClient, fibers: FiberSet.FiberSet<HandlerValue>): IipClientService => ({
  core,
  handle: <E, R>(path: string, handler: EffectHandler<E, R>) =>
    Effect.gen(function*() {
      const runFork = (yield* FiberSet.runtime(fibers)<R>()) as unknown as RunFork
      core.handle(path, (request) => supervise(runFork, request, Effect.suspend(() => handler(request)) as Effect.Effect<HandlerValue, E>))
    }),
  pushes: (path, bufferSize = 256) =>
    Stream.callback<IncomingRequest>(
      (queue) =>
        Effect.sync(() =>
          core.handle(path, (request) => {
            Queue.offerUnsafe(queue, request)
            return noAnswer
          })
        ),
      { bufferSize, strategy: "dropping" }
    ),
  request: (path, body, options) => core.request(path, body, { ...timeoutOf(options), ...(options?.meta === undefined ? {} : { meta: options.meta }) }),
  stream: <E = never, R = never>(path: string, body: Stream.Stream<Uint8Array, E, R> | Uint8Array, options?: CallOptions) =>
    Stream.unwrap(
      Effect.gen(function*() {
        const context = yield* Effect.context<R>()
        const cancel = new Cancellation()
        // Closing the answer's stream for any reason (end, failure, interruption) cancels the call;
        // after a clean end the call is over and the cancel is a no-op.
        yield* Effect.addFinalizer(() => Effect.sync(() => cancel.abort()))
        const reply = yield* Effect.tryPromise({
          try: () =>
            // A body in hand goes out whole (one packet when small); only a Stream streams.
            core.stream(path, body instanceof Uint8Array ? body : toOutgoing(body, context, cancel), {
              ...timeoutOf(options),
              ...(options?.meta === undefined ? {} : { meta: options.meta }),
              signal: cancel
            }),
          catch: asStreamError
        })
        return reply.stream === undefined ? Stream.make(reply.data) : fromIncoming(reply.stream, asStreamError)
      })
    )
})

const makeService = Effect.fnUntraced(function*(options: ClientOptions) {
  // Made before the client, so closed after it: handlers of the server's calls end with the connections.
  const fibers = yield* FiberSet.make<HandlerValue>()
  return service(yield* makeCore(options), fibers)
})

/** Settings of a client read from Config: `<prefix>_HOST`, `_PORT`, `_DEADLINE` (a Duration), `_MAX_CONNECTIONS`, `_NODE`. */
export const clientConfig = (prefix = "IIP_CLIENT"): Config.Config<ClientOptions> =>
  Config.all({
    host: Config.String(`${prefix}_HOST`).pipe(Config.withDefault("127.0.0.1")),
    port: Config.Port(`${prefix}_PORT`),
    deadline: Config.Duration(`${prefix}_DEADLINE`).pipe(Config.withDefault(Duration.seconds(5))),
    maxConnections: Config.Int(`${prefix}_MAX_CONNECTIONS`).pipe(Config.withDefault(2)),
    node: Config.String(`${prefix}_NODE`).pipe(Config.withDefault("iip-mesh"))
  }).pipe(
    Config.map(({ deadline, ...rest }): ClientOptions => ({ ...rest, requestTimeoutMs: Math.round(Duration.toMillis(deadline)) })),
    (config) => checkedConfig(config, checkClientOptions, { requestTimeoutMs: `${prefix}_DEADLINE`, maxConnections: `${prefix}_MAX_CONNECTIONS` })
  )

export class IipClient extends Context.Service<IipClient, IipClientService>()("iip-mesh/IipClient") {
  /** A client of one server; closed with the layer. */
  static readonly layer = (options: ClientOptions): Layer.Layer<IipClient> => Layer.effect(IipClient, makeService(options))
  /** The same, its settings read from Config (see `clientConfig`). */
  static readonly layerConfig = (config: Config.Config<ClientOptions> = clientConfig()): Layer.Layer<IipClient, Config.ConfigError> =>
    Layer.effect(IipClient, Effect.flatMap(config, (options: ClientOptions) => makeService(options)))
}

export interface IipLoadBalancerService {
  readonly core: CoreLoadBalancer
  /** One call to the backend the balancer picks; interrupting it cancels it at that backend. */
  readonly request: (path: string, body?: Uint8Array | string, options?: CallOptions) => Effect.Effect<Buffer, LbCallError>
  /**
   * One call whose answer streams from the backend the balancer picks (mesh mode), pulled by the
   * consumer under the channel's window; interrupting the consumer (or ending it early) cancels it.
   */
  readonly stream: (path: string, body?: Uint8Array | string, options?: CallOptions) => Stream.Stream<Uint8Array, StreamError | LbCallError>
}

const balancerService = (core: CoreLoadBalancer): IipLoadBalancerService => ({
  core,
  request: (path, body, options) =>
    Effect.tryPromise({
      try: (signal) => core.call(path, body, { ...timeoutOf(options), ...(options?.meta === undefined ? {} : { meta: options.meta }), signal }),
      catch: (error) => error as LbCallError
    }),
  stream: (path, body, options) =>
    Stream.unwrap(
      Effect.gen(function*() {
        const cancel = new Cancellation()
        yield* Effect.addFinalizer(() => Effect.sync(() => cancel.abort()))
        const reply = yield* Effect.tryPromise({
          try: () => core.stream(path, body, { ...timeoutOf(options), ...(options?.meta === undefined ? {} : { meta: options.meta }), signal: cancel }),
          catch: (error) => error as LbCallError
        })
        return reply.stream === undefined ? Stream.make(reply.data) : fromIncoming(reply.stream, asStreamError)
      })
    )
})

export class IipLoadBalancer extends Context.Service<IipLoadBalancer, IipLoadBalancerService>()("iip-mesh/IipLoadBalancer") {
  /** A load-balance client over `options.backends`; closed with the layer. */
  static readonly layer = (options: LoadBalanceClientOptions): Layer.Layer<IipLoadBalancer, InvalidBackendList> =>
    Layer.effect(IipLoadBalancer, Effect.map(makeLoadBalancer(options), balancerService))
}
