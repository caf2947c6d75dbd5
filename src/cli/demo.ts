// `iip-mesh demo [--ready-file PATH]` (what `npm start` runs): the demo services of services/ as
// child processes, each fronted by a sidecar in this process (catalog is an Effect RPC service the
// storefront calls over the mesh, services/catalogRpcs.ts). No sidecar is given an address: they
// find each other through local discovery (a directory of announcements, src/discovery/
// directorySource.ts), so nothing leaves loopback and nothing multicasts. Each sidecar holds a
// workload certificate from an issuer in this process (its CA made in memory at start, join
// tokens as proof), renewed like anywhere else. Prints what to open;
// Ctrl-C drains the sidecars and stops the services. Services also exit when this process's pipe
// to them closes, so none outlives it.
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { randomBytes } from "node:crypto"
import * as Admin from "../admin/adminServer.ts"
import { loadSidecarConfig } from "../config/sidecarConfig.ts"
import type { CredentialSource } from "../identity/credentials.ts"
import { defaultTrustDomain, serviceSpiffeId } from "../identity/spiffe.ts"
import { type Log, stderrLog } from "../iip/log.ts"
import type { Sidecar } from "../sidecar/sidecar.ts"
import * as SidecarLive from "../sidecar/sidecar.ts"
import { TraceStore } from "../telemetry/traceStore.ts"

export class DemoFailed extends Data.TaggedError("DemoFailed")<{ readonly message: string }> {}

const servicesDir = resolve(import.meta.dirname, "../../services")

interface App {
  readonly name: string
  readonly port: number
  readonly pid: number
}

const stopChild = (child: ChildProcess) =>
  Effect.callback<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    const force = setTimeout(() => child.kill("SIGKILL"), 3000)
    child.once("exit", () => {
      clearTimeout(force)
      resume(Effect.void)
    })
    child.kill("SIGTERM")
  })

/** Starts services/<script>.ts and waits for its "listening" line. */
const startApp = (name: string, script: string, env: Record<string, string>): Effect.Effect<App, DemoFailed, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<readonly [ChildProcess, number], DemoFailed>((resume) => {
      const child = spawn(process.execPath, [resolve(servicesDir, `${script}.ts`)], {
        env: { ...process.env, ...env, PORT: "0", EXIT_WITH_STDIN: "1" },
        stdio: ["pipe", "pipe", "inherit"]
      })
      let out = ""
      child.once("exit", (code) => resume(Effect.fail(new DemoFailed({ message: `${name} exited with ${code} while starting` }))))
      child.stdout!.on("data", (chunk: Buffer) => {
        out += chunk.toString()
        const line = out.split("\n").find((l) => l.includes('"listening"'))
        if (line === undefined) return
        child.removeAllListeners("exit")
        resume(Effect.succeed([child, (JSON.parse(line) as { port: number }).port] as const))
      })
    }),
    ([child]) => stopChild(child)
  ).pipe(Effect.map(([child, port]) => ({ name, port, pid: child.pid ?? 0 })))

/** What the demo's sidecars share: one trace store and the list of all of them (each admin shows the whole mesh). */
interface DemoMesh {
  readonly traces: TraceStore
  readonly sidecars: Array<Sidecar>
}

/** OTEL_* from the shell, except a service name: each demo sidecar keeps its own. */
const { OTEL_SERVICE_NAME: _ignored, ...otelEnv } = process.env

/**
 * The demo's identities: a root and an intermediate made in memory at start (nothing written), an
 * issuer in this process on loopback, and one join token per service, so each sidecar obtains
 * spiffe://iip-mesh.local/svc/<service> the way a sidecar on a LAN does. Only refusals and failed
 * renewals are logged.
 */
const startIdentities = (services: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const { createIntermediateCa, createRootCa } = yield* Effect.promise(() => import("../identity/certificates.ts"))
    const Issuer = yield* Effect.promise(() => import("../identity/issuer.ts"))
    const { parseJoinTokens } = yield* Effect.promise(() => import("../identity/proofs.ts"))
    const { issuerSigner } = yield* Effect.promise(() => import("../identity/signers.ts"))
    const IdentityClient = yield* Effect.promise(() => import("../identity/identityClient.ts"))
    const year = 365 * 86_400_000
    const root = yield* Effect.promise(() => createRootCa({ commonName: "iip-mesh demo root", trustDomain: defaultTrustDomain, lifetimeMs: year }))
    const intermediate = yield* Effect.promise(() => createIntermediateCa(root, { commonName: "iip-mesh demo intermediate", trustDomain: defaultTrustDomain, lifetimeMs: year }))
    const tokens = new Map(services.map((service) => [service, randomBytes(32).toString("base64url")]))
    const quiet: Log = (event, fields) => {
      if (event === "identity-refused" || event === "identity-renewal-failed") stderrLog(event, fields)
    }
    const issuer = yield* Issuer.make({
      ...Issuer.issuerDefaults,
      ca: { intermediate, trustBundlePem: root.certificatePem, trustDomain: defaultTrustDomain },
      trustDomain: defaultTrustDomain,
      host: "127.0.0.1",
      port: 0,
      tokenReview: undefined,
      joinTokens: parseJoinTokens([...tokens].map(([service, token]) => `${token} ${service}`).join("\n")),
      log: quiet
    })
    /** A sidecar's credentials for `service`, kept renewed for the demo's life. */
    const credentialsFor = (service: string): Effect.Effect<CredentialSource, never, Scope.Scope> =>
      IdentityClient.make({
        signer: issuerSigner({
          issuerUrl: `https://127.0.0.1:${issuer.port}`,
          trustDomain: defaultTrustDomain,
          trustBundle: () => root.certificatePem,
          proof: () => ({ kind: "join", token: tokens.get(service)! })
        }),
        trustDomain: defaultTrustDomain,
        requestedId: serviceSpiffeId(defaultTrustDomain, service),
        log: quiet
      })
    return { issuer: `https://127.0.0.1:${issuer.port}`, credentialsFor }
  })

