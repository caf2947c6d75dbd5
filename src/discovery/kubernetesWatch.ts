// One kind of Kubernetes object in one namespace, kept current: an informer of
// `@kubernetes/client-node` (a list, then a streamed watch) that is started again after it fails.
// The EndpointSlice source (kubernetesSource.ts) and the HTTPRoute watch (src/sidecar/
// kubernetesRoutes.ts) use it.
//
// Reconnecting: the informer itself re-opens a watch that the server closes (from the last
// resourceVersion; a 410 Gone makes it list again). When it gives up and reports an error (the
// API server unreachable, 5xx, 403), the informer is thrown away and a new one started — a fresh
// list and watch — after a backoff (retryMs doubling up to maxRetryMs; an informer that lived at
// least maxRetryMs before failing starts the series again). Changes are coalesced: a list of many
// objects, or a burst of watch events, calls `onChange` once, with every object the watch holds.
//
// Relists: after a 410 Gone the client lists again at once (its own delay, doubling, comes between
// that list and the next watch, and any event resets it), so a server answering every watch with
// 410 had 6 lists (of up to MaxListBytes) in 15 s, and one sending an event before each 410 one
// list a second. A relist here waits the same backoff as a restart (retryMs doubling up to
// maxRetryMs, said through `onFailed`), unless maxRetryMs passed since the last list without a 410:
// then it lists at once and the series starts again. Neither an event (the churning server sends
// one) nor one watch's life decides it: a proxy that cuts every watch after 10 s, in front of a
// healthy server, made each routine 410 (history compacted) wait longer, up to maxRetryMs, for good.
// A server that waits maxRetryMs after each list to answer 410 gets a list per maxRetryMs, as the
// backoff's longest delay allows.
//
// Spacing: the informer re-opens a watch the server ends at once, and after any event it does so
// without delay; a server (or proxy) that ends every watch after one event made 269 watches in 2 s.
// The informer's Watch opens at most one watch per MinWatchSpacingMs (a real API server keeps a
// watch open for minutes, so this costs nothing there).
//
// The list: kubernetesGet.ts (bounded in bytes and time, items without metadata left out).
//
// The stream: the client's own Watch reads lines with no bound (a line that never ends grew until
// the string limit threw, uncaught, after some 500 MB) and hands any JSON line to the informer,
// whose async handler rejects, unhandled, on an event without an object. The informer's Watch here
// reads the stream itself: a line over MaxWatchLineBytes closes the watch with WatchLineTooLong
// (the informer fails and is restarted after the backoff); a line that is not an event with an
// object (and metadata) is skipped, as the client skips what is not JSON. The objects an informer
// holds are at most MaxHeldBytes (in the bytes they came in): a watch bringing more closes with
// WatchHeldTooMuch, and the informer is restarted after the backoff. A watch that cannot be sent
// (a credential file unreadable) ends as a failed watch instead of throwing.
//
// Stopping: the Watch returns its AbortController as soon as the request is sent, so a stop at any
// point closes the watch; one whose informer was stopped during the spacing wait, or while its
// credentials were fetched, is not opened. A list in flight is closed by the stop too.
import { type KubeConfig, type KubernetesObject, ListWatch, Watch } from "@kubernetes/client-node"
import * as Data from "effect/Data"
import type http from "node:http"
import { setTimeout as sleep } from "node:timers/promises"
import { hasMetadata, listKubernetes, MaxListBytes, sendGet } from "./kubernetesGet.ts"

/** A watch answered 410 Gone again less than maxRetryMs after the last list: the informer lists again after a backoff. */
export class WatchGoneAgain extends Data.TaggedError("WatchGoneAgain")<{ readonly path: string; readonly message: string }> {}

/** A watch stream sent a line longer than MaxWatchLineBytes; the watch is closed and the informer restarted. */
export class WatchLineTooLong extends Data.TaggedError("WatchLineTooLong")<{ readonly path: string; readonly message: string }> {}

/**
 * The longest line of a watch stream read (one event): etcd refuses requests over 1.5 MiB by
 * default, so no stored object's event comes near 4 MiB; a longer line is a broken or hostile server.
 */
export const MaxWatchLineBytes = 4 * 1024 * 1024

