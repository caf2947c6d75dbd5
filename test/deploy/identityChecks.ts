// The "identity" check of manifestChecks.ts (issue 15): the workload identities are wired up.
// - Each identity issuer (the sidecar image with args `identity ...`) mounts a token of a
//   ServiceAccount that may create TokenReviews, and its --ca-dir is a Secret volume holding the
//   intermediate, its key and the bundle.
// - Each sidecar with an identityIssuer reaches an issuer through a Service port; its
//   identityTokenFile is a projected ServiceAccount token minted for that issuer's --audience; its
//   trustBundleFile comes from a ConfigMap or Secret.
import { dirname, basename } from "node:path"
import type { IPolicyRule } from "kubernetes-models/rbac.authorization.k8s.io/v1/PolicyRule"
import type { IContainer } from "kubernetes-models/v1/Container"
import type { IService } from "kubernetes-models/v1/Service"
import type { IServiceAccount } from "kubernetes-models/v1/ServiceAccount"
import type { IVolume } from "kubernetes-models/v1/Volume"
import { parseFlags } from "../../src/config/flags.ts"
import { findPort, isIdentityIssuer, type KubeObject, nameOf, namespaceOf, type PodTemplate, runningContainers, selectedPods, serviceByHost, splitHostPort } from "./kube.ts"
import type { Check, Problem } from "./manifestChecks.ts"

/** The audience `iip-mesh identity` checks tokens for unless --audience says otherwise (src/cli/identityIssuer.ts). */
const defaultAudience = "iip-mesh-identity"

const problem = (where: string, message: string): Problem => ({ check: "identity", where, message })
const at = (pod: PodTemplate, container: IContainer) => `${nameOf(pod.owner)} container ${container.name}`

interface Binding {
  readonly roleRef: { readonly kind: string; readonly name: string }
  readonly subjects?: ReadonlyArray<{ readonly kind: string; readonly name: string; readonly namespace?: string }>
}

/** Whether a ServiceAccount may create TokenReviews (a cluster-scoped resource: ClusterRoleBindings only). */
const mayReviewTokens = (objects: ReadonlyArray<KubeObject>, account: { name: string; namespace: string }): boolean =>
  objects.some((object) => {
    if (object.kind !== "ClusterRoleBinding") return false
    const binding = object as unknown as Binding
    if (!(binding.subjects ?? []).some((s) => s.kind === "ServiceAccount" && s.name === account.name && s.namespace === account.namespace)) return false
    const role = objects.find((o) => o.kind === "ClusterRole" && o.metadata.name === binding.roleRef.name)
    return ((role?.["rules"] ?? []) as ReadonlyArray<IPolicyRule>).some((rule) =>
      [rule.apiGroups ?? [], rule.resources ?? [], rule.verbs].every((list, i) => list.includes("*") || list.includes(["authentication.k8s.io", "tokenreviews", "create"][i]!))
    )
  })

/** The volume mounted at `directory` in `container`, if any. */
const volumeAt = (pod: PodTemplate, container: IContainer, directory: string): IVolume | undefined => {
  const mount = (container.volumeMounts ?? []).find((m) => m.mountPath.replace(/\/$/, "") === directory)
  return mount === undefined ? undefined : (pod.template.spec?.volumes ?? []).find((v) => v.name === mount.name)
}

interface Issuer {
  readonly pod: PodTemplate
  readonly container: IContainer
  readonly audience: string
  readonly port: number
}

const issuersOf = (pods: ReadonlyArray<PodTemplate>): ReadonlyArray<Issuer> =>
  pods.flatMap((pod) =>
    runningContainers(pod).filter(isIdentityIssuer).map((container) => {
      const flags = parseFlags((container.args ?? []).slice(1))
      return { pod, container, audience: flags.get("--audience")?.at(-1) ?? defaultAudience, port: splitHostPort(flags.get("--listen")?.at(-1) ?? "127.0.0.1:8443").port }
    })
  )

