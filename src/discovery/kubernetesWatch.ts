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
// Spacing: the informer re-opens a watch the server ends at once, and after any event it does so
// without delay; a server (or proxy) that ends every watch after one event made 269 watches in 2 s.
// The informer's Watch opens at most one watch per MinWatchSpacingMs (a real API server keeps a
// watch open for minutes, so this costs nothing there).
//
// Stopping: the informer can abort only a watch whose answer has arrived (Watch.watch resolves to
// its AbortController after the response headers). A stop while the watch request is in flight
// would leave that watch open for good, so the informer's Watch aborts a watch that opens too late.
import { type KubeConfig, type KubernetesListObject, type KubernetesObject, ListWatch, Watch } from "@kubernetes/client-node"
import { setTimeout as sleep } from "node:timers/promises"

/** The least time between two watches one informer opens. */
export const MinWatchSpacingMs = 1000

export interface KubernetesWatchOptions<T extends KubernetesObject> {
  readonly kubeConfig: KubeConfig
  /** The path the informer lists and watches (/apis/GROUP/VERSION/namespaces/NS/PLURAL). */
  readonly path: string
  readonly namespace: string
  /** Lists the objects (the API client's call for `path`, with the same selector). */
  readonly list: () => Promise<KubernetesListObject<T>>
  readonly labelSelector?: string
  /** Told of the objects after the first list and after each batch of changes. */
  readonly onChange: (objects: ReadonlyArray<T>) => void
  /** The informer failed; a new one starts in `retryInMs`. */
  readonly onFailed: (message: unknown, failures: number, retryInMs: number | undefined) => void
  /** The first restart delay after the informer failed; doubles per failure (default 1 s). */
  readonly retryMs?: number
  /** The longest restart delay (default 30 s). */
  readonly maxRetryMs?: number
}

/** Starts the watch; the function it returns stops it. */
export const watchKubernetes = <T extends KubernetesObject>(options: KubernetesWatchOptions<T>): () => void => {
  const { kubeConfig, path, namespace } = options
  const retryMs = options.retryMs ?? 1_000
  const maxRetryMs = options.maxRetryMs ?? 30_000
  let stopped = false
  let informer: ListWatch<T> | undefined
  let listed = false
  let failures = 0
  let restartTimer: ReturnType<typeof setTimeout> | undefined
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
    const current: ListWatch<T> = new ListWatch<T>(
      path,
      new LateWatchAborting(kubeConfig, () => stopped || informer !== current),
      async () => {
        const list = await options.list()
        // Stopped while listing: fail the list so this informer does not go on to watch.
        if (stopped || informer !== current) throw new Error("kubernetes watch stopped")
        listed = true
        scheduleFlush()
        return list
      },
      false,
      options.labelSelector
    )
    informer = current
    const startedAt = Date.now()
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
      if (Date.now() - startedAt >= maxRetryMs) failures = 0
      failures += 1
      const delayMs = Math.min(maxRetryMs, retryMs * 2 ** (failures - 1))
      options.onFailed(error, failures, delayMs)
      restartTimer = setTimeout(() => {
        if (!stopped) startInformer()
      }, delayMs)
    })
    current.start().catch((error: unknown) => {
      if (!stopped && informer === current) options.onFailed(error, failures, undefined)
    })
  }

  startInformer()
  return () => {
    stopped = true
    clearTimeout(restartTimer)
    const last = informer
    informer = undefined
    void last?.stop()
  }
}

/** A Watch that opens at most one watch per MinWatchSpacingMs, and aborts, as soon as it is open, a watch its informer no longer wants. */
class LateWatchAborting extends Watch {
  private readonly unwanted: () => boolean
  private lastOpened = -Infinity

  constructor(kubeConfig: KubeConfig, unwanted: () => boolean) {
    super(kubeConfig)
    this.unwanted = unwanted
  }

  override async watch(...args: Parameters<Watch["watch"]>): Promise<AbortController> {
    const wait = this.lastOpened + MinWatchSpacingMs - performance.now()
    if (wait > 0) await sleep(wait, undefined, { ref: false })
    this.lastOpened = performance.now()
    const controller = await super.watch(...args)
    if (this.unwanted()) controller.abort()
    return controller
  }
}
