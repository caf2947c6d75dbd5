// The load-balance client (iip-protocol.md §8): one IipClient per backend of a `host:port#weight`
// list (backendList.ts), a ServiceBalancer (src/balancer) that picks one for every call by the
// reference's methods (MethodRoundrobin, MethodRandom, MethodMinPending, MethodIpHash,
// MethodURIParam, over its weighted list) or any other picker by name, and a rule function in
// place of the reference's expression language. Backends come and go at run time.
//
//   call > calling hooks (global, then per path) > rule or picker > backend's IipClient > answer
//   > health fed back to the balancer (passive ejection instead of the reference's pause)
//
// Where the reference is broken, this differs: a failed request fails alone (the reference closes
// the whole shared connection on any error, failing every request pipelined on it); a request
// that never reached a backend (no connection, a draining or overloaded peer) goes to another one,
// within `maxTries`, the retry budget and the call's one deadline; removed backends finish what
// they carry, then close.
//
// `stream` is the same call with its answer streaming (mesh mode): it resolves as the answer
// starts, and the backend counts the call as pending (and is not closed if removed) until the
// answer's body is read to its end, fails, is left (`return`), or the call's signal aborts.
import * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Scope from "effect/Scope"
import { checkBalancerOptions, type EndpointView, type Lease, type PickerName, ServiceBalancer, type ServiceBalancerOptions } from "../balancer/serviceBalancer.ts"
import { connectFailedThrottle, IipClient, timeoutNotANumber } from "../iip/client.ts"
import { checkClientOptions, type ClientError, type ClientOptions } from "../iip/clientOptions.ts"
import { type Hook, Refused, runHooks } from "../iip/dispatch.ts"
import { messageOf } from "../iip/log.ts"
import { checkOptions, count, durationOrInfinityMs, type Limits } from "../iip/optionLimits.ts"
import { type CancelSignal, Cancellation } from "../mux/cancellation.ts"
import { ChannelOpenFailed, ConnectFailed, ConnectionClosed, Overloaded } from "../mux/errors.ts"
import { Cancelled } from "../mux/meshChannels.ts"
import { RemoteError } from "../mux/meshSession.ts"
import { MaxDeadlineMs, MeshErrorCode, type Meta } from "../protocol/mesh.ts"
import { parseQuery, parseRequestPath } from "../protocol/requestPath.ts"
import { type BackendEntry, type InvalidBackendList, parseBackend, parseBackendList } from "./backendList.ts"

/** No backend can take the call: none configured, all tried, or the rule chose one that is not there. */
export class NoBackend extends Data.TaggedError("NoBackend")<{ readonly message: string }> {}

export type LbCallError = ClientError | NoBackend | Refused

/** A call on its way through the calling hooks. */
export interface OutgoingCall {
  readonly path: string
  readonly data: Uint8Array
  /** Sent with the call in mesh mode; hooks may add to it (a token, trace context). */
  readonly meta: Map<string, string>
  readonly clientIp: string | undefined
}

/** A calling hook: `before` may answer (`Exit.succeed`) or refuse (`Exit.fail(new Refused(...))`) at once. */
export type CallHook = Hook<OutgoingCall, Exit.Exit<Buffer, LbCallError>>

/** What a rule sees of a call. */
export interface RuleContext {
  /** The parsed path (query removed, percent-decoded). */
  readonly path: string
  /** The path as given, query included. */
  readonly uri: string
  readonly query: ReadonlyMap<string, ReadonlyArray<string>>
  readonly clientIp: string | undefined
}

/** Chooses a backend by address (`host:port`), or undefined to leave it to the method. */
export type Rule = (call: RuleContext) => string | undefined

