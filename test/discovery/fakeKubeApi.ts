// Test support for the Kubernetes discovery tests: a small fake API server on 127.0.0.1 (port 0)
// that serves one namespace's EndpointSlices (and HTTPRoutes: src/sidecar/kubernetesRoutes.ts) the
// way kube-apiserver does for an informer: a list (GET .../endpointslices, with a resourceVersion)
// and a streamed watch (?watch=true: one JSON event per line, replayed from the requested
// resourceVersion). The test changes the slices, drops
// the watch streams, makes the next watches fail, expires the history or answers every watch 410 Gone.
import type { KubernetesObject, V1EndpointSlice } from "@kubernetes/client-node"
import { KubeConfig } from "@kubernetes/client-node"
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"
import { Recorder } from "./recorder.ts"

export type WatchEventType = "ADDED" | "MODIFIED" | "DELETED"

/** One request the server saw. */
export interface SeenRequest {
  readonly kind: "list" | "watch"
  readonly url: URL
  readonly authorization: string | undefined
}

export interface EndpointSpec {
  readonly ip: string
  readonly ready?: boolean
  readonly serving?: boolean
  readonly terminating?: boolean
  readonly zone?: string
  readonly node?: string
}

/** An EndpointSlice of `service` with a port named `portName` (default "mesh") and the endpoints. */
export const endpointSlice = (
  name: string,
  endpoints: ReadonlyArray<EndpointSpec>,
  options: { readonly service?: string; readonly port?: number; readonly portName?: string; readonly weight?: string } = {}
): V1EndpointSlice => ({
  apiVersion: "discovery.k8s.io/v1",
  kind: "EndpointSlice",
  metadata: {
    name,
    namespace: "shop",
    labels: { "kubernetes.io/service-name": options.service ?? "web" },
    ...(options.weight === undefined ? {} : { annotations: { "iip-mesh/weight": options.weight } })
  },
  addressType: "IPv4",
  ports: [{ name: options.portName ?? "mesh", port: options.port ?? 4143, protocol: "TCP" }],
  endpoints: endpoints.map((e) => ({
    addresses: [e.ip],
    conditions: {
      ...(e.ready === undefined ? {} : { ready: e.ready }),
      ...(e.serving === undefined ? {} : { serving: e.serving }),
      ...(e.terminating === undefined ? {} : { terminating: e.terminating })
    },
    ...(e.zone === undefined ? {} : { zone: e.zone }),
    ...(e.node === undefined ? {} : { nodeName: e.node })
  }))
})

export class FakeKubeApi {
  readonly namespace: string
  readonly requests = new Recorder<SeenRequest>()
  /** Watch streams the client closed (or the server ended). */
  readonly closedWatches = new Recorder<URL>()
  /** Answer the next this-many watch requests with 500. */
  failWatches = 0
  /** Answer every watch with one new event (this object, re-applied as MODIFIED) and end it at once: a server that churns. */
  churnWatches: KubernetesObject | undefined
  /**
   * Answer every watch with 410 Gone: as an HTTP status ("status"), or as an ERROR event on a
   * stream that then ends ("event"; after churnWatches' event when that is set).
   */
  goneWatches: "status" | "event" | undefined
  /** Answer every watch with this text first (malformed lines, say), then as usual. */
  watchPrefix = ""
  /** Answer every watch with one line that never ends (64 KiB chunks while the client reads); counts the bytes sent. */
  endlessLine = false
  endlessBytes = 0
  /** Answer every list with one that never ends (64 KiB chunks while the client reads); counts the bytes sent. */
  endlessList = false
  endlessListBytes = 0
  /** Answer every watch with ADDED events of ever new slices (of 64 KiB) while the client reads; counts the bytes sent. */
  endlessAdds = false
  endlessAddsBytes = 0
  /** The namespace and name of the nth slice endlessAdds sends (by default ever new names in this namespace). */
  endlessAddsNames: (n: number) => { readonly namespace: string; readonly name: string } = (n) => ({ namespace: this.namespace, name: `flood-${n}` })
  /** Answer every list with its headers only, and hold it open (as a server that hangs); its close is recorded. */
  holdLists = false
  readonly closedLists = new Recorder<URL>()
  /** Put these after the objects of every list (items that are not what the API defines, say). */
  listExtraItems: ReadonlyArray<unknown> = []
  private readonly server: Server
  /** Objects by path (the kind's collection) and name. */
  private readonly objects = new Map<string, Map<string, KubernetesObject>>()
  private readonly history: Array<{ readonly rv: number; readonly path: string; readonly type: WatchEventType; readonly object: KubernetesObject }> = []
  private readonly watches = new Set<{ readonly res: ServerResponse; readonly path: string; readonly selector: string | null }>()
  private rv = 100
  /** Watches from a resourceVersion below this get 410 Gone. */
  private oldestRv = 0