const checkIssuer = (issuer: Issuer, objects: ReadonlyArray<KubeObject>): Array<Problem> => {
  const out: Array<Problem> = []
  const where = at(issuer.pod, issuer.container)
  const spec = issuer.pod.template.spec
  const accountName = spec?.serviceAccountName ?? "default"
  const account = objects.find((o) => o.kind === "ServiceAccount" && o.metadata.name === accountName && namespaceOf(o) === issuer.pod.namespace) as IServiceAccount | undefined
  if ((spec?.automountServiceAccountToken ?? account?.automountServiceAccountToken ?? true) === false) {
    out.push(problem(where, "mounts no ServiceAccount token: its TokenReview calls need one"))
  }
  if (!mayReviewTokens(objects, { name: accountName, namespace: issuer.pod.namespace })) {
    out.push(problem(where, `ServiceAccount ${issuer.pod.namespace}/${accountName} may not create authentication.k8s.io tokenreviews`))
  }
  const caDir = parseFlags((issuer.container.args ?? []).slice(1)).get("--ca-dir")?.at(-1)
  const volume = caDir === undefined ? undefined : volumeAt(issuer.pod, issuer.container, caDir.replace(/\/$/, ""))
  if (volume?.secret === undefined) out.push(problem(where, `--ca-dir ${caDir ?? "(none)"} is not a mounted Secret`))
  else {
    const paths = volume.secret.items?.map((item) => item.path)
    const missing = ["intermediate.pem", "intermediate.key.pem", "bundle.pem"].filter((file) => paths !== undefined && !paths.includes(file))
    if (missing.length > 0) out.push(problem(where, `--ca-dir ${caDir}: Secret ${volume.secret.secretName} does not project ${missing.join(", ")}`))
  }
  return out
}

export const identity: Check = ({ objects, pods, sidecars }) => {
  const issuers = issuersOf(pods)
  const out = issuers.flatMap((issuer) => checkIssuer(issuer, objects))
  for (const sidecar of sidecars) {
    const config = sidecar.config
    if (config?.identityIssuer == null) continue
    const url = new URL(config.identityIssuer)
    const port = Number(url.port || 443)
    const service = serviceByHost(url.hostname, sidecar.pod.namespace, objects)
    const servicePort = ((service as unknown as IService | undefined)?.spec?.ports ?? []).find((p) => p.port === port)
    const reached = service === undefined || servicePort === undefined
      ? []
      : issuers.filter((issuer) => selectedPods(service, pods).includes(issuer.pod) && findPort(servicePort.targetPort ?? servicePort.port, [issuer.container])?.containerPort === issuer.port)
    if (service === undefined) out.push(problem(sidecar.where, `identityIssuer ${config.identityIssuer}: no Service ${url.hostname} in namespace ${sidecar.pod.namespace}`))
    else if (servicePort === undefined) out.push(problem(sidecar.where, `identityIssuer ${config.identityIssuer}: Service ${url.hostname} has no port ${port}`))
    else if (reached.length === 0) out.push(problem(sidecar.where, `identityIssuer ${config.identityIssuer} reaches no identity issuer listening on the Service's target port`))
    if (config.identityTokenFile !== null) {
      const volume = volumeAt(sidecar.pod, sidecar.container, dirname(config.identityTokenFile))
      const token = volume?.projected?.sources?.find((s) => s.serviceAccountToken?.path === basename(config.identityTokenFile!))?.serviceAccountToken
      if (token === undefined) out.push(problem(sidecar.where, `identityTokenFile ${config.identityTokenFile} is not a projected ServiceAccount token`))
      else {
        for (const issuer of reached) {
          if (token.audience !== issuer.audience) {
            out.push(problem(sidecar.where, `identityTokenFile's audience ${token.audience ?? "(the API server's)"} is not the issuer's --audience ${issuer.audience}`))
          }
        }
      }
    }
    if (config.trustBundleFile !== null) {
      const volume = volumeAt(sidecar.pod, sidecar.container, dirname(config.trustBundleFile))
      const file = basename(config.trustBundleFile)
      const fromSource = (source: { items?: Array<{ path: string }> } | undefined) => source !== undefined && (source.items === undefined || source.items.some((i) => i.path === file))
      const found = fromSource(volume?.configMap) || fromSource(volume?.secret) ||
        (volume?.projected?.sources ?? []).some((s) => fromSource(s.configMap) || fromSource(s.secret))
      if (!found) out.push(problem(sidecar.where, `trustBundleFile ${config.trustBundleFile} is mounted from no ConfigMap or Secret`))
    }
  }
  return out
}
