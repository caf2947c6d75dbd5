// Kubernetes EndpointSlice source, at the start of the discovery flow: the endpoints of one
// Kubernetes Service, read from the API server with `@kubernetes/client-node` (an informer: list,
// then a streamed watch) and reported as a Reset of one mesh service after each change; the
// Discovery service merges them with the other sources.
//
// Which endpoints count: every address of every EndpointSlice labelled
// `kubernetes.io/service-name=<kubernetesService>` whose conditions say it takes traffic:
//   not terminating, and (ready, or serving)
// (a missing `ready` counts as true, a missing `serving` as `ready`, a missing `terminating` as
// false, as the EndpointSlice API says). A terminating endpoint is dropped even when it still
// serves, so a draining pod stops receiving new calls. The port is the slice's port named
// `portName` ("mesh" by default; a slice without it contributes nothing), the weight comes from
// the slice's annotation `weightAnnotation` (an integer ≥ 1, else 1), the zone from
// `endpoint.zone`, the node from `endpoint.nodeName`. The identity the endpoints must present over
// mutual TLS comes from the slice's label `identityLabel` ("iip-mesh/service-account"): the
// EndpointSlice controller copies a Service's labels onto its slices, so a label on the Service
// naming its pods' ServiceAccount gives `spiffe://<trustDomain>/ns/<namespace>/sa/<label>` with no
// further API call and no read access to pods. Without the label (or without `trustDomain`) the
// endpoints name no identity, and the sidecar accepts any identity of its trust domain there.
// The version (the subset routes split over, src/sidecar/routes.ts) comes from the slice's label
// `iip-mesh/version`, copied the same way from a version Service (GAMMA's `pricing-v2`, selecting
// the v2 pods): several Services can make one mesh service (--kubernetes pricing=NS/pricing-v1+pricing-v2).
// The slice's port named `adminPortName` ("admin-control"; not "admin", which the manifests give
// the read-only listener), when the Service names one, is the pods' admin control port (admin
// federation, src/admin/federation.ts).
//
// Slices are read as untrusted input (anyone allowed to write slices in the namespace, or a server
// in the middle, controls them), as the other sources read theirs: a part that is not what the API
// defines (null, missing, not a list) is skipped; a port outside 1..65535, an address that is no IP
// address or host name, a zone or node name that is not a bounded printable string is left out.
// One malformed slice never keeps the service's good endpoints from being reported.
//
// Reconnecting and coalescing: kubernetesWatch.ts. The last reported set stays while the watch is
// down, and a Reset is only emitted when the set differs from the last one.
import { KubeConfig, type V1EndpointSlice } from "@kubernetes/client-node"
import { isSubsetLabel } from "../balancer/subsets.ts"
import { parseSpiffeId } from "../identity/spiffe.ts"
import { messageOf, stderrLog, type Log } from "../iip/log.ts"
import { watchKubernetes } from "./kubernetesWatch.ts"
import { clampWeight, endpointKey, type DiscoveredEndpoint, type DiscoverySource, isHost, isNodeId, validPort } from "./types.ts"

export interface KubernetesSourceOptions {
  /** The mesh service the endpoints belong to. */
  readonly service: string
  /** The namespace of the Kubernetes Service. */
  readonly namespace: string
  /** The name of the Kubernetes Service whose EndpointSlices are watched. */
  readonly kubernetesService: string
  /** The name of the port in the slices (default "mesh"). */
  readonly portName?: string
  /** Where the API server is; in-cluster configuration (service account) by default. */
  readonly kubeConfig?: KubeConfig
  /** The EndpointSlice annotation holding the weight (default "iip-mesh/weight"). */
  readonly weightAnnotation?: string
  /** The trust domain of the identities the endpoints present; unset: they name none. */
  readonly trustDomain?: string
  /** The slice (Service) label naming the pods' ServiceAccount (default "iip-mesh/service-account"). */
  readonly identityLabel?: string
  /** The first restart delay after the informer failed; doubles per failure (default 1 s). */
  readonly retryMs?: number
  /** The longest restart delay (default 30 s). */
  readonly maxRetryMs?: number
  /** Receives "discovery.kubernetes-failed", "discovery.kubernetes-no-port" and "discovery.kubernetes-not-in-cluster"; stderr by default. */
  readonly log?: Log
}

