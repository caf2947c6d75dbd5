// deploy/kubernetes, validated offline (issue 9): every kustomization renders with `kubectl
// kustomize`, every object passes every check of manifestChecks.ts and the typed unknown-field check
// (typedCheck.ts), and the demo is what deploy/README.md says. Each negative fixture under
// fixtures/kubernetes/ is the base or the demo overlay with one thing broken, and must fail the
// check that guards it (and only the checks listed for it); every check has at least one.
import { readdirSync } from "node:fs"
import { join, resolve } from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import type { IDeployment } from "kubernetes-models/apps/v1/Deployment"
import type { IService } from "kubernetes-models/v1/Service"
import { type KubeObject, nameOf, podTemplates, renderKustomization } from "./kube.ts"
import { compilePolicy } from "../../src/identity/policy.ts"
import { defaultTrustDomain } from "../../src/identity/spiffe.ts"
import { checkIds, type CheckId, formatProblems, makeContext, policyOf, type Problem, runChecks } from "./manifestChecks.ts"
import { typedCheck } from "./typedCheck.ts"

const repo = resolve(import.meta.dirname, "../..")
const fixturesDir = join(import.meta.dirname, "fixtures", "kubernetes")

const kustomizations = {
  base: join(repo, "deploy/kubernetes/base"),
  demo: join(repo, "deploy/kubernetes/overlays/demo")
} as const

/**
 * Each fixture: the checks it must fail (all of them, and no others) and a phrase of the message.
 * The typed check (unknown-fields) also reports wrong types and enum values, so it joins schema
 * there; a broken sidecar also breaks what depends on it (a Service's target, discovery).
 */
