// Routes from Kubernetes: the HTTPRoutes of the namespaces named by --kubernetes-routes, watched
// like the EndpointSlices (src/discovery/kubernetesWatch.ts: list, watch, reconnect), translated
// (httpRoutes.ts) and checked as a routes file is (routes.ts), each object apart: one that cannot
// be taken is left out and logged (`httproute-invalid`, with the object and why), the others
// apply. After every batch of changes the routes in force are compiled again
// (`httproutes-loaded`); a change reaches requests as soon as the watch event does. The sidecar
// puts them after the routes file's (routes.ts mergeRoutes). Loaded only when configured (the
// Kubernetes client costs memory and start time).
import type { KubeConfig, KubernetesObject } from "@kubernetes/client-node"
import * as Result from "effect/Result"
import { inClusterConfig } from "../discovery/kubernetesSource.ts"
import { watchKubernetes } from "../discovery/kubernetesWatch.ts"
import { type Log, messageOf } from "../iip/log.ts"
import { loggable } from "../iip/redact.ts"
import { byPrecedence, type HttpRouteObject, httpRoutesPath, type TranslatedRoute, translateHttpRoute } from "./httpRoutes.ts"
import { type CompiledRoutes, type CompileOptions, compileRoutes, MAX_ROUTES, noRoutes, parseRoutesDocument } from "./routes.ts"

export interface KubernetesRoutesOptions {
  readonly namespaces: ReadonlyArray<string>
  /** The mesh service a Kubernetes Service is (the --kubernetes mapping, else its name). */
  readonly meshNameOf: (namespace: string, name: string) => string
  /** Where the API server is; in-cluster configuration by default. */
  readonly kubeConfig?: KubeConfig
  readonly log: Log
  readonly compile?: CompileOptions
  readonly retryMs?: number
  readonly maxRetryMs?: number
}

export interface KubernetesRoutes {
  readonly current: () => CompiledRoutes
  readonly close: () => void
}

type Stored = KubernetesObject & HttpRouteObject

/** Every object's routes, each checked alone; the refused ones named with why (once per version of the object). */
const compileAll = (objects: ReadonlyArray<Stored>, options: KubernetesRoutesOptions, refusedBefore: Set<string>): CompiledRoutes => {
  const taken: Array<TranslatedRoute> = []
  const sources = new Map<string, string>()
  let count = 0
  const refusedNow = new Set<string>()
  for (const object of objects) {
    const id = `${object.metadata?.namespace ?? ""}/${object.metadata?.name ?? ""}`
    const translation = translateHttpRoute(object, options)
    if (translation._tag === "NotMesh") continue
    let reason: string | undefined
    if (translation._tag === "Refused") reason = translation.reason
    else {
      const checked = parseRoutesDocument({ routes: translation.routes.map((route) => route.spec) })
      if (Result.isFailure(checked)) reason = checked.failure.problems.join("; ")
    }
    if (reason !== undefined) {
      const key = `${id}@${object.metadata?.resourceVersion ?? ""}`
      refusedNow.add(key)
      if (!refusedBefore.has(key)) options.log("httproute-invalid", { httproute: loggable(id), message: loggable(reason, 1000) })
      continue
    }
    if (translation._tag === "Routes" && taken.length + translation.routes.length > MAX_ROUTES) {
      options.log("httproute-invalid", { httproute: loggable(id), message: `more than ${MAX_ROUTES} routes in all: left out` })
      continue
    }
    if (translation._tag !== "Routes") continue
    count++
    for (const route of translation.routes) {
      taken.push(route)
      sources.set(String(route.spec["name"]), `HTTPRoute ${id}`)
    }
  }
  refusedBefore.clear()
  for (const key of refusedNow) refusedBefore.add(key)
  taken.sort(byPrecedence)
  const document = parseRoutesDocument({ routes: taken.map((route) => route.spec) })
  // Each object passed alone; together they can only clash on names, which the object's id keeps apart.
  if (Result.isFailure(document)) return noRoutes
  const compiled = compileRoutes(document.success, { ...options.compile, sourceOf: (name) => sources.get(name) ?? "kubernetes" })
  return { byService: compiled.byService, limits: compiled.limits, source: `${count} HTTPRoute${count === 1 ? "" : "s"}: ${compiled.source}`, baggage: compiled.baggage }
}

/** Starts watching; the routes are empty until the first list arrives. */
export const watchKubernetesRoutes = (options: KubernetesRoutesOptions): KubernetesRoutes => {
  const { log } = options
  if (options.kubeConfig === undefined && process.env["KUBERNETES_SERVICE_HOST"] === undefined) {
    log("httproutes-not-in-cluster", { namespaces: options.namespaces.join(",") })
  }
  const kubeConfig = options.kubeConfig ?? inClusterConfig()
  const perNamespace = new Map<string, ReadonlyArray<Stored>>()
  const refused = new Set<string>()
  let current: CompiledRoutes = noRoutes
  let lastSource = ""
  const recompile = (): void => {
    current = compileAll([...perNamespace.values()].flat(), options, refused)
    if (current.source === lastSource) return
    lastSource = current.source
    log("httproutes-loaded", { namespaces: options.namespaces.join(","), applies: current.source })
  }
  const stops = options.namespaces.map((namespace) =>
    watchKubernetes<Stored>({
      kubeConfig,
      path: httpRoutesPath(namespace),
      namespace,
      ...(options.retryMs === undefined ? {} : { retryMs: options.retryMs }),
      ...(options.maxRetryMs === undefined ? {} : { maxRetryMs: options.maxRetryMs }),
      onChange: (objects) => {
        perNamespace.set(namespace, objects)
        recompile()
      },
      onFailed: (error, failures, retryInMs) => log("httproutes-watch-failed", { namespace, message: loggable(messageOf(error)), failures, ...(retryInMs === undefined ? {} : { retryInMs }) })
    })
  )
  return {
    current: () => current,
    close: () => {
      for (const stop of stops) stop()
    }
  }
}