/** The label the EndpointSlice controller puts on every slice of a Service. */
export const serviceNameLabel = "kubernetes.io/service-name"

/** The path the informer lists and watches. */
export const endpointSlicesPath = (namespace: string): string => `/apis/discovery.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/endpointslices`

/** Whether an endpoint takes traffic: not terminating, and ready or serving (missing conditions as the API defines). */
export const takesTraffic = (conditions: { readonly ready?: boolean; readonly serving?: boolean; readonly terminating?: boolean } | undefined): boolean => {
  const ready = conditions?.ready ?? true
  const serving = conditions?.serving ?? ready
  const terminating = conditions?.terminating ?? false
  return !terminating && (ready || serving)
}

/** The weight an annotation value gives: a positive integer (at most MaxWeight), else 1. */
export const weightOf = (value: string | undefined): number => {
  if (value === undefined || !/^\s*\d+\s*$/.test(value)) return 1
  return clampWeight(Number.parseInt(value, 10))
}

/**
 * The endpoints of a set of EndpointSlices (see the top of this file for the rules), de-duplicated
 * by host and port (the first slice wins). `noPort` is called for each slice without the port.
 */
export const endpointsOfSlices = (
  slices: ReadonlyArray<V1EndpointSlice>,
  options: {
    readonly service: string
    readonly portName: string
    readonly weightAnnotation: string
    readonly noPort?: (slice: string) => void
    readonly trustDomain?: string | undefined
    readonly identityLabel?: string
    /** The slice port naming the admin control listener (default "admin-control"). */
    readonly adminPortName?: string
  }
): ReadonlyArray<DiscoveredEndpoint> => {
  const endpoints = new Map<string, DiscoveredEndpoint>()
  const ordered = slices.filter(isObject).sort((a, b) => nameOf(a).localeCompare(nameOf(b)))
  for (const slice of ordered) {
    const port = portNamed(slice, options.portName)
    if (port === undefined) {
      if (listOf(slice.endpoints).length > 0) options.noPort?.(nameOf(slice))
      continue
    }
    const adminPort = portNamed(slice, options.adminPortName ?? "admin-control")
    const weight = weightOf(slice.metadata?.annotations?.[options.weightAnnotation])
    const identity = identityOf(slice, options.trustDomain, options.identityLabel ?? defaultIdentityLabel)
    const version = slice.metadata?.labels?.[versionLabel]
    for (const endpoint of listOf(slice.endpoints)) {
      if (!isObject(endpoint) || !takesTraffic(endpoint.conditions)) continue
      const zone = printable(endpoint.zone)
      const node = printable(endpoint.nodeName)
      for (const address of listOf(endpoint.addresses)) {
        if (typeof address !== "string" || !isHost(address)) continue
        const found: DiscoveredEndpoint = {
          service: options.service,
          host: address,
          port,
          weight,
          features: [],
          source: "kubernetes",
          // The API server refuses loopback and link-local addresses in an EndpointSlice; a name
          // (FQDN address type) or a compromised writer could still aim one at this host.
          offHost: true,
          ...(zone === undefined ? {} : { zone }),
          ...(node === undefined ? {} : { node }),
          ...(identity === undefined ? {} : { identity }),
          ...(typeof version !== "string" || !isSubsetLabel(version) ? {} : { version }),
          ...(adminPort === undefined ? {} : { adminPort })
        }
        const key = endpointKey(found)
        if (!endpoints.has(key)) endpoints.set(key, found)
      }
    }
  }
  return [...endpoints.values()]
}

const isObject = <A>(value: A | null | undefined): value is A => typeof value === "object" && value !== null

/** A list the API defines, or none when it is missing or not a list. */
const listOf = <A>(value: ReadonlyArray<A> | null | undefined): ReadonlyArray<A> => (Array.isArray(value) ? value : [])

const nameOf = (slice: V1EndpointSlice): string => (typeof slice.metadata?.name === "string" ? slice.metadata.name : "")

/** The slice's port named `name`, if it is a port number (1..65535). */
const portNamed = (slice: V1EndpointSlice, name: string): number | undefined => {
  const port = listOf(slice.ports).find((candidate) => isObject(candidate) && (candidate.name ?? "") === name)?.port
  return typeof port === "number" ? validPort(port) : undefined
}