/** A watch brought the objects the informer holds past MaxHeldBytes; the watch is closed and the informer restarted. */
export class WatchHeldTooMuch extends Data.TaggedError("WatchHeldTooMuch")<{ readonly path: string; readonly message: string }> {}

/**
 * The most an informer holds, in bytes of the answers its objects came in (HeldBytes): twice the
 * largest list, so a full list leaves a watch as much room again. A server that streams ever new
 * objects grew a process past 600 MB in 20 s (50,000 slices of 2 KB, each change listing them all).
 */
export const MaxHeldBytes = 2 * MaxListBytes

/** The least time between two watches one informer opens. */
export const MinWatchSpacingMs = 1000

/**
 * The clock an informer paces itself by: its restart backoff, the watch spacing, the client's own
 * reconnect delay. Monotonic, so a wall clock step neither restarts nor prolongs a series; the tests
 * pass a manual one to run minutes of backoff at once.
 */
export interface WatchClock {
  /** Now, in ms on a monotonic clock. */
  readonly now: () => number
  /**
   * Resolves after `ms`, or as soon as `signal` aborts (the watch's stop). It holds the process up
   * meanwhile: in a backoff it is all a watch has pending, and a process whose only work is the watch
   * exited there, for good.
   */
  readonly sleep: (ms: number, signal: AbortSignal) => Promise<void>
}

export const systemWatchClock: WatchClock = {
  now: () => performance.now(),
  sleep: (ms, signal) => sleep(ms, undefined, { signal }).catch(() => {})
}

export interface KubernetesWatchOptions<T extends KubernetesObject> {
  readonly kubeConfig: KubeConfig
  /** The path the informer lists and watches (/apis/GROUP/VERSION/namespaces/NS/PLURAL). */
  readonly path: string
  readonly namespace: string
  readonly labelSelector?: string
  /** Told of the objects after the first list and after each batch of changes. */
  readonly onChange: (objects: ReadonlyArray<T>) => void
  /** The informer failed, a new one starts in `retryInMs`; or its watch answered 410 Gone again (WatchGoneAgain), it lists again in `retryInMs`. */
  readonly onFailed: (message: unknown, failures: number, retryInMs: number | undefined) => void
  /** The first restart delay after the informer failed; doubles per failure (default 1 s). */
  readonly retryMs?: number
  /** The longest restart delay (default 30 s). */
  readonly maxRetryMs?: number
  /** The most the informer holds (default MaxHeldBytes; the tests pass a smaller one, so that passing it is cheap). */
  readonly maxHeldBytes?: number
  /** The clock of its delays (default systemWatchClock). */
  readonly clock?: WatchClock
}