  private constructor(namespace: string) {
    this.namespace = namespace
    this.server = createServer((req, res) => this.handle(req, res))
  }

  static async start(namespace = "shop"): Promise<FakeKubeApi> {
    const api = new FakeKubeApi(namespace)
    await new Promise<void>((resolve) => api.server.listen(0, "127.0.0.1", resolve))
    return api
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port
  }

  /** A KubeConfig pointed at this server, with a bearer token. */
  kubeConfig(): KubeConfig {
    const kubeConfig = new KubeConfig()
    kubeConfig.loadFromOptions({
      clusters: [{ name: "fake", server: `http://127.0.0.1:${this.port}`, skipTLSVerify: true }],
      users: [{ name: "mesh", token: "test-token" }],
      contexts: [{ name: "fake", cluster: "fake", user: "mesh", namespace: this.namespace }],
      currentContext: "fake"
    })
    return kubeConfig
  }

  /** Where objects of this kind are listed and watched. */
  private pathOf(object: KubernetesObject): string {
    const plural = object.kind === "HTTPRoute" ? "httproutes" : "endpointslices"
    return `/apis/${object.apiVersion ?? "discovery.k8s.io/v1"}/namespaces/${this.namespace}/${plural}`
  }

  /** Change an object (an EndpointSlice, an HTTPRoute; ADDED and MODIFIED store it, DELETED removes it) and tell the open watches. */
  apply(type: WatchEventType, changed: KubernetesObject): void {
    this.rv += 1
    const name = changed.metadata!.name!
    const object: KubernetesObject = { ...changed, metadata: { ...changed.metadata, resourceVersion: String(this.rv) } }
    const path = this.pathOf(object)
    const stored = this.objects.get(path) ?? new Map<string, KubernetesObject>()
    this.objects.set(path, stored)
    if (type === "DELETED") stored.delete(name)
    else stored.set(name, object)
    const event = { rv: this.rv, path, type, object }
    this.history.push(event)
    for (const watch of this.watches) {
      if (watch.path === path && matches(object, watch.selector)) watch.res.write(`${JSON.stringify({ type, object })}\n`)
    }
  }

  /** End every open watch stream, as an API server does on restart or timeout. */
  dropWatches(): void {
    for (const watch of this.watches) watch.res.end()
    this.watches.clear()
  }

  /** End every open watch stream with an ERROR event 410 Gone, as kube-apiserver does once etcd compacted the history a watcher still needed. */
  goneOpenWatches(): void {
    this.expireHistory()
    for (const watch of this.watches) watch.res.end(`${JSON.stringify({ type: "ERROR", object: goneStatus })}\n`)
    this.watches.clear()
  }

  /** Forget the history: a watch from an older resourceVersion gets 410 Gone (the client must list again). */
  expireHistory(): void {
    this.oldestRv = this.rv + 1
  }

  get openWatches(): number {
    return this.watches.size
  }

