// Rendering and reading Kubernetes manifests for the deploy checks (test/deploy): `kubectl
// kustomize` renders a kustomization offline, and small helpers walk what it rendered (pod
// templates, containers, ports, label selectors, quantities, environment expansion) the way the
// API server and the kubelet read them.
import { execFile } from "node:child_process"
import { existsSync } from "node:fs"
import { promisify } from "node:util"
import { parseAllDocuments } from "yaml"
import type { IConfigMap } from "kubernetes-models/v1/ConfigMap"
import type { IContainer } from "kubernetes-models/v1/Container"
import type { IContainerPort } from "kubernetes-models/v1/ContainerPort"
import type { IPodTemplateSpec } from "kubernetes-models/v1/PodTemplateSpec"
import type { IService } from "kubernetes-models/v1/Service"

const run = promisify(execFile)

/** The kubectl .ci/run unpacks where the machine has none, else the one on PATH. */
const unpackedKubectl = new URL("../../node_modules/.cache/kubectl/kubectl", import.meta.url).pathname
const kubectl = existsSync(unpackedKubectl) ? unpackedKubectl : "kubectl"

/** A rendered object: what every kind has in common, the rest read through the kind's interface. */
export interface KubeObject {
  readonly apiVersion: string
  readonly kind: string
  readonly metadata: { readonly name: string; readonly namespace?: string; readonly labels?: Record<string, string>; readonly annotations?: Record<string, string> }
  readonly [field: string]: unknown
}

/** `kubectl kustomize DIR`, parsed: every document, in order. No shell; fails with kubectl's message. */
export const renderKustomization = async (dir: string): Promise<ReadonlyArray<KubeObject>> => {
  const { stdout } = await run(kubectl, ["kustomize", dir], { maxBuffer: 16 * 1024 * 1024, timeout: 20_000 }).catch((error: NodeJS.ErrnoException & { stderr?: string }) => {
    if (error.code === "ENOENT") throw new Error("kubectl not found: test/deploy renders with `kubectl kustomize` (kubectl 1.27+; .ci/run installs it)")
    throw new Error(`kubectl kustomize ${dir}: ${error.stderr?.trim() || error.message}`)
  })
  return parseManifests(stdout)
}

export const parseManifests = (text: string): ReadonlyArray<KubeObject> =>
  parseAllDocuments(text).flatMap((doc) => {
    if (doc.errors.length > 0) throw new Error(`YAML: ${doc.errors.map((e) => e.message).join("; ")}`)
    const value: unknown = doc.toJS()
    return value === null || value === undefined ? [] : [value as KubeObject]
  })

/** "Kind namespace/name", for messages. */
export const nameOf = (object: KubeObject): string => `${object.kind} ${object.metadata.namespace ?? "(cluster)"}/${object.metadata.name}`

export const namespaceOf = (object: KubeObject): string => object.metadata.namespace ?? "default"

const workloadKinds = new Set(["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"])

/** A workload's pod template, with where it came from. */
export interface PodTemplate {
  readonly owner: KubeObject
  readonly namespace: string
  readonly template: IPodTemplateSpec
  readonly selector: { readonly matchLabels?: Record<string, string>; readonly matchExpressions?: ReadonlyArray<unknown> } | undefined
}

export const podTemplates = (objects: ReadonlyArray<KubeObject>): ReadonlyArray<PodTemplate> =>
  objects.flatMap((owner) => {
    if (!workloadKinds.has(owner.kind)) return []
    const spec = owner["spec"] as { template?: IPodTemplateSpec; selector?: PodTemplate["selector"] } | undefined
    return spec?.template === undefined ? [] : [{ owner, namespace: namespaceOf(owner), template: spec.template, selector: spec.selector }]
  })

/** Every container of a pod: init containers first (restartable ones are sidecars), then the app containers. */
export const containersOf = (pod: PodTemplate): ReadonlyArray<{ readonly container: IContainer; readonly init: boolean }> => [
  ...(pod.template.spec?.initContainers ?? []).map((container) => ({ container, init: true })),
  ...(pod.template.spec?.containers ?? []).map((container) => ({ container, init: false }))
]

/** An init container with restartPolicy Always: a native sidecar, running beside the app containers. */
export const isNativeSidecar = (container: IContainer, init: boolean): boolean => init && container.restartPolicy === "Always"

/** The containers that run for the pod's whole life (app containers and native sidecars). */
export const runningContainers = (pod: PodTemplate): ReadonlyArray<IContainer> =>
  containersOf(pod).filter(({ container, init }) => !init || isNativeSidecar(container, init)).map(({ container }) => container)