/** Starts the watch; the function it returns stops it. */
export const watchKubernetes = <T extends KubernetesObject>(options: KubernetesWatchOptions<T>): () => void => {
  const { kubeConfig, path, namespace } = options
  const retryMs = options.retryMs ?? 1_000
  const maxRetryMs = options.maxRetryMs ?? 30_000
  const clock = options.clock ?? systemWatchClock
  let stopped = false
  let informer: ListWatch<T> | undefined
  let listed = false
  let failures = 0
  /** Aborted by the stop: closes the current informer's list (or its wait) wherever it is. */
  const stopping = new AbortController()
  let flushScheduled = false

  // After a batch of informer events (a whole list arrives as one synchronous run of "add"s), report once.
  const flush = (): void => {
    flushScheduled = false
    if (stopped || informer === undefined || !listed) return
    options.onChange(informer.list(namespace))
  }
  const scheduleFlush = (): void => {
    if (flushScheduled) return
    flushScheduled = true
    setImmediate(flush)
  }

  const startInformer = (): void => {
    listed = false
    const held = new HeldBytes(options.maxHeldBytes ?? MaxHeldBytes)
    /** This informer's lists so far: the client lists again only after a 410 Gone (or events without a resourceVersion). */
    let lists = 0
    /** Relists in a row, each less than maxRetryMs after the list before it. */
    let relists = 0
    /** When the last list ended. */
    let listedAt = 0
    const unwanted = (): boolean => stopped || informer !== current
    const current: ListWatch<T> = new ListWatch<T>(
      path,
      new BoundedWatch(kubeConfig, { unwanted, held, clock, stopping: stopping.signal }),
      async () => {
        if (lists > 0) {
          relists = clock.now() - listedAt >= maxRetryMs ? 0 : relists + 1
          const delayMs = relists === 0 ? 0 : Math.min(maxRetryMs, retryMs * 2 ** (relists - 1))
          if (delayMs > 0) {
            options.onFailed(new WatchGoneAgain({ path, message: `410 Gone again within ${maxRetryMs} ms of the last list: listing again in ${delayMs} ms` }), relists, delayMs)
            await clock.sleep(delayMs, stopping.signal)
          }
        }
        lists += 1
        const { list, bytes } = await listKubernetes<T>(kubeConfig, path, options.labelSelector, unwanted, stopping.signal)
        // Stopped while listing: fail the list so this informer does not go on to watch.
        if (unwanted()) throw new Error("kubernetes watch stopped")
        held.listed(bytes)
        listedAt = clock.now()
        listed = true
        scheduleFlush()
        return list
      },
      false,
      options.labelSelector,
      undefined,
      // The client's own delay before it re-opens a watch (doubling, reset by an event).
      { delayFn: (ms) => clock.sleep(ms, stopping.signal) }
    )
    informer = current
    // How long it ran, on the monotonic clock: a wall clock step must not restart or prolong the retries.
    const startedAt = clock.now()
    const onChange = (): void => {
      if (informer === current) scheduleFlush()
      else void current.stop() // a stale informer whose watch opened after it was stopped
    }
    current.on("add", onChange)
    current.on("update", onChange)
    current.on("delete", onChange)
    current.on("error", (error?: unknown) => {
      void current.stop()
      if (stopped || informer !== current) return
      // An informer that ran for a while before failing starts a new series of retries.
      if (clock.now() - startedAt >= maxRetryMs) failures = 0
      failures += 1
      const delayMs = Math.min(maxRetryMs, retryMs * 2 ** (failures - 1))
      options.onFailed(error, failures, delayMs)
      void clock.sleep(delayMs, stopping.signal).then(() => {
        if (!stopped) startInformer()
      })
    })
    current.start().catch((error: unknown) => {
      if (!stopped && informer === current) options.onFailed(error, failures, undefined)
    })
  }

  startInformer()
  return () => {
    stopped = true
    stopping.abort()
    const last = informer
    informer = undefined
    void last?.stop()
  }
}

/** An event the informer can take: a type and an object (with metadata, but for ERROR's Status). */
const isEvent = (value: unknown): value is { readonly type: string; readonly object: KubernetesObject } => {
  if (typeof value !== "object" || value === null) return false
  const { type, object } = value as { readonly type?: unknown; readonly object?: unknown }
  if (typeof type !== "string" || typeof object !== "object" || object === null) return false
  return type === "ERROR" || hasMetadata(object)
}

/**
 * What the objects an informer holds came as, in bytes, at most `limit`: the listed answer
 * as a whole, plus each object's last watch event line by name. An object listed, then changed, is
 * counted twice, and one listed, then deleted, until the next list: at most twice what is held.
 */
class HeldBytes {
  readonly limit: number
  private readonly byKey = new Map<string, number>()
  private total = 0

  constructor(limit: number) {
    this.limit = limit
  }

  listed(bytes: number): void {
    this.byKey.clear()
    this.total = bytes
  }

  /** Counts a watch event's line; false once the objects held would pass the limit. */
  event(type: string, object: KubernetesObject, bytes: number): boolean {
    // Both parts whole, as the informer keys them: joined with a "/", ("a/b", "c") and ("a", "b/c")
    // would count as one object while the informer holds two.
    const key = JSON.stringify([object.metadata?.namespace ?? "", object.metadata?.name ?? ""])
    const before = this.byKey.get(key) ?? 0
    if (type === "DELETED") this.byKey.delete(key)
    else if (type === "ADDED" || type === "MODIFIED") this.byKey.set(key, bytes)
    this.total += (this.byKey.get(key) ?? 0) - before
    return this.total <= this.limit
  }
}