/** A Kubernetes object name is at most this long (a DNS subdomain); a longer one is cut to it in the log. */
const MaxObjectNameLength = 253

/** The slices a `discovery.kubernetes-no-port` line names (it counts them all). */
const MaxNamesLogged = 5

/** A zone or node name fit for the admin view and the log, or none. */
const printable = (value: unknown): string | undefined => (typeof value === "string" && isNodeId(value) ? value : undefined)

export const defaultIdentityLabel = "iip-mesh/service-account"

/** The slice (Service) label naming its endpoints' version. */
export const versionLabel = "iip-mesh/version"

/** The SPIFFE ID a slice's ServiceAccount label names in `trustDomain`, if both are there and valid. */
export const identityOf = (slice: V1EndpointSlice, trustDomain: string | undefined, label: string): string | undefined => {
  const account = slice.metadata?.labels?.[label]
  const namespace = slice.metadata?.namespace
  if (trustDomain === undefined || account === undefined || namespace === undefined) return undefined
  const id = `spiffe://${trustDomain}/ns/${namespace}/sa/${account}`
  return parseSpiffeId(id) === undefined ? undefined : id
}

/** The in-cluster configuration: the service account's token and CA, KUBERNETES_SERVICE_HOST/PORT. */
export const inClusterConfig = (): KubeConfig => {
  const kubeConfig = new KubeConfig()
  kubeConfig.loadFromCluster()
  return kubeConfig
}

/** The endpoints of one Kubernetes Service's EndpointSlices, kept current by a reconnecting watch. */
export const kubernetesSource = (options: KubernetesSourceOptions): DiscoverySource => ({
  start(emit) {
    const { service, namespace, kubernetesService } = options
    const portName = options.portName ?? "mesh"
    const weightAnnotation = options.weightAnnotation ?? "iip-mesh/weight"
    const retryMs = options.retryMs ?? 1_000
    const maxRetryMs = options.maxRetryMs ?? 30_000
    const log = options.log ?? stderrLog
    if (options.kubeConfig === undefined && process.env["KUBERNETES_SERVICE_HOST"] === undefined) {
      // Not in a pod: the in-cluster configuration has no server, every attempt fails ("Invalid URL").
      log("discovery.kubernetes-not-in-cluster", { service, namespace, kubernetesService })
    }
    const kubeConfig = options.kubeConfig ?? inClusterConfig()
    const labelSelector = `${serviceNameLabel}=${kubernetesService}`
    let lastReported: string | undefined
    /** The slices without the port as last said: said again only when they change. */
    let lastNoPort = ""
    return watchKubernetes<V1EndpointSlice>({
      kubeConfig,
      path: endpointSlicesPath(namespace),
      namespace,
      labelSelector,
      retryMs,
      maxRetryMs,
      // Reported only when the set differs from the last one.
      onChange: (slices) => {
        const noPort: Array<string> = []
        const endpoints = endpointsOfSlices(slices, {
          service,
          portName,
          weightAnnotation,
          trustDomain: options.trustDomain,
          ...(options.identityLabel === undefined ? {} : { identityLabel: options.identityLabel }),
          noPort: (slice) => noPort.push(slice)
        })
        // Said when they change, in one line: a line per slice on every change of any slice (200
        // slices named by 10 KB each: 2 MB of log a change) was the API server's to multiply.
        const noPortNow = JSON.stringify(noPort)
        if (noPortNow !== lastNoPort && noPort.length > 0) {
          log("discovery.kubernetes-no-port", { service, namespace, kubernetesService, portName, slices: noPort.length, names: noPort.slice(0, MaxNamesLogged).map((name) => name.slice(0, MaxObjectNameLength)) })
        }
        lastNoPort = noPortNow
        const fingerprint = JSON.stringify(endpoints)
        if (fingerprint === lastReported) return
        lastReported = fingerprint
        emit({ _tag: "Reset", service, endpoints })
      },
      onFailed: (error, failures, retryInMs) =>
        log("discovery.kubernetes-failed", { service, namespace, kubernetesService, message: messageOf(error), failures, ...(retryInMs === undefined ? {} : { retryInMs }) })
    })
  }
})