/** A sidecar (with its admin server) in this process, configured as `iip-mesh sidecar` would be. */
const startSidecar = (service: string, app: App | undefined, weight: number, discoveryDir: string, mesh: DemoMesh, credentials: CredentialSource) =>
  Effect.gen(function*() {
    const flags = new Map<string, Array<string>>([
      ["--service", [service]],
      ["--node", [`${app?.name ?? service}-sidecar`]],
      ["--app", [app === undefined ? "none" : `127.0.0.1:${app.port}`]],
      ["--outbound", ["127.0.0.1:0"]],
      ["--inbound", ["127.0.0.1:0"]],
      ["--admin", ["127.0.0.1:0"]],
      ["--admin-control", ["127.0.0.1:0"]],
      ["--drain-timeout", ["3s"]],
      ["--local-discovery", [discoveryDir]],
      ["--mesh-name", ["demo"]],
      ["--weight", [String(weight)]]
    ])
    const loaded = loadSidecarConfig({ flags, env: {} })
    if (Result.isFailure(loaded)) return yield* new DemoFailed({ message: loaded.failure.message })
    let sidecar: Sidecar | undefined
    // Both admin listeners on loopback, no token: the control one serves the dashboard.
    const admin = yield* Admin.make({ admin: loaded.success.admin, control: loaded.success.adminControl, token: undefined }, () => sidecar, { mesh: () => mesh.sidecars })
    sidecar = yield* SidecarLive.make(loaded.success, undefined, { traces: mesh.traces, env: otelEnv, credentials })
    mesh.sidecars.push(sidecar)
    return { sidecar, admin: `http://${admin.readOnly.host}:${admin.readOnly.port}`, control: `http://${admin.control.host}:${admin.control.port}` }
  })

export const runDemo = (argv: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const readyAt = argv.indexOf("--ready-file")
    const readyFile = readyAt === -1 ? undefined : argv[readyAt + 1]
    const [catalogApp, pricingA, pricingB] = yield* Effect.all(
      [
        startApp("catalog", "catalog", {}),
        startApp("pricing-a", "pricing", { INSTANCE: "pricing-a (weight 3)" }),
        startApp("pricing-b", "pricing", { INSTANCE: "pricing-b (weight 1)" })
      ],
      { concurrency: "unbounded" }
    )
    const discoveryDir = yield* Effect.acquireRelease(
      Effect.sync(() => mkdtempSync(join(tmpdir(), "iip-mesh-demo-"))),
      (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
    )
    const mesh: DemoMesh = { traces: new TraceStore(), sidecars: [] }
    const identities = yield* startIdentities(["storefront", "catalog", "pricing"])
    const [storeId, catalogId, pricingIdA, pricingIdB] = yield* Effect.all(
      ["storefront", "catalog", "pricing", "pricing"].map(identities.credentialsFor),
      { concurrency: "unbounded" }
    )
    const store = yield* startSidecar("storefront", undefined, 1, discoveryDir, mesh, storeId!)
    const catalog = yield* startSidecar("catalog", catalogApp, 1, discoveryDir, mesh, catalogId!)
    const pricingSidecarA = yield* startSidecar("pricing", pricingA, 3, discoveryDir, mesh, pricingIdA!)
    const pricingSidecarB = yield* startSidecar("pricing", pricingB, 1, discoveryDir, mesh, pricingIdB!)
    const outbound = `${store.sidecar.outbound.host}:${store.sidecar.outbound.port}`
    const storefront = yield* startApp("storefront", "storefront", { SIDECAR_URL: `http://${outbound}` })
    const entry = `http://127.0.0.1:${storefront.port}/`
    const sidecars = [store, catalog, pricingSidecarA, pricingSidecarB]
    const admins = sidecars.map((s) => s.admin)
    const controls = sidecars.map((s) => s.control)
    // The ready file first: whoever waits for the banner may read it at once.
    const pids = [catalogApp, pricingA, pricingB, storefront].map((app) => app.pid)
    const dashboard = `${store.control}/`
    if (readyFile !== undefined) writeFileSync(readyFile, JSON.stringify({ entry, outbound: `http://${outbound}`, admins, controls, dashboard, pids, issuer: identities.issuer }, null, 2))
    process.stdout.write(
      [
        "iip-mesh demo is up: storefront -> (sidecar) -> catalog (an Effect RPC service), pricing x2 (weights 3:1), all on this host.",
        `  open      ${entry}`,
        `  try       curl -H 'Host: catalog' http://${outbound}/products`,
        `  dashboard ${dashboard}  (the whole demo mesh: traffic, health, traces)`,
        `  admins    ${admins.join("  ")}  (read-only: /health, /ready, /metrics)`,
        `  controls  ${controls.join("  ")}  (dashboard, /mesh, /traces, /config, weights)`,
        `  identity  spiffe://${defaultTrustDomain}/svc/<service>, 24 h certificates from the in-process issuer ${identities.issuer} (join tokens; CA in memory)`,
        "  stop      Ctrl-C",
        ""
      ].join("\n")
    )
    return yield* Effect.never
  }).pipe(Effect.scoped)