/** The inactivity limit of a watch (the client's): no byte for this long closes it with a TimeoutError. */
const WatchIdleTimeoutMs = 30_000

/**
 * The informer's Watch: opens at most one watch per MinWatchSpacingMs, none once its informer no
 * longer wants it, and reads the stream with lines bounded (see the top of this file).
 */
class BoundedWatch extends Watch {
  private readonly unwanted: () => boolean
  private readonly held: HeldBytes
  private readonly clock: WatchClock
  /** Aborted by the stop: ends the spacing wait. */
  private readonly stopping: AbortSignal
  private lastOpened = -Infinity

  constructor(
    kubeConfig: KubeConfig,
    informer: { readonly unwanted: () => boolean; readonly held: HeldBytes; readonly clock: WatchClock; readonly stopping: AbortSignal }
  ) {
    super(kubeConfig)
    this.unwanted = informer.unwanted
    this.held = informer.held
    this.clock = informer.clock
    this.stopping = informer.stopping
  }

  override async watch(
    path: string,
    queryParams: Record<string, unknown>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void
  ): Promise<AbortController> {
    const controller = new AbortController()
    const wait = this.lastOpened + MinWatchSpacingMs - this.clock.now()
    if (wait > 0) await this.clock.sleep(wait, this.stopping)
    if (this.unwanted()) {
      controller.abort()
      return controller
    }
    this.lastOpened = this.clock.now()
    let finished = false
    let idle: ReturnType<typeof setTimeout> | undefined
    const finish = (error: unknown): void => {
      if (finished) return
      finished = true
      clearTimeout(idle)
      controller.abort()
      done(error)
    }
    const stillReading = (): void => {
      clearTimeout(idle)
      idle = setTimeout(() => finish(new DOMException("The watch was idle too long", "TimeoutError")), WatchIdleTimeoutMs)
      idle.unref()
    }
    const onResponse = (response: http.IncomingMessage): void => {
      if (response.statusCode !== 200) {
        response.resume()
        return finish(Object.assign(new Error(response.statusMessage ?? `status ${response.statusCode}`), { statusCode: response.statusCode }))
      }
      let pending: Array<Buffer> = []
      let pendingBytes = 0
      const line = (bytes: Buffer): void => {
        let event: unknown
        try {
          event = JSON.parse(bytes.toString("utf8"))
        } catch {
          return
        }
        if (!isEvent(event)) return
        if (this.held.event(event.type, event.object, bytes.length)) callback(event.type, event.object, event)
        else finish(new WatchHeldTooMuch({ path, message: `the watched objects came to more than ${this.held.limit} bytes` }))
      }
      response.on("data", (chunk: Buffer) => {
        stillReading()
        let start = 0
        for (let end = chunk.indexOf(10); end !== -1 && !finished; end = chunk.indexOf(10, start)) {
          line(pending.length === 0 ? chunk.subarray(start, end) : Buffer.concat([...pending, chunk.subarray(start, end)]))
          pending = []
          pendingBytes = 0
          start = end + 1
        }
        if (start < chunk.length) {
          pending.push(chunk.subarray(start))
          pendingBytes += chunk.length - start
        }
        if (pendingBytes > MaxWatchLineBytes) {
          finish(new WatchLineTooLong({ path, message: `a watch event line longer than ${MaxWatchLineBytes} bytes` }))
        }
      })
      response.on("end", () => finish(null))
      response.on("close", () => finish(null))
      response.on("error", finish)
    }

    let request: http.ClientRequest | undefined
    try {
      request = await sendGet(this.config, path, { watch: "true", ...queryParams }, controller.signal, this.unwanted, onResponse)
    } catch (error) {
      // Thrown (a credential file unreadable, a header value that still cannot be sent), it would leave
      // the informer stopped for good (or, on a reconnect, reject unhandled): told as the watch's end,
      // it fails the informer, which is restarted after the backoff.
      setImmediate(() => done(error))
      controller.abort()
      return controller
    }
    // Stopped while an authenticator (exec, OIDC) worked: the informer no longer holds this watch to abort it.
    if (request === undefined) {
      controller.abort()
      return controller
    }
    stillReading()
    request.on("error", finish)
    request.end()
    return controller
  }
}
