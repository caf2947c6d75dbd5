// The checks test/deploy runs over rendered manifests, each a pure function of the objects that
// returns its problems (empty when the manifests pass). Together they stand in for what an API
// server and a cluster would tell us, offline:
// - schema: every object is a kind we know and valid for kubernetes-models (types, enums,
//   required fields); unknown fields are typedCheck.ts's job;
// - cross-object: selectors match their templates, Services select a workload and their target
//   ports exist, port names are valid, RBAC lets each sidecar do what its discovery does, ConfigMap
//   references resolve, environment variables are real settings and expand, probes hit ports;
// - the mesh: each sidecar is a native sidecar whose configuration (ConfigMap file + environment)
//   loads with the sidecar's own loader, listens where its probes, Services and app expect, can
//   drain within the grace period, reads an authorization policy that is one and names
//   ServiceAccounts that exist, and exports traces to a collector that exists;
// - hygiene: security contexts, resources (against bench/sidecar's figures), scrape annotations,
//   pinned images.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as Result from "effect/Result"
import { parse as parseYaml } from "yaml"
import { ClusterRole } from "kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole"
import { ClusterRoleBinding } from "kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding"
import { Role } from "kubernetes-models/rbac.authorization.k8s.io/v1/Role"
import { RoleBinding } from "kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding"
import type { IPolicyRule } from "kubernetes-models/rbac.authorization.k8s.io/v1/PolicyRule"
import { Deployment } from "kubernetes-models/apps/v1/Deployment"
import { ConfigMap } from "kubernetes-models/v1/ConfigMap"
import type { IContainer } from "kubernetes-models/v1/Container"
import { Namespace } from "kubernetes-models/v1/Namespace"
import type { IProbe } from "kubernetes-models/v1/Probe"
import { Service, type IService } from "kubernetes-models/v1/Service"
import { ServiceAccount, type IServiceAccount } from "kubernetes-models/v1/ServiceAccount"
import { parseFlags } from "../../src/config/flags.ts"
import { loadSidecarConfig } from "../../src/config/loadSidecarConfig.ts"
import { settings } from "../../src/config/settings.ts"
import type { SidecarConfig } from "../../src/config/sidecarConfig.ts"
import { parsePolicyDocument, type PolicyDocument } from "../../src/identity/policy.ts"
import { defaultTrustDomain, parseSpiffeId } from "../../src/identity/spiffe.ts"
import { type HttpRouteObject, translateHttpRoute } from "../../src/sidecar/httpRoutes.ts"
import { parseRoutesDocument } from "../../src/sidecar/routes.ts"
import { identity } from "./identityChecks.ts"
import {
  containersOf,
  nameOf,
  effectiveEnv,
  fileFromConfigMap,
  findPort,
  imageName,
  imageTag,
  isLoopback,
  isMeshSidecar,
  isNativeSidecar,
  type KubeObject,
  labelsMatch,
  namespaceOf,
  operatorProvided,
  parseQuantity,
  podTemplates,
  type PodTemplate,
  preStopSeconds,
  runningContainers,
  selectedPods,
  serviceByHost,
  splitHostPort,
  variableReferences
} from "./kube.ts"

export const checkIds = [
  "schema",
  "unknown-fields",
  "selectors",
  "service-selects",
  "target-ports",
  "port-names",
  "rbac",
  "config-refs",
  "env-names",
  "env-refs",
  "probes",
  "native-sidecar",
  "sidecar-config",
  "sidecar-wiring",
  "authz-policy",
  "discovery",
  "httproutes",
  "mesh-identity",
  "drain",
  "security",
  "resources",
  "prometheus",
  "tracing",
  "images",
  "identity"
] as const

export type CheckId = (typeof checkIds)[number]

export interface Problem {
  readonly check: CheckId
  readonly where: string
  readonly message: string
}

export const formatProblems = (problems: ReadonlyArray<Problem>): string => problems.map((p) => `[${p.check}] ${p.where}: ${p.message}`).join("\n")

/**
 * An HTTPRoute (kubernetes-models has no Gateway API kinds): valid when the sidecar's own
 * translation takes it whole and the routes it gives pass the routes document's checks
 * (src/sidecar/httpRoutes.ts, routes.ts), which is what the sidecar will do with it.
 */
class HttpRouteModel {
  private readonly object: HttpRouteObject
  constructor(object: never) {
    this.object = object
  }
  validate(): void {
    const translation = translateHttpRoute(this.object, { meshNameOf: (_namespace, name) => name })
    if (translation._tag === "NotMesh") throw new Error("no parentRef names a Service: the mesh would ignore this HTTPRoute")
    if (translation._tag === "Refused") throw new Error(translation.reason)
    const checked = parseRoutesDocument({ routes: translation.routes.map((route) => route.spec) })
    if (Result.isFailure(checked)) throw new Error(checked.failure.problems.join("; "))
  }
}

/**
 * The kinds the manifests may use: their kubernetes-models class (or our own check) and, for
 * typedCheck.ts, their type (none: the model's check is all there is).
 */
export const knownKinds: Record<string, { readonly model: new (data: never) => { validate(): void }; readonly module?: string; readonly type?: string }> = {
  "gateway.networking.k8s.io/v1/HTTPRoute": { model: HttpRouteModel },
  "v1/Namespace": { model: Namespace, module: "kubernetes-models/v1/Namespace", type: "INamespace" },
  "v1/ServiceAccount": { model: ServiceAccount, module: "kubernetes-models/v1/ServiceAccount", type: "IServiceAccount" },
  "v1/ConfigMap": { model: ConfigMap, module: "kubernetes-models/v1/ConfigMap", type: "IConfigMap" },
  "v1/Service": { model: Service, module: "kubernetes-models/v1/Service", type: "IService" },
  "apps/v1/Deployment": { model: Deployment, module: "kubernetes-models/apps/v1/Deployment", type: "IDeployment" },
  "rbac.authorization.k8s.io/v1/Role": { model: Role, module: "kubernetes-models/rbac.authorization.k8s.io/v1/Role", type: "IRole" },
  "rbac.authorization.k8s.io/v1/RoleBinding": { model: RoleBinding, module: "kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding", type: "IRoleBinding" },
  "rbac.authorization.k8s.io/v1/ClusterRole": { model: ClusterRole, module: "kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole", type: "IClusterRole" },
  "rbac.authorization.k8s.io/v1/ClusterRoleBinding": {
    model: ClusterRoleBinding,
    module: "kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding",
    type: "IClusterRoleBinding"
  }
}

export const kindKey = (object: KubeObject): string => `${object.apiVersion}/${object.kind}`

/** What the bench measured for one sidecar (bench/sidecar, README "Benchmarks"). */
export const sidecarMeasured = { idleRssBytes: 121e6, peakRssBytes: 280e6 } as const

/** One mesh sidecar container, its environment and the configuration it would load. */
export interface SidecarView {
  readonly pod: PodTemplate
  readonly container: IContainer
  readonly init: boolean
  readonly where: string
  readonly env: Record<string, string>
  /** The configuration the sidecar's own loader makes of the ConfigMap file, the environment and the flags. */
  readonly config: SidecarConfig | undefined
  readonly configProblems: ReadonlyArray<string>
}