export interface LoadBalanceClientOptions {
  /** `host:port#weight,...` or entries already read. */
  readonly backends: string | ReadonlyArray<BackendEntry>
  /** Default MethodMinPending, the reference's default. */
  readonly method?: PickerName
  /** MethodURIParam: the query parameter hashed. */
  readonly paramKey?: string
  readonly rule?: Rule
  /** Default per-call timeout, covering every try (default 3000 ms). */
  readonly requestTimeoutMs?: number
  /** Tries of a call that never reached a backend (default 2; 1 turns retries off). */
  readonly maxTries?: number
  /** Whether a call's result shows its backend healthy (default: `backendHealthy`). */
  readonly healthy?: (error: ClientError | undefined, answer: Buffer | undefined) => boolean
  /** Options of each backend's IipClient (connections, channels, mesh, log ...). */
  readonly client?: Omit<ClientOptions, "host" | "port">
  /** Ejection, retry budget, pending limit and randomness of the balancer. */
  readonly balancer?: Omit<ServiceBalancerOptions, "picker" | "paramKey">
}

export interface LbCallOptions {
  /** Covers every try: absent, requestTimeoutMs; 0 or less, none; Infinity, 24 h; NaN is refused (PacketEncodeError). */
  readonly timeoutMs?: number
  /** MethodIpHash: the address hashed; also shown to rules and hooks. */
  readonly clientIp?: string
  readonly meta?: Meta
  /** Aborting it cancels the call (at the backend too, in mesh mode). */
  readonly signal?: CancelSignal
}

/** The answer of a streamed call: its metadata, and its body whole (`data`) or streaming (`stream`). */
export interface LbReply {
  readonly meta: Meta
  readonly data: Buffer
  readonly stream: AsyncIterable<Buffer> | undefined
}

/** How one try at one backend ends: an answer, or why not. */
type TryResult<A> = { readonly error: ClientError; readonly answer: undefined } | { readonly error: undefined; readonly answer: A }

export interface BackendStatus {
  readonly address: string
  readonly weight: number
  /** Calls in flight. */
  readonly pending: number
  readonly health: EndpointView["health"]
  readonly connections: number
  readonly mode: "mesh" | "plain" | "unconnected"
  readonly latencyMs: number
  readonly failures: number
  readonly ejections: number
}

interface Backend {
  readonly address: string
  readonly client: IipClient
  weight: number
  inFlight: number
  removed: boolean
}

interface Endpoint {
  readonly id: string
  readonly weight: number
}

/**
 * The default health rule: transport failures, timeouts and a peer that says it is overloaded,
 * draining or out of time count against a backend; answers of its handlers (errors included) and
 * the caller's own cancel do not.
 */
export const backendHealthy = (error: ClientError | undefined): boolean => {
  if (error === undefined || error._tag === "Cancelled" || error._tag === "PacketEncodeError") return true
  if (error instanceof RemoteError) {
    return error.code !== MeshErrorCode.deadlineExceeded && error.code !== MeshErrorCode.overloaded && error.code !== MeshErrorCode.draining
  }
  return false
}

/** A failure of a call that no backend processed, so another one may take it. */
const notProcessed = (error: LbCallError): boolean =>
  error instanceof ConnectFailed ||
  error instanceof Overloaded ||
  error instanceof ChannelOpenFailed ||
  (error instanceof ConnectionClosed && !error.sent) ||
  (error instanceof RemoteError && !error.processed && (error.code === MeshErrorCode.draining || error.code === MeshErrorCode.overloaded))

const hookFailed = (error: unknown): Exit.Exit<Buffer, LbCallError> =>
  Exit.fail(error instanceof Refused ? error : new Refused({ code: "hook_failed", message: messageOf(error) }))

const toBytes = (data: Uint8Array | string | undefined): Uint8Array =>
  data === undefined ? new Uint8Array(0) : typeof data === "string" ? Buffer.from(data, "utf8") : data

const remainingMs = (deadline: number): number => (Number.isFinite(deadline) ? Math.max(1, Math.round(deadline - performance.now())) : 0)

const isStreaming = (answer: unknown): boolean => !Buffer.isBuffer(answer) && (answer as LbReply).stream !== undefined
const answerBytes = (answer: unknown): Buffer => (Buffer.isBuffer(answer) ? answer : (answer as LbReply).data)