/** Whether a container runs the iip-mesh sidecar image (by its repository's last path segment) as a sidecar. */
export const isMeshSidecar = (container: IContainer): boolean => imageName(container.image ?? "") === "iip-mesh-sidecar" && !isIdentityIssuer(container)

/** Whether a container runs the identity issuer: the sidecar's image with args `identity ...`. */
export const isIdentityIssuer = (container: IContainer): boolean => imageName(container.image ?? "") === "iip-mesh-sidecar" && container.args?.[0] === "identity"

/**
 * What the operator creates from `iip-mesh ca init` before the manifests work (deploy/README.md,
 * "Identities"), in every namespace the manifests use: the issuer's CA and the sidecars' trust
 * bundle. They hold keys, so no manifest here carries them.
 */
export const operatorProvided: ReadonlyArray<{ readonly kind: "Secret" | "ConfigMap"; readonly name: string; readonly keys: ReadonlyArray<string> }> = [
  { kind: "Secret", name: "iip-mesh-identity-ca", keys: ["intermediate.pem", "intermediate.key.pem", "bundle.pem"] },
  { kind: "ConfigMap", name: "iip-mesh-trust-bundle", keys: ["bundle.pem"] }
]

/** "registry:5000/team/name:tag@sha256:..." -> "name". */
export const imageName = (image: string): string => {
  const withoutDigest = image.split("@")[0]!
  const lastSegment = withoutDigest.slice(withoutDigest.lastIndexOf("/") + 1)
  return lastSegment.split(":")[0]!
}

/** The tag of an image reference, or undefined when it has none (a digest counts as pinned). */
export const imageTag = (image: string): string | undefined => {
  if (image.includes("@sha256:")) return "digest"
  const lastSegment = image.slice(image.lastIndexOf("/") + 1)
  const colon = lastSegment.indexOf(":")
  return colon === -1 ? undefined : lastSegment.slice(colon + 1)
}

export const labelsMatch = (selector: Readonly<Record<string, string>>, labels: Readonly<Record<string, string>> | undefined): boolean =>
  Object.entries(selector).every(([key, value]) => labels?.[key] === value)

/** The pod templates a Service's selector picks, in its namespace. */
export const selectedPods = (service: KubeObject, pods: ReadonlyArray<PodTemplate>): ReadonlyArray<PodTemplate> => {
  const selector = (service as unknown as IService).spec?.selector
  if (selector === undefined || Object.keys(selector).length === 0) return []
  return pods.filter((pod) => pod.namespace === namespaceOf(service) && labelsMatch(selector, pod.template.metadata?.labels))
}

/** The container port a probe's, or a Service's target, port names or numbers, in the given containers. */
export const findPort = (port: number | string, containers: ReadonlyArray<IContainer>): IContainerPort | undefined => {
  for (const container of containers) {
    for (const candidate of container.ports ?? []) {
      if (typeof port === "number" ? candidate.containerPort === port : candidate.name === port) return candidate
    }
  }
  return undefined
}

/** The Service a host name reaches from a pod in `namespace`: "name", "name.ns", "name.ns.svc[.cluster.local]". */
export const serviceByHost = (host: string, namespace: string, objects: ReadonlyArray<KubeObject>): KubeObject | undefined => {
  const parts = host.split(".")
  const [name, ns = namespace, svc, ...rest] = parts
  if (svc !== undefined && svc !== "svc") return undefined
  if (rest.length > 0 && rest.join(".") !== "cluster.local") return undefined
  return objects.find((o) => o.kind === "Service" && o.metadata.name === name && namespaceOf(o) === ns)
}

/** A ConfigMap of the given name in the namespace. */
export const configMap = (objects: ReadonlyArray<KubeObject>, namespace: string, name: string): IConfigMap | undefined =>
  objects.find((o) => o.kind === "ConfigMap" && o.metadata.name === name && namespaceOf(o) === namespace) as IConfigMap | undefined

/**
 * The file a container sees at `path`, when a ConfigMap volume provides it: the ConfigMap's key
 * (through the volume's items, if any). A reason string when no mounted ConfigMap provides it.
 */
export const fileFromConfigMap = (
  pod: PodTemplate,
  container: IContainer,
  path: string,
  objects: ReadonlyArray<KubeObject>
): { readonly content: string } | { readonly missing: string } => {
  for (const mount of container.volumeMounts ?? []) {
    const prefix = mount.mountPath.endsWith("/") ? mount.mountPath : `${mount.mountPath}/`
    const relative = mount.subPath !== undefined && mount.subPath !== "" ? (path === mount.mountPath ? mount.subPath : undefined) : path.startsWith(prefix) ? path.slice(prefix.length) : undefined
    if (relative === undefined) continue
    const volume = pod.template.spec?.volumes?.find((v) => v.name === mount.name)
    if (volume?.configMap === undefined) return { missing: `${path} is on volume ${mount.name}, which is not a ConfigMap` }
    const map = configMap(objects, pod.namespace, volume.configMap.name ?? "")
    if (map === undefined) return { missing: `${path} comes from ConfigMap ${volume.configMap.name}, which does not exist` }
    const items = volume.configMap.items
    const key = items === undefined ? relative : items.find((item) => item.path === relative)?.key
    const content = key === undefined ? undefined : map.data?.[key]
    if (content === undefined) return { missing: `${path}: ConfigMap ${volume.configMap.name} has no key for ${relative}` }
    return { content }
  }
  return { missing: `${path} is on no volume of container ${container.name}` }
}