export interface Context {
  readonly objects: ReadonlyArray<KubeObject>
  readonly pods: ReadonlyArray<PodTemplate>
  readonly sidecars: ReadonlyArray<SidecarView>
}

const where = (pod: PodTemplate, container?: IContainer): string => `${nameOf(pod.owner)}${container === undefined ? "" : ` container ${container.name}`}`

/** Loads a sidecar's configuration as `iip-mesh sidecar` would in that container. */
const viewSidecar = (pod: PodTemplate, container: IContainer, init: boolean, objects: ReadonlyArray<KubeObject>): SidecarView => {
  const env = effectiveEnv(pod, container, objects)
  const args = container.args ?? []
  const flags = parseFlags(args[0] === "sidecar" ? args.slice(1) : args)
  const problems: Array<string> = []
  if (container.command !== undefined) problems.push("the image's entrypoint is replaced (command); the checks expect args: [sidecar, ...]")
  if (args[0] !== "sidecar") problems.push(`args start with ${JSON.stringify(args[0])}, not "sidecar"`)
  const configPath = flags.get("--config")?.at(-1) ?? env["IIP_MESH_CONFIG"]
  let config: SidecarConfig | undefined
  const dir = mkdtempSync(join(tmpdir(), "iip-mesh-deploy-"))
  try {
    const sourceEnv: Record<string, string> = { ...env }
    if (configPath !== undefined) {
      const file = fileFromConfigMap(pod, container, configPath, objects)
      if ("missing" in file) problems.push(`config file: ${file.missing}`)
      else {
        const local = join(dir, "sidecar.json")
        writeFileSync(local, file.content)
        sourceEnv["IIP_MESH_CONFIG"] = local
        flags.delete("--config")
      }
    }
    if (problems.length === 0) {
      const loaded = loadSidecarConfig({ flags, env: sourceEnv })
      if (Result.isFailure(loaded)) problems.push(...loaded.failure.problems)
      else config = loaded.success
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  return { pod, container, init, where: where(pod, container), env, config, configProblems: problems }
}

export const makeContext = (objects: ReadonlyArray<KubeObject>): Context => {
  const pods = podTemplates(objects)
  const sidecars = pods.flatMap((pod) =>
    containersOf(pod).flatMap(({ container, init }) => (isMeshSidecar(container) ? [viewSidecar(pod, container, init, objects)] : []))
  )
  return { objects, pods, sidecars }
}

export type Check = (context: Context) => ReadonlyArray<Problem>

const problem = (check: CheckId, at: string, message: string): Problem => ({ check, where: at, message })

/** Types and enums (kubernetes-models), and only the kinds we know. */
const schema: Check = ({ objects }) =>
  objects.flatMap((object) => {
    const known = knownKinds[kindKey(object)]
    if (known === undefined) return [problem("schema", nameOf(object), `${kindKey(object)} is not a kind these checks know; add it to knownKinds`)]
    if (typeof object.metadata?.name !== "string" || object.metadata.name === "") return [problem("schema", nameOf(object), "metadata.name is missing")]
    try {
      new known.model(object as never).validate()
      return []
    } catch (error) {
      return [problem("schema", nameOf(object), error instanceof Error ? error.message : String(error))]
    }
  })

/** A workload's selector picks its own template: matchLabels only, each label on the template. */
const selectors: Check = ({ pods }) =>
  pods.flatMap((pod) => {
    const matchLabels = pod.selector?.matchLabels ?? {}
    const out: Array<Problem> = []
    if (Object.keys(matchLabels).length === 0) out.push(problem("selectors", nameOf(pod.owner), "spec.selector.matchLabels is empty"))
    if ((pod.selector?.matchExpressions ?? []).length > 0) out.push(problem("selectors", nameOf(pod.owner), "matchExpressions are not checked here; use matchLabels"))
    if (!labelsMatch(matchLabels, pod.template.metadata?.labels)) {
      out.push(
        problem("selectors", nameOf(pod.owner), `selector ${JSON.stringify(matchLabels)} does not match the template's labels ${JSON.stringify(pod.template.metadata?.labels ?? {})}`)
      )
    }
    return out
  })

/** Every Service has a selector and selects at least one workload's pods in its namespace. */
const serviceSelects: Check = ({ objects, pods }) =>
  objects.flatMap((object) => {
    if (object.kind !== "Service") return []
    const selector = (object as unknown as IService).spec?.selector
    if (selector === undefined || Object.keys(selector).length === 0) return [problem("service-selects", nameOf(object), "has no selector")]
    return selectedPods(object, pods).length === 0 ? [problem("service-selects", nameOf(object), `selector ${JSON.stringify(selector)} selects no workload`)] : []
  })

/** Each Service port's targetPort is a port (by name or number, same protocol) of every pod it selects. */
const targetPorts: Check = ({ objects, pods }) =>
  objects.flatMap((object) => {
    if (object.kind !== "Service") return []
    const service = object as unknown as IService
    return selectedPods(object, pods).flatMap((pod) =>
      (service.spec?.ports ?? []).flatMap((port) => {
        const target = port.targetPort ?? port.port
        const found = findPort(target, runningContainers(pod))
        if (found === undefined) return [problem("target-ports", nameOf(object), `port ${port.name ?? port.port}: targetPort ${JSON.stringify(target)} is no container port of ${nameOf(pod.owner)}`)]
        if ((found.protocol ?? "TCP") !== (port.protocol ?? "TCP")) {
          return [problem("target-ports", nameOf(object), `port ${port.name ?? port.port} is ${port.protocol ?? "TCP"}, container port ${found.name ?? found.containerPort} is ${found.protocol ?? "TCP"}`)]
        }
        return []
      })
    )
  })

/** IANA service names: 1-15 characters, a-z 0-9 and '-', at least one letter, no '--', no '-' at either end. */
export const portNameProblem = (name: string): string | undefined => {
  if (name.length > 15) return `port name ${JSON.stringify(name)} is ${name.length} characters, at most 15`
  if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(name)) return `port name ${JSON.stringify(name)} must be a-z, 0-9 and '-', not starting or ending with '-'`
  if (!/[a-z]/.test(name)) return `port name ${JSON.stringify(name)} must contain a letter`
  if (name.includes("--")) return `port name ${JSON.stringify(name)} must not contain '--'`
  return undefined
}

const portNames: Check = ({ objects, pods }) => [
  ...pods.flatMap((pod) => {
    const seen = new Set<string>()
    return containersOf(pod).flatMap(({ container }) =>
      (container.ports ?? []).flatMap((port) => {
        if (port.name === undefined) return []
        const bad = portNameProblem(port.name)
        if (bad !== undefined) return [problem("port-names", where(pod, container), bad)]
        if (seen.has(port.name)) return [problem("port-names", where(pod, container), `port name ${port.name} is used twice in the pod`)]
        seen.add(port.name)
        return []
      })
    )
  }),
  ...objects.flatMap((object) => {
    if (object.kind !== "Service") return []
    const ports = (object as unknown as IService).spec?.ports ?? []
    return ports.flatMap((port) => {
      if (port.name === undefined) return ports.length > 1 ? [problem("port-names", nameOf(object), `port ${port.port} needs a name (the Service has several)`)] : []
      const bad = portNameProblem(port.name)
      return bad === undefined ? [] : [problem("port-names", nameOf(object), bad)]
    })
  })
]

const ruleAllows = (rule: IPolicyRule, group: string, resource: string, verb: string): boolean =>
  (rule.apiGroups ?? []).some((g) => g === group || g === "*") &&
  (rule.resources ?? []).some((r) => r === resource || r === "*") &&
  rule.verbs.some((v) => v === verb || v === "*") &&
  (rule.resourceNames ?? []).length === 0

interface Binding {
  readonly roleRef: { readonly kind: string; readonly name: string }
  readonly subjects?: ReadonlyArray<{ readonly kind: string; readonly name: string; readonly namespace?: string }>
}

/** The rules a binding grants, or undefined when its role does not exist. */
const rulesOf = (object: KubeObject, objects: ReadonlyArray<KubeObject>): ReadonlyArray<IPolicyRule> | undefined => {
  const binding = object as unknown as Binding
  const role = objects.find(
    (o) =>
      o.kind === binding.roleRef.kind &&
      o.metadata.name === binding.roleRef.name &&
      (binding.roleRef.kind === "ClusterRole" || namespaceOf(o) === namespaceOf(object))
  )
  return role === undefined ? undefined : ((role["rules"] ?? []) as ReadonlyArray<IPolicyRule>)
}

/** Whether a ServiceAccount may do `verb` on endpointslices in `namespace`. */
const allowed = (objects: ReadonlyArray<KubeObject>, account: { name: string; namespace: string }, namespace: string, verb: string, group: string, resource: string): boolean =>
  objects.some((object) => {
    const binding = object as unknown as Binding
    const applies = (object.kind === "RoleBinding" && namespaceOf(object) === namespace) || object.kind === "ClusterRoleBinding"
    if (!applies) return false
    const forAccount = (binding.subjects ?? []).some((s) => s.kind === "ServiceAccount" && s.name === account.name && s.namespace === account.namespace)
    return forAccount && (rulesOf(object, objects) ?? []).some((rule) => ruleAllows(rule, group, resource, verb))
  })

/**
 * RBAC covers what the sidecar calls: for each sidecar whose configuration watches Kubernetes
 * Services, its pod mounts a token of a ServiceAccount that exists and may list and watch
 * EndpointSlices in each namespace it watches (src/discovery/kubernetesSource.ts: an informer
 * lists, then watches). Bindings must name roles that exist.
 */
const rbac: Check = ({ objects, sidecars }) => [
  ...objects.flatMap((object) => {
    if (object.kind !== "RoleBinding" && object.kind !== "ClusterRoleBinding") return []
    const binding = object as unknown as Binding
    const out: Array<Problem> = []
    if (rulesOf(object, objects) === undefined) out.push(problem("rbac", nameOf(object), `refers to ${binding.roleRef.kind} ${binding.roleRef.name}, which does not exist`))
    for (const subject of binding.subjects ?? []) {
      if (subject.kind !== "ServiceAccount") continue
      if (subject.namespace === undefined) out.push(problem("rbac", nameOf(object), `subject ServiceAccount ${subject.name} has no namespace`))
      else if (!objects.some((o) => o.kind === "ServiceAccount" && o.metadata.name === subject.name && namespaceOf(o) === subject.namespace)) {
        out.push(problem("rbac", nameOf(object), `subject ServiceAccount ${subject.namespace}/${subject.name} does not exist`))
      }
    }
    return out
  }),
  ...sidecars.flatMap((sidecar) => {
    // What it watches, per namespace: EndpointSlices (--kubernetes), HTTPRoutes (--kubernetes-routes).
    const watched = [
      ...Object.values(sidecar.config?.kubernetes ?? {}).map((entry) => ({ namespace: entry.split("/")[0]!, group: "discovery.k8s.io", resource: "endpointslices" })),
      ...(sidecar.config?.kubernetesRoutes ?? []).map((namespace) => ({ namespace, group: "gateway.networking.k8s.io", resource: "httproutes" }))
    ]
    if (watched.length === 0) return []
    const spec = sidecar.pod.template.spec
    const accountName = spec?.serviceAccountName ?? "default"
    const account = objects.find((o) => o.kind === "ServiceAccount" && o.metadata.name === accountName && namespaceOf(o) === sidecar.pod.namespace) as
      | IServiceAccount
      | undefined
    const out: Array<Problem> = []
    if (account === undefined && accountName !== "default") out.push(problem("rbac", sidecar.where, `ServiceAccount ${accountName} does not exist`))
    if ((spec?.automountServiceAccountToken ?? account?.automountServiceAccountToken ?? true) === false) {
      out.push(problem("rbac", sidecar.where, `watches the API server but the pod mounts no ServiceAccount token (automountServiceAccountToken: false)`))
    }
    const asked = new Set(watched.map((w) => JSON.stringify(w)))
    for (const { namespace, group, resource } of [...asked].map((w) => JSON.parse(w) as (typeof watched)[number])) {
      for (const verb of ["list", "watch"]) {
        if (!allowed(objects, { name: accountName, namespace: sidecar.pod.namespace }, namespace, verb, group, resource)) {
          out.push(problem("rbac", sidecar.where, `ServiceAccount ${sidecar.pod.namespace}/${accountName} may not ${verb} ${group} ${resource} in namespace ${namespace}`))
        }
      }
    }
    return out
  })
]

/**
 * An HTTPRoute attaches to a Service of these manifests, and each backendRef is a Service of them
 * or a version of its parent (`<parent>-<version>`: the subset the sidecar sends it to,
 * src/sidecar/httpRoutes.ts); some sidecar watches its namespace's HTTPRoutes.
 */
const httpRoutes: Check = ({ objects, sidecars }) =>
  objects.flatMap((object) => {
    if (object.kind !== "HTTPRoute") return []
    const route = object as unknown as HttpRouteObject
    const namespace = namespaceOf(object)
    const serviceExists = (name: string | undefined, ns: string) => objects.some((o) => o.kind === "Service" && o.metadata.name === name && namespaceOf(o) === ns)
    const out: Array<Problem> = []
    const parents = (route.spec?.parentRefs ?? []).filter((ref) => ref.kind === "Service")
    for (const parent of parents) {
      const parentNamespace = parent.namespace ?? namespace
      if (!serviceExists(parent.name, parentNamespace)) out.push(problem("httproutes", nameOf(object), `parentRef Service ${parentNamespace}/${parent.name ?? ""} does not exist`))
      for (const rule of route.spec?.rules ?? []) {
        for (const ref of rule.backendRefs ?? []) {
          const version = ref.name?.startsWith(`${parent.name ?? ""}-`) === true
          if (!version && !serviceExists(ref.name, ref.namespace ?? namespace)) out.push(problem("httproutes", nameOf(object), `backendRef ${ref.name ?? ""} is neither a Service nor a version of ${parent.name ?? ""}`))
        }
      }
    }
    if (!sidecars.some((sidecar) => (sidecar.config?.kubernetesRoutes ?? []).includes(namespace))) out.push(problem("httproutes", nameOf(object), `no sidecar watches the HTTPRoutes of namespace ${namespace} (--kubernetes-routes)`))
    return out
  })

/** Every ConfigMap a pod refers to (volumes, env, envFrom) exists, with the keys it names; volume mounts name volumes. */
const configRefs: Check = ({ objects, pods }) =>
  pods.flatMap((pod) => {
    const out: Array<Problem> = []
    const exists = (kind: "ConfigMap" | "Secret", name: string | undefined): KubeObject | undefined => {
      const found = objects.find((o) => o.kind === kind && o.metadata.name === name && namespaceOf(o) === pod.namespace)
      const provided = operatorProvided.find((o) => o.kind === kind && o.name === name)
      return found ?? (provided === undefined ? undefined : { apiVersion: "v1", kind, metadata: { name: provided.name, namespace: pod.namespace }, data: Object.fromEntries(provided.keys.map((key) => [key, ""])) })
    }
    const keys = (object: KubeObject | undefined): ReadonlySet<string> =>
      new Set([...Object.keys((object?.["data"] ?? {}) as object), ...Object.keys((object?.["binaryData"] ?? object?.["stringData"] ?? {}) as object)])
    const volumes = pod.template.spec?.volumes ?? []
    for (const volume of volumes) {
      const sources = [
        ...(volume.configMap === undefined ? [] : [{ kind: "ConfigMap" as const, ref: volume.configMap }]),
        ...(volume.secret === undefined ? [] : [{ kind: "Secret" as const, ref: { name: volume.secret.secretName, items: volume.secret.items, optional: volume.secret.optional } }]),
        ...(volume.projected?.sources ?? []).flatMap((s) => [
          ...(s.configMap === undefined ? [] : [{ kind: "ConfigMap" as const, ref: s.configMap }]),
          ...(s.secret === undefined ? [] : [{ kind: "Secret" as const, ref: s.secret }])
        ])
      ]
      for (const { kind, ref } of sources) {
        const found = exists(kind, ref.name)
        if (found === undefined) {
          if (ref.optional !== true) out.push(problem("config-refs", nameOf(pod.owner), `volume ${volume.name}: ${kind} ${ref.name} does not exist`))
          continue
        }
        for (const item of ref.items ?? []) {
          if (!keys(found).has(item.key)) out.push(problem("config-refs", nameOf(pod.owner), `volume ${volume.name}: ${kind} ${ref.name} has no key ${item.key}`))
        }
      }
    }
    for (const { container } of containersOf(pod)) {
      for (const mount of container.volumeMounts ?? []) {
        if (!volumes.some((v) => v.name === mount.name)) out.push(problem("config-refs", where(pod, container), `mounts volume ${mount.name}, which the pod does not have`))
      }
      for (const variable of container.env ?? []) {
        const ref = variable.valueFrom?.configMapKeyRef ?? variable.valueFrom?.secretKeyRef
        if (ref === undefined) continue
        const kind = variable.valueFrom?.configMapKeyRef === undefined ? "Secret" : "ConfigMap"
        const found = exists(kind, ref.name)
        if (found === undefined ? ref.optional !== true : !keys(found).has(ref.key) && ref.optional !== true) {
          out.push(problem("config-refs", where(pod, container), `env ${variable.name}: ${kind} ${ref.name}${found === undefined ? " does not exist" : ` has no key ${ref.key}`}`))
        }
      }
      for (const source of container.envFrom ?? []) {
        const ref = source.configMapRef ?? source.secretRef
        const kind = source.configMapRef === undefined ? "Secret" : "ConfigMap"
        if (ref !== undefined && exists(kind, ref.name) === undefined && ref.optional !== true) {
          out.push(problem("config-refs", where(pod, container), `envFrom: ${kind} ${ref.name} does not exist`))
        }
      }
    }
    return out
  })

const settingEnvNames = new Set<string>([...settings.map((s) => s.env), "IIP_MESH_CONFIG"])

/** IIP_MESH_* variables are settings the sidecar has (src/config/settings.ts); no variable is set twice. */
const envNames: Check = ({ pods }) =>
  pods.flatMap((pod) =>
    containersOf(pod).flatMap(({ container }) => {
      const names = (container.env ?? []).map((v) => v.name)
      return [
        ...names
          .filter((name) => name.startsWith("IIP_MESH_") && !settingEnvNames.has(name))
          .map((name) => problem("env-names", where(pod, container), `${name} is not a setting of the sidecar (src/config/settings.ts)`)),
        ...names.filter((name, i) => names.indexOf(name) !== i).map((name) => problem("env-names", where(pod, container), `${name} is set twice; the last one wins`))
      ]
    })
  )

/**
 * $(NAME) references resolve: in an env value, to a variable defined before it in the same
 * container (Kubernetes leaves any other reference as the literal text); in command and args, to
 * any of the container's variables.
 */
const envRefs: Check = ({ pods, objects }) =>
  pods.flatMap((pod) =>
    containersOf(pod).flatMap(({ container }) => {
      const out: Array<Problem> = []
      const defined = new Set<string>(Object.keys(effectiveEnv(pod, { ...container, env: [] }, objects)))
      for (const variable of container.env ?? []) {
        for (const name of variableReferences(variable.value ?? "")) {
          if (!defined.has(name)) out.push(problem("env-refs", where(pod, container), `${variable.name} refers to $(${name}), which is not defined before it; it stays the literal "$(${name})"`))
        }
        defined.add(variable.name)
      }
      for (const part of [...(container.command ?? []), ...(container.args ?? [])]) {
        for (const name of variableReferences(part)) {
          if (!defined.has(name)) out.push(problem("env-refs", where(pod, container), `command/args refer to $(${name}), which the container does not define`))
        }
      }
      return out
    })
  )

const probeKinds = ["startupProbe", "readinessProbe", "livenessProbe"] as const

const probePort = (probe: IProbe): number | string | undefined => probe.httpGet?.port ?? probe.tcpSocket?.port ?? probe.grpc?.port

/** Probes (and lifecycle hooks) hit ports the container declares; only containers that keep running have probes. */
const probes: Check = ({ pods }) =>
  pods.flatMap((pod) =>
    containersOf(pod).flatMap(({ container, init }) => {
      const out: Array<Problem> = []
      for (const kind of probeKinds) {
        const probe = container[kind]
        if (probe === undefined) continue
        if (init && !isNativeSidecar(container, init)) out.push(problem("probes", where(pod, container), `${kind} on an init container that is not a sidecar (the API server rejects it)`))
        const port = probePort(probe)
        if (port === undefined) {
          if (probe.exec === undefined) out.push(problem("probes", where(pod, container), `${kind} has no handler`))
          continue
        }
        if (findPort(port, [container]) === undefined) out.push(problem("probes", where(pod, container), `${kind} port ${JSON.stringify(port)} is not a port of this container`))
        if (probe.httpGet !== undefined && !(probe.httpGet.path ?? "/").startsWith("/")) out.push(problem("probes", where(pod, container), `${kind} path must start with /`))
      }
      for (const hook of [container.lifecycle?.preStop, container.lifecycle?.postStart]) {
        const port = hook?.httpGet?.port
        if (port !== undefined && findPort(port, [container]) === undefined) out.push(problem("probes", where(pod, container), `lifecycle hook port ${JSON.stringify(port)} is not a port of this container`))
      }
      return out
    })
  )

const httpProbe = (probe: IProbe | undefined): { path: string; port: number | string } | undefined =>
  probe?.httpGet === undefined ? undefined : { path: probe.httpGet.path ?? "/", port: probe.httpGet.port }

/**
 * The sidecar runs as a native sidecar: an init container with restartPolicy Always (it starts
 * before the app, stops after it, and does not keep a Job alive), with a startup probe on /ready
 * (so the app starts once the sidecar is up), readiness on /ready and liveness on /health.
 */
const nativeSidecar: Check = ({ sidecars }) =>
  sidecars.flatMap((sidecar) => {
    const out: Array<Problem> = []
    if (!isNativeSidecar(sidecar.container, sidecar.init)) {
      out.push(problem("native-sidecar", sidecar.where, sidecar.init ? "is an init container without restartPolicy: Always: it would never finish and the app would never start" : "is an app container; make it an initContainers entry with restartPolicy: Always"))
    }
    const expected = [
      ["startupProbe", "/ready"],
      ["readinessProbe", "/ready"],
      ["livenessProbe", "/health"]
    ] as const
    for (const [kind, path] of expected) {
      const probe = httpProbe(sidecar.container[kind])
      if (probe?.path !== path) out.push(problem("native-sidecar", sidecar.where, `${kind} must be an HTTP GET of ${path} on the admin port`))
    }
    return out
  })

/** The sidecar's own loader accepts its configuration (ConfigMap file + environment + flags). */
const sidecarConfig: Check = ({ sidecars }) =>
  sidecars.flatMap((sidecar) => sidecar.configProblems.map((message) => problem("sidecar-config", sidecar.where, message)))

/**
 * The configuration agrees with the pod: admin and inbound listen beyond loopback on the ports
 * named "admin" and "mesh" (probes, Prometheus and peers come from outside the pod); outbound
 * stays on loopback (anyone reaching it would call as this service); the app address is on
 * loopback, on a port an app container declares and listens on (its PORT); an app's SIDECAR_URL
 * is the outbound address.
 */
const sidecarWiring: Check = ({ sidecars, objects }) =>
  sidecars.flatMap((sidecar) => {
    const config = sidecar.config
    if (config === undefined) return []
    const out: Array<Problem> = []
    const add = (message: string) => out.push(problem("sidecar-wiring", sidecar.where, message))
    const admin = splitHostPort(config.admin)
    const inbound = splitHostPort(config.inbound)
    const outbound = splitHostPort(config.outbound)
    if (isLoopback(admin.host)) add(`admin listens on ${config.admin}: probes and Prometheus reach the pod's IP, set it to 0.0.0.0:${admin.port}`)
    if (findPort("admin", [sidecar.container])?.containerPort !== admin.port) add(`admin listens on port ${admin.port}, the container port named "admin" is ${findPort("admin", [sidecar.container])?.containerPort}`)
    if (isLoopback(inbound.host)) add(`inbound listens on ${config.inbound}: other sidecars reach the pod's IP`)
    if (findPort("mesh", [sidecar.container])?.containerPort !== inbound.port) add(`inbound listens on port ${inbound.port}, the container port named "mesh" is ${findPort("mesh", [sidecar.container])?.containerPort}`)
    if (!isLoopback(outbound.host)) add(`outbound listens on ${config.outbound}: keep it on loopback, or anyone reaching the pod calls as this service`)
    if (!isLoopback(splitHostPort(config.adminControl).host)) add(`adminControl listens on ${config.adminControl}: keep the control listener on loopback (kubectl port-forward reaches it)`)
    const apps = runningContainers(sidecar.pod).filter((c) => !isMeshSidecar(c))
    if (config.app !== null) {
      const app = splitHostPort(config.app)
      if (!isLoopback(app.host)) add(`app ${config.app} is not on loopback: the app is in this pod`)
      const listener = apps.find((c) => findPort(app.port, [c]) !== undefined)
      if (listener === undefined) add(`app port ${app.port} is no port of the pod's app containers`)
      else {
        const port = effectiveEnv(sidecar.pod, listener, objects)["PORT"]
        if (port !== undefined && Number(port) !== app.port) add(`app is 127.0.0.1:${app.port} but container ${listener.name} listens on PORT=${port}`)
      }
    }
    for (const app of apps) {
      const url = effectiveEnv(sidecar.pod, app, objects)["SIDECAR_URL"]
      if (url === undefined) continue
      const parsed = new URL(url)
      if (!isLoopback(parsed.hostname) || Number(parsed.port || 80) !== outbound.port) add(`container ${app.name} calls ${url}, but outbound is ${config.outbound}`)
    }
    return out
  })

/** The policy document a sidecar reads (its ConfigMap file, parsed as the sidecar parses it), or why not. */
export const policyOf = (sidecar: SidecarView, objects: ReadonlyArray<KubeObject>): { readonly document: PolicyDocument } | { readonly problems: ReadonlyArray<string> } | undefined => {
  const path = sidecar.config?.authzPolicy
  if (path === undefined || path === null) return undefined
  const file = fileFromConfigMap(sidecar.pod, sidecar.container, path, objects)
  if ("missing" in file) return { problems: [`authzPolicy: ${file.missing}`] }
  let parsed: unknown
  try {
    parsed = /\.ya?ml$/i.test(path) ? parseYaml(file.content) : JSON.parse(file.content)
  } catch (error) {
    return { problems: [`authzPolicy ${path}: ${error instanceof Error ? error.message : String(error)}`] }
  }
  const document = parsePolicyDocument(parsed)
  return Result.isSuccess(document) ? { document: document.success } : { problems: document.failure.problems.map((p) => `authzPolicy ${path}: ${p}`) }
}

/**
 * The authorization policy a sidecar reads is one (the sidecar's own checks), and every exact
 * identity it allows in the mesh's trust domain, in a namespace of these manifests, is a
 * ServiceAccount there that a pod runs as (a typo would lock the real caller out).
 */
const authzPolicy: Check = ({ sidecars, objects, pods }) =>
  sidecars.flatMap((sidecar) => {
    const policy = policyOf(sidecar, objects)
    if (policy === undefined) return []
    if ("problems" in policy) return policy.problems.map((message) => problem("authz-policy", sidecar.where, message))
    const namespaces = new Set(objects.filter((o) => o.kind === "Namespace").map((o) => o.metadata.name))
    const out: Array<Problem> = []
    for (const [service, own] of Object.entries(policy.document.services ?? {})) {
      for (const id of (own.rules ?? []).flatMap((rule) => rule.from).filter((from) => !from.includes("*"))) {
        const match = /^\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(parseSpiffeId(id)?.path ?? "")
        if (parseSpiffeId(id)?.trustDomain !== defaultTrustDomain || match === null || !namespaces.has(match[1]!)) continue
        const [, namespace, account] = match
        const exists = objects.some((o) => o.kind === "ServiceAccount" && o.metadata.name === account && namespaceOf(o) === namespace)
        const used = pods.some((pod) => pod.namespace === namespace && (pod.template.spec?.serviceAccountName ?? "default") === account)
        if (!exists || !used) out.push(problem("authz-policy", sidecar.where, `services.${service} allows ${id}, but no pod runs as ServiceAccount ${namespace}/${account}${exists ? "" : " (it does not exist)"}`))
      }
    }
    return out
  })

/** The Service, its port and the sidecars behind it, for a discovery target. */
const meshTarget = (
  check: CheckId,
  at: string,
  context: Context,
  meshService: string,
  namespace: string,
  name: string,
  portName: string,
  needsHeadless: boolean
): ReadonlyArray<Problem> => {
  const service = context.objects.find((o) => o.kind === "Service" && o.metadata.name === name && namespaceOf(o) === namespace)
  const label = `${meshService} -> Service ${namespace}/${name}`
  if (service === undefined) return [problem(check, at, `${label} does not exist`)]
  const spec = (service as unknown as IService).spec
  const port = spec?.ports?.find((p) => p.name === portName)
  if (port === undefined) return [problem(check, at, `${label} has no port named "${portName}" (discovery reads that port)`)]
  const out: Array<Problem> = []
  if (needsHeadless && spec?.clusterIP !== "None") out.push(problem(check, at, `${label} is not headless: its SRV records would name the cluster IP, not the pods`))
  for (const pod of selectedPods(service, context.pods)) {
    const behind = context.sidecars.find((s) => s.pod === pod)
    const target = findPort(port.targetPort ?? port.port, runningContainers(pod))
    if (behind?.config === undefined) {
      out.push(problem(check, at, `${label} selects ${nameOf(pod.owner)}, which has no working iip-mesh sidecar`))
      continue
    }
    if (target?.containerPort !== splitHostPort(behind.config.inbound).port) out.push(problem(check, at, `${label} port "${portName}" does not reach the inbound port of ${behind.where}`))
    if (behind.config.service !== meshService) out.push(problem(check, at, `${label} selects ${nameOf(pod.owner)}, whose sidecar fronts "${behind.config.service}", not "${meshService}"`))
  }
  return out
}

/**
 * Discovery finds what it is told to: every Kubernetes Service a sidecar watches, and every DNS SRV
 * name it resolves, exists with a port named as discovery expects, reaching the inbound port of
 * sidecars that front the service of that name. Services in front of sidecars are headless with a
 * port named "mesh".
 */
const discovery: Check = (context) => [
  ...context.sidecars.flatMap((sidecar) => [
    ...Object.entries(sidecar.config?.kubernetes ?? {}).flatMap(([meshService, target]) => {
      // NAMESPACE/NAME, or NAMESPACE/NAME+NAME...: version Services that make one service.
      const [namespace, names] = target.split("/") as [string, string]
      return names.split("+").flatMap((name) => meshTarget("discovery", sidecar.where, context, meshService, namespace, name, "mesh", false))
    }),
    ...Object.entries(sidecar.config?.dnsSrv ?? {}).flatMap(([meshService, srv]) => {
      const match = /^_([a-z0-9-]+)\._(tcp|udp)\.([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local\.?$/.exec(srv)
      if (match === null) return [problem("discovery", sidecar.where, `dnsSrv ${meshService}=${srv} is not _PORT._tcp.SERVICE.NAMESPACE.svc.cluster.local`)]
      return meshTarget("discovery", sidecar.where, context, meshService, match[4]!, match[3]!, match[1]!, true)
    })
  ]),
  ...context.objects.flatMap((object) => {
    if (object.kind !== "Service") return []
    const fronts = selectedPods(object, context.pods).some((pod) => context.sidecars.some((s) => s.pod === pod))
    if (!fronts) return []
    const spec = (object as unknown as IService).spec
    return [
      ...(spec?.clusterIP === "None" ? [] : [problem("discovery", nameOf(object), "fronts mesh sidecars but is not headless (clusterIP: None)")]),
      ...((spec?.ports ?? []).some((p) => p.name === "mesh") ? [] : [problem("discovery", nameOf(object), 'fronts mesh sidecars but has no port named "mesh"')])
    ]
  })
]

/**
 * Every Service in front of mesh sidecars names the identity its pods present over mTLS: the label
 * iip-mesh/service-account (which the EndpointSlice controller copies onto the slices --kubernetes
 * reads, src/discovery/kubernetesSource.ts) is the ServiceAccount every selected pod runs as. A
 * wrong one makes every caller refuse those pods (peer_identity); a missing one lets any identity
 * of the trust domain answer for the service.
 */
const meshIdentity: Check = ({ objects, pods, sidecars }) =>
  objects.flatMap((object) => {
    if (object.kind !== "Service") return []
    const fronting = selectedPods(object, pods).filter((pod) => sidecars.some((s) => s.pod === pod))
    if (fronting.length === 0) return []
    const account = object.metadata?.labels?.["iip-mesh/service-account"]
    if (account === undefined) return [problem("mesh-identity", nameOf(object), "fronts mesh sidecars but has no label iip-mesh/service-account naming its pods' ServiceAccount")]
    return fronting.flatMap((pod) => {
      const runsAs = pod.template.spec?.serviceAccountName ?? "default"
      return runsAs === account ? [] : [problem("mesh-identity", nameOf(object), `label iip-mesh/service-account is ${account}, but ${nameOf(pod.owner)} runs as ServiceAccount ${runsAs}`)]
    })
  })

/**
 * The drain fits: on deletion the app's preStop runs (so peers stop picking the pod), the app
 * stops, then the sidecar drains for up to drainTimeoutMs; terminationGracePeriodSeconds must cover
 * preStop + drain + 5 s. Apps that receive mesh traffic have a preStop.
 */
const drain: Check = ({ sidecars }) =>
  sidecars.flatMap((sidecar) => {
    if (sidecar.config === undefined) return []
    const spec = sidecar.pod.template.spec
    const grace = spec?.terminationGracePeriodSeconds ?? 30
    const apps = runningContainers(sidecar.pod).filter((c) => !isMeshSidecar(c))
    const preStop = Math.max(0, ...apps.map(preStopSeconds))
    const drainSeconds = sidecar.config.drainTimeoutMs / 1000
    const out: Array<Problem> = []
    if (grace < preStop + drainSeconds + 5) {
      out.push(problem("drain", nameOf(sidecar.pod.owner), `terminationGracePeriodSeconds ${grace} < app preStop ${preStop} s + sidecar drain ${drainSeconds} s + 5 s: the drain would be killed`))
    }
    if (sidecar.config.app !== null) {
      for (const app of apps.filter((c) => preStopSeconds(c) === 0)) {
        out.push(problem("drain", where(sidecar.pod, app), "has no preStop wait: the app would stop while other sidecars still pick this pod"))
      }
    }
    return out
  })

/** Pod and container security contexts: the restricted Pod Security Standard and a read-only root. */
const security: Check = ({ pods }) =>
  pods.flatMap((pod) => {
    const spec = pod.template.spec
    const podContext = spec?.securityContext
    const out: Array<Problem> = []
    for (const field of ["hostNetwork", "hostPID", "hostIPC"] as const) {
      if (spec?.[field] === true) out.push(problem("security", nameOf(pod.owner), `${field} is on`))
    }
    for (const { container } of containersOf(pod)) {
      const context = container.securityContext
      const add = (message: string) => out.push(problem("security", where(pod, container), message))
      if ((context?.runAsNonRoot ?? podContext?.runAsNonRoot) !== true) add("runAsNonRoot is not true")
      if ((context?.runAsUser ?? podContext?.runAsUser) === 0) add("runs as user 0")
      const seccomp = context?.seccompProfile?.type ?? podContext?.seccompProfile?.type
      if (seccomp !== "RuntimeDefault" && seccomp !== "Localhost") add(`seccompProfile is ${seccomp ?? "unset"}, not RuntimeDefault`)
      if (context?.allowPrivilegeEscalation !== false) add("allowPrivilegeEscalation is not false")
      if (context?.privileged === true) add("is privileged")
      if (context?.readOnlyRootFilesystem !== true) add("readOnlyRootFilesystem is not true")
      if (!(context?.capabilities?.drop ?? []).includes("ALL")) add("does not drop ALL capabilities")
      if ((context?.capabilities?.add ?? []).length > 0) add(`adds capabilities ${context?.capabilities?.add?.join(", ")}`)
    }
    return out
  })

/** Requests and limits of CPU and memory on every container, limits ≥ requests; the sidecar's fit what bench/sidecar measured. */
const resources: Check = ({ pods }) =>
  pods.flatMap((pod) =>
    containersOf(pod).flatMap(({ container }) => {
      const out: Array<Problem> = []
      const add = (message: string) => out.push(problem("resources", where(pod, container), message))
      const requests = container.resources?.requests ?? {}
      const limits = container.resources?.limits ?? {}
      for (const resource of ["cpu", "memory"]) {
        const request = parseQuantity(requests[resource])
        const limit = parseQuantity(limits[resource])
        if (Number.isNaN(request)) add(`no ${resource} request`)
        if (Number.isNaN(limit)) add(`no ${resource} limit`)
        if (limit < request) add(`${resource} limit ${limits[resource]} is below its request ${requests[resource]}`)
      }
      if (isMeshSidecar(container)) {
        if (parseQuantity(requests["memory"]) < sidecarMeasured.idleRssBytes) add(`memory request ${requests["memory"]} is below the sidecar's idle RSS (121 MB, bench/sidecar)`)
        if (parseQuantity(limits["memory"]) < sidecarMeasured.peakRssBytes) add(`memory limit ${limits["memory"]} is below the sidecar's peak RSS (280 MB, bench/sidecar): it would be OOM-killed under load`)
      }
      return out
    })
  )

/** Pods with a sidecar are scraped: prometheus.io/scrape "true", /metrics, on the sidecar's admin port. */
const prometheus: Check = ({ sidecars }) =>
  sidecars.flatMap((sidecar) => {
    const annotations = sidecar.pod.template.metadata?.annotations ?? {}
    const at = nameOf(sidecar.pod.owner)
    const out: Array<Problem> = []
    if (annotations["prometheus.io/scrape"] !== "true") out.push(problem("prometheus", at, 'prometheus.io/scrape is not "true"'))
    if (annotations["prometheus.io/path"] !== "/metrics") out.push(problem("prometheus", at, "prometheus.io/path is not /metrics"))
    const port = Number(annotations["prometheus.io/port"])
    if (sidecar.config !== undefined && port !== splitHostPort(sidecar.config.admin).port) {
      out.push(problem("prometheus", at, `prometheus.io/port ${annotations["prometheus.io/port"]} is not the sidecar's admin port ${splitHostPort(sidecar.config.admin).port}`))
    }
    if (findPort(port, [sidecar.container]) === undefined) out.push(problem("prometheus", at, `prometheus.io/port ${annotations["prometheus.io/port"]} is not a port of the sidecar container`))
    return out
  })

const samplers = new Set([
  "always_on",
  "always_off",
  "traceidratio",
  "parentbased_always_on",
  "parentbased_always_off",
  "parentbased_traceidratio"
])

interface CollectorConfig {
  readonly receivers?: Record<string, { protocols?: Record<string, { endpoint?: string } | null> } | null>
  readonly processors?: Record<string, unknown>
  readonly exporters?: Record<string, { endpoint?: string } | null>
  readonly extensions?: Record<string, { endpoint?: string } | null>
  readonly service?: { extensions?: ReadonlyArray<string>; pipelines?: Record<string, { receivers?: ReadonlyArray<string>; processors?: ReadonlyArray<string>; exporters?: ReadonlyArray<string> }> }
}

interface Collector {
  readonly pod: PodTemplate
  readonly container: IContainer
  readonly config: CollectorConfig | undefined
  readonly problem: string | undefined
}

/** OpenTelemetry Collectors in the pods: the container, and its configuration (from a ConfigMap file named by --config). */
const collectors = (context: Context): ReadonlyArray<Collector> =>
  context.pods.flatMap((pod) =>
    runningContainers(pod).flatMap((container): ReadonlyArray<Collector> => {
      if (!imageName(container.image ?? "").startsWith("opentelemetry-collector")) return []
      const args = container.args ?? []
      const at = args.findIndex((a) => a === "--config" || a.startsWith("--config="))
      const path = at === -1 ? undefined : args[at]!.includes("=") ? args[at]!.slice("--config=".length) : args[at + 1]
      if (path === undefined) return [{ pod, container, config: undefined, problem: "has no --config" }]
      const file = fileFromConfigMap(pod, container, path, context.objects)
      if ("missing" in file) return [{ pod, container, config: undefined, problem: file.missing }]
      return [{ pod, container, config: parseYaml(file.content) as CollectorConfig, problem: undefined }]
    })
  )

/** A "host:port" endpoint in a pod's namespace: a Service and its port, or what is wrong. */
const endpointProblem = (endpoint: string, namespace: string, context: Context): string | undefined => {
  const { host, port } = splitHostPort(endpoint.replace(/^[a-z]+:\/\//, "").replace(/\/.*$/, ""))
  const service = serviceByHost(host, namespace, context.objects)
  if (service === undefined) return `${endpoint}: no Service ${host} in namespace ${namespace}`
  if (!((service as unknown as IService).spec?.ports ?? []).some((p) => p.port === port)) return `${endpoint}: Service ${host} has no port ${port}`
  return undefined
}

/**
 * Traces reach a backend: OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT names a Service port that leads to
 * an OpenTelemetry Collector receiver of the configured protocol; sampler and protocol are values
 * the SDK knows; each collector's pipelines use components it defines, its receivers listen beyond
 * loopback on declared ports, and its exporters name Service ports that exist. Jaeger v2 listens
 * beyond localhost only with JAEGER_LISTEN_HOST.
 */
const tracing: Check = (context) => {
  const out: Array<Problem> = []
  const found = collectors(context)
  for (const pod of context.pods) {
    for (const container of runningContainers(pod)) {
      const env = effectiveEnv(pod, container, context.objects)
      const at = where(pod, container)
      const endpoint = env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] ?? env["OTEL_EXPORTER_OTLP_ENDPOINT"]
      const protocol = env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] ?? env["OTEL_EXPORTER_OTLP_PROTOCOL"] ?? "http/protobuf"
      const sampler = env["OTEL_TRACES_SAMPLER"]
      if (sampler !== undefined && !samplers.has(sampler)) out.push(problem("tracing", at, `OTEL_TRACES_SAMPLER ${sampler} is not one of the standard samplers the sidecar reads`))
      if (!["grpc", "http/protobuf", "http/json"].includes(protocol)) out.push(problem("tracing", at, `OTLP protocol ${protocol} is not grpc, http/protobuf or http/json`))
      if (endpoint !== undefined) {
        let url: URL | undefined
        try {
          url = new URL(endpoint)
        } catch {
          out.push(problem("tracing", at, `OTLP endpoint ${endpoint} is not a URL`))
        }
        if (url !== undefined) {
          const port = Number(url.port || (protocol === "grpc" ? 4317 : 4318))
          const service = serviceByHost(url.hostname, pod.namespace, context.objects)
          const servicePort = ((service as unknown as IService | undefined)?.spec?.ports ?? []).find((p) => p.port === port)
          if (service === undefined) out.push(problem("tracing", at, `OTLP endpoint ${endpoint}: no Service ${url.hostname} in namespace ${pod.namespace}`))
          else if (servicePort === undefined) out.push(problem("tracing", at, `OTLP endpoint ${endpoint}: Service ${url.hostname} has no port ${port}`))
          else {
            for (const target of selectedPods(service, context.pods)) {
              const collector = found.find((c) => c.pod === target)
              const containerPort = findPort(servicePort.targetPort ?? servicePort.port, runningContainers(target))?.containerPort
              const receiver = collector?.config?.receivers?.["otlp"]?.protocols?.[protocol === "grpc" ? "grpc" : "http"]?.endpoint
              if (collector?.config !== undefined && (receiver === undefined || splitHostPort(receiver).port !== containerPort)) {
                out.push(problem("tracing", at, `OTLP endpoint ${endpoint} (${protocol}) reaches port ${containerPort} of ${nameOf(target.owner)}, where no OTLP ${protocol === "grpc" ? "gRPC" : "HTTP"} receiver listens`))
              }
            }
          }
        }
      }
      if (imageName(container.image ?? "") === "jaeger" && (env["JAEGER_LISTEN_HOST"] === undefined || isLoopback(env["JAEGER_LISTEN_HOST"]))) {
        out.push(problem("tracing", at, "Jaeger v2 listens on localhost unless JAEGER_LISTEN_HOST says otherwise: the collector could not reach it"))
      }
    }
  }
  for (const collector of found) {
    const at = where(collector.pod, collector.container)
    if (collector.config === undefined) {
      out.push(problem("tracing", at, `collector configuration: ${collector.problem}`))
      continue
    }
    const config = collector.config
    for (const [name, pipeline] of Object.entries(config.service?.pipelines ?? {})) {
      for (const section of ["receivers", "processors", "exporters"] as const) {
        for (const component of pipeline[section] ?? []) {
          if (!(component in (config[section] ?? {}))) out.push(problem("tracing", at, `pipeline ${name} uses ${section.slice(0, -1)} ${component}, which is not defined`))
        }
      }
    }
    for (const extension of config.service?.extensions ?? []) {
      if (!(extension in (config.extensions ?? {}))) out.push(problem("tracing", at, `extension ${extension} is not defined`))
    }
    const listeners = [
      ...Object.values(config.receivers ?? {}).flatMap((r) => Object.values(r?.protocols ?? {}).map((p) => p?.endpoint)),
      ...Object.values(config.extensions ?? {}).map((e) => e?.endpoint)
    ]
    for (const endpoint of listeners) {
      if (endpoint === undefined) {
        out.push(problem("tracing", at, "a receiver or extension has no endpoint: the collector's default is localhost, unreachable from other pods"))
        continue
      }
      const { host, port } = splitHostPort(endpoint)
      if (isLoopback(host)) out.push(problem("tracing", at, `${endpoint} is on loopback, unreachable from other pods`))
      if (findPort(port, [collector.container]) === undefined) out.push(problem("tracing", at, `listens on ${endpoint}, port ${port} is not a port of the container`))
    }
    for (const [name, exporter] of Object.entries(config.exporters ?? {})) {
      if (exporter?.endpoint === undefined) continue
      const bad = endpointProblem(exporter.endpoint, collector.pod.namespace, context)
      if (bad !== undefined) out.push(problem("tracing", at, `exporter ${name}: ${bad}`))
    }
  }
  return out
}

/** Every image is pinned to a tag (not latest) or a digest. */
const images: Check = ({ pods }) =>
  pods.flatMap((pod) =>
    containersOf(pod).flatMap(({ container }) => {
      const tag = imageTag(container.image ?? "")
      if (container.image === undefined) return [problem("images", where(pod, container), "has no image")]
      if (tag === undefined || tag === "latest") return [problem("images", where(pod, container), `image ${container.image} is not pinned to a version`)]
      return []
    })
  )

export const checks: Record<Exclude<CheckId, "unknown-fields">, Check> = {
  schema,
  selectors,
  "service-selects": serviceSelects,
  "target-ports": targetPorts,
  "port-names": portNames,
  rbac,
  "config-refs": configRefs,
  "env-names": envNames,
  "env-refs": envRefs,
  probes,
  "native-sidecar": nativeSidecar,
  "sidecar-config": sidecarConfig,
  "sidecar-wiring": sidecarWiring,
  "authz-policy": authzPolicy,
  discovery,
  httproutes: httpRoutes,
  "mesh-identity": meshIdentity,
  drain,
  security,
  resources,
  prometheus,
  tracing,
  images,
  identity
}

/** Every check but the typed one (typedCheck.ts, which batches renders into one compiler run). */
export const runChecks = (objects: ReadonlyArray<KubeObject>): ReadonlyArray<Problem> => {
  const context = makeContext(objects)
  return Object.values(checks).flatMap((check) => check(context))
}