/**
 * A streamed answer's body that calls `end` once when it is over: read to its end (undefined), or
 * failed (the error), or left by its reader or cancelled by the caller (a Cancelled: not the
 * backend's fault).
 */
const trackedBody = (body: AsyncIterable<Buffer>, cancel: Cancellation, end: (error: unknown) => void): AsyncIterable<Buffer> => {
  let over = false
  const finish = (error: unknown) => {
    if (over) return
    over = true
    cancel.removeEventListener("abort", onAbort)
    end(error)
  }
  const onAbort = () => finish(new Cancelled({ message: "streamed answer cancelled by the caller" }))
  cancel.addEventListener("abort", onAbort)
  return {
    [Symbol.asyncIterator]() {
      const iterator = body[Symbol.asyncIterator]()
      return {
        next: () =>
          iterator.next().then(
            (result) => {
              if (result.done === true) finish(undefined)
              return result
            },
            (error: unknown) => {
              finish(error)
              throw error
            }
          ),
        return: (value?: unknown) => {
          // Left before its end: the backend is told to stop sending.
          if (!over) cancel.abort()
          return iterator.return?.(value) ?? Promise.resolve({ done: true as const, value: undefined })
        }
      }
    }
  }
}

/** Resolves once `client` has a connection, or with why not (ConnectFailed) within `timeoutMs`. */
const connected = (client: IipClient, timeoutMs: number): Promise<ClientError | undefined> =>
  client.currentMode !== undefined
    ? Promise.resolve(undefined)
    : client.mode(Number.isFinite(timeoutMs) ? Math.max(1, timeoutMs) : undefined).then(() => undefined, (error: ClientError) => error)

/** What each numeric option takes (optionLimits.ts); the backends' clients' and the balancer's are checked here too, before anything is made. */
const balancerClientLimits: Limits<LoadBalanceClientOptions> = { requestTimeoutMs: durationOrInfinityMs(0, MaxDeadlineMs), maxTries: count(1) }

/** Throws OptionInvalid (optionLimits.ts) for a numeric option out of range. */
const checkBalancerClientOptions = (options: LoadBalanceClientOptions): void => {
  checkOptions("LoadBalanceClient", balancerClientLimits, options)
  if (options.client !== undefined) checkClientOptions(options.client)
  if (options.balancer !== undefined) checkBalancerOptions(options.balancer)
}

export class LoadBalanceClient {
  private readonly backends = new Map<string, Backend>()
  private readonly balancer: ServiceBalancer<Endpoint>
  private readonly hooks: Array<CallHook> = []
  private readonly pathHooks = new Map<string, Array<CallHook>>()
  private readonly options: LoadBalanceClientOptions
  private readonly requestTimeoutMs: number
  private readonly maxTries: number
  /** connect-failed lines of all the backends' clients together (unless `client` gives its own throttle): backends failing for hours are redialled per call. */
  private readonly connectFailedLines = connectFailedThrottle(true)
  private closed = false

  /** Throws InvalidBackendList when the list has a bad entry, OptionInvalid for an option out of range. */
  constructor(options: LoadBalanceClientOptions) {
    checkBalancerClientOptions(options)
    this.options = options
    this.requestTimeoutMs = options.requestTimeoutMs ?? 3000
    this.maxTries = options.maxTries ?? 2
    this.balancer = new ServiceBalancer<Endpoint>({
      ...options.balancer,
      picker: options.method ?? "MethodMinPending",
      ...(options.paramKey === undefined ? {} : { paramKey: options.paramKey })
    })
    const entries = typeof options.backends === "string" ? parseBackendList(options.backends) : options.backends
    for (const entry of entries) this.backends.set(entry.address, this.connect(entry))
    this.rebalance()
  }

  /** Adds a calling hook for every call (outside the per-path hooks). */
  use(hook: CallHook): this {
    this.hooks.push(hook)
    return this
  }