  async close(): Promise<void> {
    this.dropWatches()
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  /** Writes `chunk` again and again while the client reads, until it goes away. */
  private pumpEndless(res: ServerResponse, chunk: Buffer, sent: (bytes: number) => void): void {
    const pump = (): void => {
      while (!res.destroyed) {
        sent(chunk.length)
        if (!res.write(chunk)) return void res.once("drain", pump)
      }
    }
    pump()
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? "/", "http://127.0.0.1")
    const paths = [`/apis/discovery.k8s.io/v1/namespaces/${this.namespace}/endpointslices`, `/apis/gateway.networking.k8s.io/v1/namespaces/${this.namespace}/httproutes`]
    const path = url.pathname
    const watch = url.searchParams.get("watch") === "true"
    this.requests.push({ kind: watch ? "watch" : "list", url, authorization: req.headers.authorization })
    if (req.method !== "GET" || !paths.includes(path)) {
      res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ kind: "Status", code: 404 }))
      return
    }
    const selector = url.searchParams.get("labelSelector")
    if (!watch) {
      const items = [...(this.objects.get(path)?.values() ?? [])].filter((object) => matches(object, selector))
      const httpRoutes = path.endsWith("/httproutes")
      res.writeHead(200, { "content-type": "application/json" })
      if (this.holdLists) {
        res.flushHeaders()
        res.on("close", () => this.closedLists.push(url))
        return
      }
      if (this.endlessList) {
        res.write(`{"kind":"EndpointSliceList","metadata":{"resourceVersion":"${this.rv}"},"items":[`)
        this.pumpEndless(res, Buffer.from(`${JSON.stringify(endpointSlice("pad", [], { service: "other" }))},`.padStart(64 * 1024)), (bytes) => (this.endlessListBytes += bytes))
        return
      }
      items.push(...(this.listExtraItems as Array<KubernetesObject>))
      res.end(JSON.stringify({
        apiVersion: httpRoutes ? "gateway.networking.k8s.io/v1" : "discovery.k8s.io/v1",
        kind: httpRoutes ? "HTTPRouteList" : "EndpointSliceList",
        metadata: { resourceVersion: String(this.rv) },
        items
      }))
      return
    }
    if (this.goneWatches === "status") {
      res.writeHead(410, { "content-type": "application/json" }).end(JSON.stringify(goneStatus))
      return
    }
    if (this.failWatches > 0) {
      this.failWatches -= 1
      res.writeHead(500, { "content-type": "application/json" }).end(JSON.stringify({ kind: "Status", code: 500, message: "injected" }))
      return
    }
    res.writeHead(200, { "content-type": "application/json", "transfer-encoding": "chunked" })
    res.flushHeaders()
    if (this.endlessLine) {
      res.write('{"type":"ADDED","object":{"metadata":{"name":"')
      this.pumpEndless(res, Buffer.alloc(64 * 1024, "x"), (bytes) => (this.endlessBytes += bytes))
      return
    }
    if (this.endlessAdds) {
      let n = 0
      const pump = (): void => {
        while (!res.destroyed) {
          n += 1
          const { namespace, name } = this.endlessAddsNames(n)
          const slice = endpointSlice(name, [{ ip: `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}` }], { weight: "1".padStart(64 * 1024, " ") })
          const line = `${JSON.stringify({ type: "ADDED", object: { ...slice, metadata: { ...slice.metadata, namespace } } })}\n`
          this.endlessAddsBytes += line.length
          if (!res.write(line)) return void res.once("drain", pump)
        }
      }
      pump()
      return
    }
    if (this.watchPrefix !== "") res.write(this.watchPrefix)
    if (this.churnWatches !== undefined) {
      this.apply("MODIFIED", this.churnWatches)
      const event = this.history.at(-1)!
      res.write(`${JSON.stringify({ type: event.type, object: event.object })}\n`)
      res.end(this.goneWatches === "event" ? `${JSON.stringify({ type: "ERROR", object: goneStatus })}\n` : "")
      return
    }
    if (this.goneWatches === "event") {
      res.end(`${JSON.stringify({ type: "ERROR", object: goneStatus })}\n`)
      return
    }
    const from = Number(url.searchParams.get("resourceVersion") ?? "0")
    if (from < this.oldestRv) {
      res.end(`${JSON.stringify({ type: "ERROR", object: goneStatus })}\n`)
      return
    }
    for (const event of this.history) {
      if (event.rv > from && event.path === path && matches(event.object, selector)) res.write(`${JSON.stringify({ type: event.type, object: event.object })}\n`)
    }
    const entry = { res, path, selector }
    this.watches.add(entry)
    res.on("close", () => {
      this.watches.delete(entry)
      this.closedWatches.push(url)
    })
  }
}

/** What kube-apiserver answers a watch from a resourceVersion it no longer has. */
const goneStatus = { kind: "Status", code: 410, reason: "Expired", message: "too old resource version" }

/** Equality selectors only ("a=b,c=d"), as the informer sends them. */
const matches = (object: KubernetesObject, selector: string | null): boolean => {
  if (selector === null || selector === "") return true
  return selector.split(",").every((term) => {
    const [key, value] = term.split("=")
    return object.metadata?.labels?.[key!] === value
  })
}