const fixtures: Record<string, { readonly fails: ReadonlyArray<CheckId>; readonly says: RegExp }> = {
  "schema-enum": { fails: ["schema", "unknown-fields"], says: /imagePullPolicy must be equal to one of the allowed values/ },
  "schema-type": { fails: ["schema", "unknown-fields"], says: /replicas must be integer/ },
  "unknown-field": { fails: ["unknown-fields"], says: /readOnlyRootFileSystem/ },
  "selector-mismatch": { fails: ["selectors"], says: /does not match the template's labels/ },
  "service-selects-nothing": { fails: ["service-selects"], says: /selects no workload/ },
  "target-port-missing": { fails: ["target-ports", "discovery"], says: /targetPort "iip" is no container port/ },
  "port-name-too-long": { fails: ["port-names"], says: /"storefront-page1" is 16 characters/ },
  "rbac-no-watch": { fails: ["rbac"], says: /may not watch discovery\.k8s\.io endpointslices/ },
  "rbac-wrong-account": { fails: ["rbac"], says: /ServiceAccount iip-mesh-demo\/storefront may not list discovery\.k8s\.io endpointslices/ },
  "rbac-no-httproutes": { fails: ["rbac"], says: /may not list gateway\.networking\.k8s\.io httproutes in namespace iip-mesh-demo/ },
  "httproute-unknown-parent": { fails: ["httproutes"], says: /parentRef Service iip-mesh-demo\/prices does not exist/ },
  "rbac-no-token": { fails: ["rbac"], says: /mounts no ServiceAccount token/ },
  "configmap-missing": { fails: ["config-refs", "sidecar-config", "discovery"], says: /ConfigMap iip-mesh-config does not exist/ },
  "env-name-unknown": { fails: ["env-names"], says: /IIP_MESH_DISCOVERY is not a setting/ },
  "env-order": { fails: ["env-refs"], says: /OTEL_SERVICE_NAME refers to \$\(IIP_MESH_SERVICE\), which is not defined before it/ },
  "probe-port": { fails: ["probes"], says: /readinessProbe port "admn" is not a port of this container/ },
  "not-native-sidecar": { fails: ["native-sidecar", "probes", "target-ports", "discovery"], says: /without restartPolicy: Always/ },
  "sidecar-config-invalid": { fails: ["sidecar-config", "discovery"], says: /drainTimeoutMs \(from IIP_MESH_DRAIN_TIMEOUT\)/ },
  "admin-loopback": { fails: ["sidecar-wiring"], says: /admin listens on 127\.0\.0\.1:9990/ },
  "admin-control-exposed": { fails: ["sidecar-wiring"], says: /adminControl listens on 0\.0\.0\.0:9991: keep the control listener on loopback/ },
  "authz-policy-invalid": { fails: ["authz-policy"], says: /services\.catalog\.default: expected one of allow-all, mesh-authenticated, deny, got "storefront-only"/ },
  "authz-policy-unknown-account": { fails: ["authz-policy"], says: /services\.catalog allows spiffe:\/\/iip-mesh\.local\/ns\/iip-mesh-demo\/sa\/store-front, but no pod runs as ServiceAccount iip-mesh-demo\/store-front/ },
  "app-port": { fails: ["sidecar-wiring"], says: /app port 3000 is no port of the pod's app containers/ },
  "discovery-wrong-service": { fails: ["discovery"], says: /catalog -> Service iip-mesh-demo\/catalogue does not exist/ },
  "mesh-identity-wrong-account": { fails: ["mesh-identity"], says: /label iip-mesh\/service-account is catalogue, but .*catalog runs as ServiceAccount catalog/ },
  "drain-grace": { fails: ["drain"], says: /terminationGracePeriodSeconds 10 < app preStop 5 s \+ sidecar drain 10 s/ },
  "drain-no-prestop": { fails: ["drain"], says: /has no preStop wait/ },
  "security-writable-root": { fails: ["security"], says: /readOnlyRootFilesystem is not true/ },
  "security-root-user": { fails: ["security"], says: /runs as user 0/ },
  "resources-sidecar-limit": { fails: ["resources"], says: /below the sidecar's peak RSS/ },
  "resources-missing": { fails: ["resources"], says: /no memory limit/ },
  "prometheus-port": { fails: ["prometheus"], says: /prometheus\.io\/port 9090 is not the sidecar's admin port 9990/ },
  "tracing-endpoint": { fails: ["tracing"], says: /Service otel-collector has no port 4318/ },
  "tracing-exporter": { fails: ["tracing"], says: /exporter otlp_grpc\/jaeger: jaeger-collector:4317: no Service jaeger-collector/ },
  "tracing-jaeger-listen": { fails: ["tracing"], says: /JAEGER_LISTEN_HOST/ },
  "images-unpinned": { fails: ["images"], says: /iip-mesh-demo-services:latest is not pinned/ },
  "identity-audience": { fails: ["identity"], says: /identityTokenFile's audience https:\/\/kubernetes\.default\.svc is not the issuer's --audience iip-mesh-identity/ },
  "identity-no-tokenreview": { fails: ["identity"], says: /ServiceAccount iip-mesh-demo\/iip-mesh-identity may not create authentication\.k8s\.io tokenreviews/ }
}

const fixtureNames = readdirSync(fixturesDir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name).sort()

const rendered = new Map<string, ReadonlyArray<KubeObject>>()
const problems = new Map<string, ReadonlyArray<Problem>>()

beforeAll(async () => {
  // Every render at once (kubectl is quick; the two cores take turns), then one compiler run for
  // the typed check over all of them.
  const names = [...Object.keys(kustomizations), ...fixtureNames]
  const dirs = [...Object.values(kustomizations), ...fixtureNames.map((name) => join(fixturesDir, name))]
  const objects = await Promise.all(dirs.map((dir) => renderKustomization(dir)))
  names.forEach((name, i) => rendered.set(name, objects[i]!))
  const typed = await typedCheck(names.map((name, i) => ({ name, objects: objects[i]! })))
  for (const [i, name] of names.entries()) problems.set(name, [...runChecks(objects[i]!), ...(typed.get(name) ?? [])])
}, 60_000)

const objectsOf = (name: string) => rendered.get(name)!
const deployment = (name: string, render = "base") => objectsOf(render).find((o) => o.kind === "Deployment" && o.metadata.name === name) as unknown as IDeployment

describe("deploy/kubernetes", () => {
  it.each(Object.keys(kustomizations))("%s renders and passes every check", (name) => {
    expect(objectsOf(name).length).toBeGreaterThan(0)
    expect(formatProblems(problems.get(name)!)).toBe("")
  })

  it("base: the demo services, each fronted by a sidecar, with RBAC and config", () => {
    const kinds = objectsOf("base").map((o) => `${o.kind}/${o.metadata.name}`).sort()
    expect(kinds).toEqual(
      expect.arrayContaining([
        "Namespace/iip-mesh-demo",
        "ServiceAccount/storefront",
        "ServiceAccount/catalog",
        "ServiceAccount/pricing",
        "ServiceAccount/inventory",
        "ConfigMap/iip-mesh-policy",
        "Role/iip-mesh-discovery",
        "RoleBinding/iip-mesh-discovery",
        "Deployment/catalog",
        "Deployment/pricing",
        "Deployment/storefront",
        "Deployment/inventory",
        "Service/catalog",
        "Service/pricing",
        "Service/inventory",
        "Service/storefront",
        "ServiceAccount/iip-mesh-identity",
        "ClusterRole/iip-mesh-identity-tokenreview",
        "ClusterRoleBinding/iip-mesh-identity-tokenreview",
        "Deployment/iip-mesh-identity",
        "Service/iip-mesh-identity"
      ])
    )
    expect(kinds.some((k) => k.startsWith("ConfigMap/iip-mesh-sidecar-"))).toBe(true)
    const context = makeContext(objectsOf("base"))
    expect(context.sidecars.map((s) => s.config?.service).sort()).toEqual(["catalog", "inventory", "pricing", "pricing", "storefront"])
    // The storefront's sidecar finds catalog, pricing (its two version Services) and inventory by
    // their EndpointSlices, in its own namespace, and applies the namespace's HTTPRoutes.
    const storefront = context.sidecars.find((s) => s.config?.service === "storefront")?.config
    expect(storefront?.kubernetes).toEqual({
      catalog: "iip-mesh-demo/catalog",
      pricing: "iip-mesh-demo/pricing-v1+pricing-v2",
      inventory: "iip-mesh-demo/inventory"
    })
    expect(storefront?.kubernetesRoutes).toEqual(["iip-mesh-demo"])
    // Inventory's app is a grpc-js server: its sidecar alone speaks h2c to its app, every other HTTP/1.1.
    expect(context.sidecars.map((s) => `${s.config?.service} ${s.config?.appProtocol}`).sort()).toEqual(["catalog http1", "inventory h2c", "pricing http1", "pricing http1", "storefront http1"])
    for (const sidecar of context.sidecars) {
      expect(sidecar.init && sidecar.container.restartPolicy === "Always").toBe(true)
      expect(sidecar.config?.drainTimeoutMs).toBe(10_000)
      // Each pod's identity: its own ServiceAccount, a token for the issuer's audience.
      expect(sidecar.config).toMatchObject({ identityIssuer: "https://iip-mesh-identity:8443", identityTokenFile: "/var/run/iip-mesh/identity/token" })
      expect(sidecar.pod.template.spec?.serviceAccountName).toBe(sidecar.config?.service)
    }
    expect(deployment("pricing").spec?.replicas).toBe(2)
    expect(deployment("pricing-v2").spec?.replicas).toBe(1)
    expect(deployment("inventory").spec?.template.spec?.containers[0]?.args).toEqual(["services/inventory.ts"])
    for (const name of ["catalog", "pricing", "pricing-v1", "pricing-v2", "inventory", "storefront"]) {
      const service = objectsOf("base").find((o) => o.kind === "Service" && o.metadata.name === name) as unknown as IService
      expect(service.spec?.clusterIP).toBe("None")
      expect(service.spec?.ports?.[0]?.name).toBe("mesh")
    }
  })

  it("base: the demo's authorization policy: the storefront may call catalog, pricing and inventory; nothing else may", () => {
    const objects = objectsOf("base")
    const context = makeContext(objects)
    const identityOf = (pod: (typeof context.pods)[number]) => `spiffe://${defaultTrustDomain}/ns/${pod.namespace}/sa/${pod.template.spec?.serviceAccountName ?? "default"}`
    const callers = [...context.pods.map((pod) => ({ name: nameOf(pod.owner), identity: identityOf(pod) as string | undefined })), { name: "no identity", identity: undefined }]
    // A gRPC call is a POST to /<service>/<method>; the live counter's WebSocket a GET /live (an upgrade).
    const requests = [["GET", "/products"], ["POST", "/prices"], ["DELETE", "/"], ["POST", "/demo.Inventory/GetStock"], ["GET", "/live"]] as const
    const allowed: Array<string> = []
    for (const sidecar of context.sidecars) {
      const policy = policyOf(sidecar, objects)
      if (policy === undefined || "problems" in policy) throw new Error(`${sidecar.where} reads no policy`)
      const compiled = compilePolicy(policy.document, sidecar.config!.service, defaultTrustDomain)
      for (const caller of callers) {
        for (const [method, path] of requests) {
          if (compiled.decide(caller.identity, method, path) === "allow") allowed.push(`${caller.name} -> ${sidecar.config!.service} ${method} ${path}`)
        }
      }
    }
    // Pricing has two sidecars (v1 and v2), each applying the policy for pricing.
    expect(allowed.sort()).toStrictEqual(
      [
        "Deployment iip-mesh-demo/storefront -> catalog",
        "Deployment iip-mesh-demo/storefront -> pricing",
        "Deployment iip-mesh-demo/storefront -> pricing",
        "Deployment iip-mesh-demo/storefront -> inventory"
      ].flatMap((call) => requests.map(([method, path]) => `${call} ${method} ${path}`)).sort()
    )
    // Each service runs as its own ServiceAccount: the only pods that share an identity are pricing's two versions.
    const byIdentity = new Map<string, Array<string>>()
    for (const pod of context.pods) byIdentity.set(identityOf(pod), [...(byIdentity.get(identityOf(pod)) ?? []), nameOf(pod.owner)])
    expect([...byIdentity.values()].filter((owners) => owners.length > 1)).toStrictEqual([["Deployment iip-mesh-demo/pricing", "Deployment iip-mesh-demo/pricing-v2"]])
  })

  it("demo: the collector and Jaeger, and every sidecar exporting to the collector", () => {
    const demo = objectsOf("demo")
    for (const name of ["otel-collector", "jaeger"]) {
      expect(demo.some((o) => o.kind === "Deployment" && o.metadata.name === name)).toBe(true)
      expect(demo.some((o) => o.kind === "Service" && o.metadata.name === name)).toBe(true)
    }
    const sidecars = makeContext(demo).sidecars
    expect(sidecars).toHaveLength(5)
    for (const sidecar of sidecars) {
      expect(sidecar.env["OTEL_EXPORTER_OTLP_ENDPOINT"]).toBe("http://otel-collector:4318")
      expect(sidecar.env["OTEL_EXPORTER_OTLP_PROTOCOL"]).toBe("http/protobuf")
      expect(sidecar.env["OTEL_SERVICE_NAME"]).toBe(sidecar.config?.service)
    }
    // The base's objects are all there, unchanged but for the sidecars' environment.
    expect(podTemplates(demo).length).toBe(podTemplates(objectsOf("base")).length + 2)
  })
})

describe("negative fixtures", () => {
  it("every fixture directory is listed, and every check has a fixture", () => {
    expect(fixtureNames).toEqual(Object.keys(fixtures).sort())
    const covered = new Set(Object.values(fixtures).flatMap((f) => f.fails))
    expect(checkIds.filter((id) => !covered.has(id))).toEqual([])
  })

  it.each(Object.entries(fixtures))("%s fails what it should", (name, expected) => {
    const found = problems.get(name)!
    expect([...new Set(found.map((p) => p.check))].sort(), formatProblems(found)).toEqual([...expected.fails].sort())
    expect(found.some((p) => expected.says.test(p.message)), formatProblems(found)).toBe(true)
  })
})