  /** Adds a calling hook for calls whose parsed path is `path`. */
  useFor(path: string, hook: CallHook): this {
    const list = this.pathHooks.get(path)
    if (list === undefined) this.pathHooks.set(path, [hook])
    else list.push(hook)
    return this
  }

  /** Adds a backend (`host:port#weight` or an entry), or sets the weight of one already there. Throws InvalidBackendList. */
  addBackend(entry: string | BackendEntry): void {
    const parsed = typeof entry === "string" ? parseBackend(entry) : entry
    const known = this.backends.get(parsed.address)
    if (known !== undefined) known.weight = parsed.weight
    else this.backends.set(parsed.address, this.connect(parsed))
    this.rebalance()
  }

  /** Stops sending to `address` at once; its connections close when the calls it carries end. */
  removeBackend(address: string): boolean {
    const backend = this.backends.get(address)
    if (backend === undefined) return false
    this.backends.delete(address)
    this.rebalance()
    backend.removed = true
    if (backend.inFlight === 0) backend.client.close()
    return true
  }

  /** Every backend, in list order. */
  status(): Array<BackendStatus> {
    return this.balancer.view(performance.now()).map((view) => {
      const client = this.backends.get(view.address)!.client
      return {
        address: view.address,
        weight: view.weight,
        pending: view.pending,
        health: view.health,
        connections: client.stats.connections,
        mode: client.currentMode ?? "unconnected",
        latencyMs: view.latencyMs,
        failures: view.failures,
        ejections: view.ejections
      }
    })
  }

  /** One call: through the hooks, to the backend the rule or the method picks. */
  call(path: string, data?: Uint8Array | string, options: LbCallOptions = {}): Promise<Buffer> {
    const call: OutgoingCall = { path, data: toBytes(data), meta: new Map(options.meta ?? []), clientIp: options.clientIp }
    const hooks = this.hooksOf(path)
    const result = hooks.length === 0 ? this.send(call, options) : runHooks(hooks, call, (c) => this.send(c, options), hookFailed)
    return Promise.resolve(result).then((exit) => {
      if (Exit.isSuccess(exit)) return exit.value
      throw Cause.squash(exit.cause)
    })
  }

  /**
   * One call whose answer streams (mesh mode; a plain backend's answer comes whole): through the
   * hooks, which see the answer's start (its `data`, empty while the body streams), to the backend
   * picked as for `call`, moved to another one while it never reached one. Resolves as the answer
   * starts; read its `stream` to the end, or leave it (`return`), or abort `signal`.
   */
  stream(path: string, data?: Uint8Array | string, options: LbCallOptions = {}): Promise<LbReply> {
    const call: OutgoingCall = { path, data: toBytes(data), meta: new Map(options.meta ?? []), clientIp: options.clientIp }
    // Its own cancellation, so a hook that turns the answer down can stop a body already streaming.
    const cancel = new Cancellation()
    const caller = options.signal
    const onAbort = () => cancel.abort()
    if (caller?.aborted === true) cancel.abort()
    else caller?.addEventListener("abort", onAbort)
    const tryOnce = (backend: Backend, c: OutgoingCall, deadline: number, done: (ok: boolean) => void) => this.attemptStream(backend, c, deadline, cancel, done)
    const hooks = this.hooksOf(path)
    let started: LbReply | undefined
    const core = (c: OutgoingCall) =>
      this.send(c, options, tryOnce).then((exit): Exit.Exit<Buffer, LbCallError> => {
        if (Exit.isFailure(exit)) return exit as Exit.Exit<never, LbCallError>
        started = exit.value
        return Exit.succeed(started.data)
      })
    const result = hooks.length === 0 ? this.send(call, options, tryOnce) : runHooks(hooks, call, core, hookFailed)
    return Promise.resolve(result).then((exit: Exit.Exit<LbReply | Buffer, LbCallError>) => {
      caller?.removeEventListener("abort", onAbort)
      if (Exit.isFailure(exit)) {
        cancel.abort()
        throw Cause.squash(exit.cause)
      }
      const value = exit.value
      if (!Buffer.isBuffer(value)) return value
      if (started !== undefined && value === started.data) return started
      // A hook answered (or replaced the answer): any body the backend started is not wanted.
      cancel.abort()
      return { meta: new Map(), data: value, stream: undefined }
    })
  }