/** Stand-in values for the downward API, so $(VAR) references can be expanded offline. */
const fieldValue = (pod: PodTemplate, fieldPath: string): string => {
  if (fieldPath === "metadata.name") return `${pod.owner.metadata.name}-0abc1`
  if (fieldPath === "metadata.namespace") return pod.namespace
  if (fieldPath.startsWith("status.") && fieldPath.endsWith("IP")) return "10.0.0.7"
  const label = /^metadata\.labels\['(.+)'\]$/.exec(fieldPath)
  if (label !== null) return pod.template.metadata?.labels?.[label[1]!] ?? ""
  const annotation = /^metadata\.annotations\['(.+)'\]$/.exec(fieldPath)
  if (annotation !== null) return pod.template.metadata?.annotations?.[annotation[1]!] ?? ""
  return `<${fieldPath}>`
}

/** The $(NAME) references in a value ($$ escapes a $, as Kubernetes reads it). */
export const variableReferences = (value: string): ReadonlyArray<string> =>
  [...value.replaceAll("$$", "").matchAll(/\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g)].map((m) => m[1]!)

/**
 * A container's environment as the kubelet builds it: each value with $(NAME) expanded from the
 * variables defined before it (an undefined reference stays as written, as in Kubernetes). Values
 * from the downward API get stand-ins; from ConfigMaps, their content; from Secrets, a placeholder.
 */
export const effectiveEnv = (pod: PodTemplate, container: IContainer, objects: ReadonlyArray<KubeObject>): Record<string, string> => {
  const env: Record<string, string> = {}
  for (const source of container.envFrom ?? []) {
    const map = source.configMapRef === undefined ? undefined : configMap(objects, pod.namespace, source.configMapRef.name ?? "")
    for (const [key, value] of Object.entries(map?.data ?? {})) env[`${source.prefix ?? ""}${key}`] = value
  }
  for (const variable of container.env ?? []) {
    const from = variable.valueFrom
    if (from === undefined) {
      env[variable.name] = (variable.value ?? "").replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (whole, name: string | undefined) =>
        name === undefined ? "$" : env[name] ?? whole
      )
    } else if (from.fieldRef !== undefined) {
      env[variable.name] = fieldValue(pod, from.fieldRef.fieldPath)
    } else if (from.configMapKeyRef !== undefined) {
      env[variable.name] = configMap(objects, pod.namespace, from.configMapKeyRef.name ?? "")?.data?.[from.configMapKeyRef.key] ?? ""
    } else {
      env[variable.name] = "<secret or resource>"
    }
  }
  return env
}

const quantitySuffixes: Record<string, number> = {
  "": 1,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40
}

/** A Kubernetes quantity ("100m", "384Mi", "1", 2) as a number; NaN when it is not one. */
export const parseQuantity = (quantity: string | number | undefined): number => {
  if (typeof quantity === "number") return quantity
  if (quantity === undefined) return Number.NaN
  const match = /^([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)$/.exec(quantity.trim())
  const factor = match === null ? undefined : quantitySuffixes[match[2]!]
  return match === null || factor === undefined ? Number.NaN : Number(match[1]) * factor
}

/** Seconds a preStop hook waits: `sleep N` (exec) or the sleep action; 0 without one. */
export const preStopSeconds = (container: IContainer): number => {
  const preStop = container.lifecycle?.preStop
  if (preStop?.sleep !== undefined) return preStop.sleep.seconds
  const command = preStop?.exec?.command ?? []
  const at = command.findIndex((part) => part === "sleep" || part.endsWith("/sleep"))
  return at === -1 ? 0 : Number(command[at + 1] ?? 0) || 0
}

/** "HOST:PORT" or "[v6]:PORT" -> its parts. */
export const splitHostPort = (address: string): { readonly host: string; readonly port: number } => {
  const colon = address.lastIndexOf(":")
  return { host: address.slice(0, colon).replace(/^\[|\]$/g, ""), port: Number(address.slice(colon + 1)) }
}

export const isLoopback = (host: string): boolean => host === "localhost" || host === "::1" || host.startsWith("127.")