  /** Closes every backend's connections; calls in flight fail with ConnectionClosed. */
  close(): void {
    this.closed = true
    for (const backend of this.backends.values()) backend.client.close()
    this.backends.clear()
    this.rebalance()
  }

  private connect(entry: BackendEntry): Backend {
    const client = new IipClient({ connectFailedLines: this.connectFailedLines, ...this.options.client, host: entry.host, port: entry.port })
    return { address: entry.address, client, weight: entry.weight, inFlight: 0, removed: false }
  }

  private rebalance(): void {
    this.balancer.update([...this.backends.values()].map((b) => ({ id: b.address, weight: b.weight })))
  }

  private hooksOf(path: string): ReadonlyArray<CallHook> {
    if (this.pathHooks.size === 0) return this.hooks
    const own = this.pathHooks.get(parseRequestPath(path).path)
    return own === undefined ? this.hooks : [...this.hooks, ...own]
  }

  /** Picks and calls, moving a call no backend processed to another one while tries, budget and time allow. */
  private send(call: OutgoingCall, options: LbCallOptions): Promise<Exit.Exit<Buffer, LbCallError>>
  private send<A>(call: OutgoingCall, options: LbCallOptions, tryOnce: (backend: Backend, call: OutgoingCall, deadline: number, done: (ok: boolean) => void) => Promise<TryResult<A>>): Promise<Exit.Exit<A, LbCallError>>
  private async send(
    call: OutgoingCall,
    options: LbCallOptions,
    tryOnce: (backend: Backend, call: OutgoingCall, deadline: number, done: (ok: boolean) => void) => Promise<TryResult<unknown>> = (backend, c, deadline) => this.attempt(backend, c, deadline, options.signal)
  ): Promise<Exit.Exit<unknown, LbCallError>> {
    if (this.closed) return Exit.fail(new ConnectionClosed({ message: "the load-balance client is closed", sent: false }))
    const timeoutMs = options.timeoutMs ?? this.requestTimeoutMs
    // NaN (not equal to itself) is refused as the IIP client refuses it; Infinity is held to
    // MaxDeadlineMs as there: a deadline at Infinity would send every try without one.
    if (timeoutMs !== timeoutMs) return Exit.fail(timeoutNotANumber())
    const deadline = timeoutMs > 0 ? performance.now() + Math.min(timeoutMs, MaxDeadlineMs) : Number.POSITIVE_INFINITY
    const target = this.options.rule?.(this.ruleContext(call))
    const tried = new Set<string>()
    this.balancer.retryBudget.deposit(performance.now())
    let lastError: LbCallError | undefined
    for (let attempt = 1; ; attempt++) {
      const picked = this.pick(call, tried, target)
      if (!("lease" in picked)) return Exit.fail(lastError ?? picked)
      const { backend, lease } = picked
      tried.add(backend.address)
      backend.inFlight++
      const started = performance.now()
      let answeredAt = started
      // Called once the try is over: at its answer, or for a streamed answer at the body's end.
      const done = (ok: boolean, unreachable = false) => {
        if (--backend.inFlight === 0 && backend.removed) backend.client.close()
        // A refused connection takes the backend out at once (within the balancer's cap).
        lease.end(performance.now(), answeredAt - started, ok, unreachable)
      }
      const error = await connected(backend.client, deadline - started)
      const result = error === undefined ? await tryOnce(backend, call, deadline, (ok) => done(ok)) : { error, answer: undefined }
      const ended = (answeredAt = performance.now())
      if (result.error === undefined) {
        // A streamed answer's try ends with its body (tryOnce calls `done`); a whole one here.
        if (!isStreaming(result.answer)) done((this.options.healthy ?? backendHealthy)(undefined, answerBytes(result.answer)))
        return Exit.succeed(result.answer)
      }
      done((this.options.healthy ?? backendHealthy)(result.error, undefined), result.error instanceof ConnectFailed && result.error.refused === true)
      lastError = result.error
      const retry = notProcessed(result.error) && target === undefined && attempt < this.maxTries && ended < deadline
      if (!retry || !this.balancer.retryBudget.tryWithdraw(ended)) return Exit.fail(result.error)
    }
  }

  private attempt(backend: Backend, call: OutgoingCall, deadline: number, signal: CancelSignal | undefined): Promise<TryResult<Buffer>> {
    return new Promise((resolve) =>
      backend.client.send(call.path, call.data, { timeoutMs: remainingMs(deadline), meta: call.meta, ...(signal === undefined ? {} : { signal }) }, (error, answer) =>
        resolve(error === undefined ? { error, answer: answer! } : { error, answer: undefined }))
    )
  }

  /** One try of a streamed call; `done` is called once its body is over (at once for a whole answer: `send` does it). */
  private attemptStream(backend: Backend, call: OutgoingCall, deadline: number, cancel: Cancellation, done: (ok: boolean) => void): Promise<TryResult<LbReply>> {
    return backend.client.stream(call.path, call.data, { timeoutMs: remainingMs(deadline), meta: call.meta, signal: cancel }).then(
      (reply): TryResult<LbReply> => {
        if (reply.stream === undefined) return { error: undefined, answer: { meta: reply.meta, data: reply.data, stream: undefined } }
        const healthy = this.options.healthy ?? backendHealthy
        return { error: undefined, answer: { meta: reply.meta, data: reply.data, stream: trackedBody(reply.stream, cancel, (error) => done(healthy(error as ClientError | undefined, undefined))) } }
      },
      (error: ClientError) => ({ error, answer: undefined })
    )
  }

  private pick(call: OutgoingCall, tried: ReadonlySet<string>, target: string | undefined): { readonly backend: Backend; readonly lease: Lease<Endpoint> } | NoBackend | Overloaded {
    let exclude = tried
    if (target !== undefined) {
      if (!this.backends.has(target)) return new NoBackend({ message: `the rule chose ${target}, which is not a backend` })
      // The balancer picks among what is not excluded: leave it only the rule's choice, so the
      // call still counts as pending there and its result still feeds that backend's health.
      exclude = new Set([...this.backends.keys()].filter((address) => address !== target))
    }
    const now = performance.now()
    const picked = this.balancer.pick(now, { now, uri: call.path, ...(call.clientIp === undefined ? {} : { clientIp: call.clientIp }) }, exclude)
    if (picked._tag === "Picked") return { backend: this.backends.get(picked.lease.endpoint.id)!, lease: picked.lease }
    if (picked._tag === "Overloaded") return new Overloaded({ message: "every backend is at its limit of pending calls", limit: "maxPendingPerEndpoint" })
    if (this.backends.size === 0) return new NoBackend({ message: "there are no backends" })
    if (target !== undefined) return new NoBackend({ message: `the rule chose ${target}, which is ejected after failing` })
    return new NoBackend({ message: `no backend left to try (tried ${[...tried].join(", ")})` })
  }

  private ruleContext(call: OutgoingCall): RuleContext {
    const parsed = parseRequestPath(call.path)
    return { path: parsed.path, uri: call.path, query: parseQuery(parsed.rawQuery), clientIp: call.clientIp }
  }
}

/** A load-balance client that closes with the current Scope; an option out of range dies with OptionInvalid (optionLimits.ts). */
export const make = (options: LoadBalanceClientOptions): Effect.Effect<LoadBalanceClient, InvalidBackendList, Scope.Scope> =>
  Effect.acquireRelease(
    // Checked first so that only a bad backend list is this Effect's failure.
    Effect.andThen(Effect.sync(() => checkBalancerClientOptions(options)), Effect.try({ try: () => new LoadBalanceClient(options), catch: (error) => error as InvalidBackendList })),
    (client) => Effect.sync(() => client.close())
  )
