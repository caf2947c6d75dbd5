// `iip-mesh demo [--ready-file PATH]` (what `npm start` runs): the demo services of services/ as
// child processes, each fronted by a sidecar in this process. Catalog is an Effect RPC service
// (services/catalogRpcs.ts) the storefront calls over the mesh, streamed, in the request's trace;
// it prices through pricing with the caller's context. Inventory is a gRPC service (grpc-js; its
// sidecar speaks h2c to it) the storefront asks for stock, and the page's live counter is a
// WebSocket relayed through the mesh to pricing. Catalog and pricing run v1 and v2
// instances; the routes file below (every sidecar reads it) keeps traffic on v1 and sends a page
// asked for with `x-canary: yes` to v2 at every hop: storefront -> catalog v2 -> pricing v2,
// the choice carried on W3C baggage (src/sidecar/routing.ts). No sidecar is given an address: they
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
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { randomBytes } from "node:crypto"
import * as Admin from "../admin/adminServer.ts"
import { loadSidecarConfig } from "../config/loadSidecarConfig.ts"
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
  /** Tells the app where its sidecar takes its calls (services/serve.ts reads it from stdin). */
  readonly useSidecar: (url: string) => void
}

/**
 * The demo's routes: v1 for every call, except that a call to catalog carrying `x-canary: yes` goes
 * to v2 and sticks that choice to the request's baggage, so catalog's own call to pricing (which
 * passes the baggage on) goes to pricing v2 too, though no route here says so. Each pricing
 * sidecar takes at most 1000 calls a second from each caller (an inbound rate limit).
 */
export const demoRoutes = `# The demo's routes (README "Routes"), read by every demo sidecar.
routes:
  - name: canary
    service: catalog
    matches:
      - headers: { x-canary: "yes" }
    split: [{ subset: v2, weight: 1 }]
    sticky: baggage
  - name: catalog-stable
    service: catalog
    split: [{ subset: v1, weight: 1 }]
  - name: pricing-stable
    service: pricing
    split: [{ subset: v1, weight: 1 }]
rateLimits:
  - name: pricing-per-caller
    service: pricing
    direction: inbound
    perSecond: 1000
    key: caller
`

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
  ).pipe(Effect.map(([child, port]) => ({ name, port, pid: child.pid ?? 0, useSidecar: (url: string) => void child.stdin!.write(`${JSON.stringify({ sidecar: url })}\n`) })))

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
    const { defaultJoinTokenTtlMs, parseJoinTokens } = yield* Effect.promise(() => import("../identity/proofs.ts"))
    const { issuerSigner } = yield* Effect.promise(() => import("../identity/signers.ts"))
    const IdentityClient = yield* Effect.promise(() => import("../identity/identityClient.ts"))
    const year = 365 * 86_400_000
    const root = yield* Effect.promise(() => createRootCa({ commonName: "iip-mesh demo root", trustDomain: defaultTrustDomain, lifetimeMs: year }))
    const intermediate = yield* Effect.promise(() => createIntermediateCa(root, { commonName: "iip-mesh demo intermediate", trustDomain: defaultTrustDomain, lifetimeMs: year }))
    const tokens = new Map(services.map((service) => [service, randomBytes(32).toString("base64url")]))
    const quiet: Log = (event, fields) => {
      if (event === "identity-refused" || event === "identity-renewal-failed") stderrLog(event, fields)
    }
    // They end 24 h from now; the demo's sidecars, having joined, renew with their certificates.
    const joinTokens = parseJoinTokens([...tokens].map(([service, token]) => `${token} ${service}`).join("\n"), { writtenAt: Date.now(), defaultTtlMs: defaultJoinTokenTtlMs })
    const issuer = yield* Issuer.make({
      ...Issuer.issuerDefaults,
      ca: { intermediate, trustBundlePem: root.certificatePem, trustDomain: defaultTrustDomain },
      trustDomain: defaultTrustDomain,
      host: "127.0.0.1",
      port: 0,
      tokenReview: undefined,
      joinTokens: () => joinTokens,
      log: quiet
    })
    /** A sidecar's credentials for `service`, kept renewed for the demo's life. */
    const credentialsFor = (service: string): Effect.Effect<CredentialSource, never, Scope.Scope> =>
      Effect.gen(function*() {
        let client: CredentialSource | undefined
        client = yield* IdentityClient.make({
          signer: issuerSigner({
            issuerUrl: `https://127.0.0.1:${issuer.port}`,
            trustDomain: defaultTrustDomain,
            trustBundle: () => root.certificatePem,
            proof: () => ({ kind: "join", token: tokens.get(service)! }),
            credentials: () => client?.current()
          }),
          trustDomain: defaultTrustDomain,
          requestedId: serviceSpiffeId(defaultTrustDomain, service),
          log: quiet
        })
        return client
      })
    return { issuer: `https://127.0.0.1:${issuer.port}`, credentialsFor }
  })

/** Where the demo's sidecars find each other, and their routes file. */
interface DemoFiles {
  readonly discovery: string
  readonly routes: string
}

/** Six sidecars would say "routes-loaded" six times: the banner says it once. */
const quietRoutesLog: Log = (event, fields) => {
  if (event !== "routes-loaded") stderrLog(event, fields)
}

/** A sidecar (with its admin server) in this process, configured as `iip-mesh sidecar` would be. */
const startSidecar = (service: string, app: App | undefined, weight: number, version: string, files: DemoFiles, mesh: DemoMesh, credentials: CredentialSource, appProtocol = "http1") =>
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
      ["--local-discovery", [files.discovery]],
      ["--mesh-name", ["demo"]],
      ["--weight", [String(weight)]],
      ["--app-version", [version]],
      ["--routes", [files.routes]],
      ["--app-protocol", [appProtocol]]
    ])
    const loaded = loadSidecarConfig({ flags, env: {} })
    if (Result.isFailure(loaded)) return yield* new DemoFailed({ message: loaded.failure.message })
    let sidecar: Sidecar | undefined
    // Both admin listeners on loopback, no token: the control one serves the dashboard.
    const admin = yield* Admin.make({ admin: loaded.success.admin, control: loaded.success.adminControl, token: undefined }, () => sidecar, { mesh: () => mesh.sidecars, ipv6SourcePrefix: loaded.success.ipv6SourcePrefix })
    sidecar = yield* SidecarLive.make(loaded.success, quietRoutesLog, { traces: mesh.traces, env: otelEnv, credentials, ownListeners: [admin.readOnly, admin.control] })
    mesh.sidecars.push(sidecar)
    app?.useSidecar(`http://${sidecar.outbound.host}:${sidecar.outbound.port}`)
    return { sidecar, admin: `http://${admin.readOnly.host}:${admin.readOnly.port}`, control: `http://${admin.control.host}:${admin.control.port}` }
  })

export const runDemo = (argv: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const readyAt = argv.indexOf("--ready-file")
    const readyFile = readyAt === -1 ? undefined : argv[readyAt + 1]
    const [catalogV1, catalogV2, pricingA, pricingB, pricingC, inventory] = yield* Effect.all(
      [
        startApp("catalog-1", "catalog", { INSTANCE: "catalog-1", VERSION: "v1", PRICES_FROM: "pricing" }),
        startApp("catalog-2", "catalog", { INSTANCE: "catalog-2", VERSION: "v2", PRICES_FROM: "pricing" }),
        startApp("pricing-a", "pricing", { INSTANCE: "pricing-a (weight 3)", VERSION: "v1" }),
        startApp("pricing-b", "pricing", { INSTANCE: "pricing-b (weight 1)", VERSION: "v1" }),
        startApp("pricing-c", "pricing", { INSTANCE: "pricing-c (canary)", VERSION: "v2" }),
        startApp("inventory", "inventory", { INSTANCE: "inventory-1", VERSION: "v1" })
      ],
      { concurrency: "unbounded" }
    )
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => mkdtempSync(join(tmpdir(), "iip-mesh-demo-"))),
      (made) => Effect.sync(() => rmSync(made, { recursive: true, force: true }))
    )
    // Announcements in a directory of their own (directorySource reads every file there).
    const files: DemoFiles = { discovery: join(dir, "discovery"), routes: join(dir, "routes.yaml") }
    mkdirSync(files.discovery)
    writeFileSync(files.routes, demoRoutes)
    const mesh: DemoMesh = { traces: new TraceStore(), sidecars: [] }
    const identities = yield* startIdentities(["storefront", "catalog", "pricing", "inventory"])
    const credentials = yield* Effect.all(
      ["storefront", "catalog", "catalog", "pricing", "pricing", "pricing", "inventory"].map(identities.credentialsFor),
      { concurrency: "unbounded" }
    )
    const store = yield* startSidecar("storefront", undefined, 1, "v1", files, mesh, credentials[0]!)
    const catalog1 = yield* startSidecar("catalog", catalogV1, 1, "v1", files, mesh, credentials[1]!)
    const catalog2 = yield* startSidecar("catalog", catalogV2, 1, "v2", files, mesh, credentials[2]!)
    const pricingSidecarA = yield* startSidecar("pricing", pricingA, 3, "v1", files, mesh, credentials[3]!)
    const pricingSidecarB = yield* startSidecar("pricing", pricingB, 1, "v1", files, mesh, credentials[4]!)
    const pricingSidecarC = yield* startSidecar("pricing", pricingC, 1, "v2", files, mesh, credentials[5]!)
    // A gRPC app (grpc-js): its sidecar speaks cleartext HTTP/2 to it.
    const inventorySidecar = yield* startSidecar("inventory", inventory, 1, "v1", files, mesh, credentials[6]!, "h2c")
    const outbound = `${store.sidecar.outbound.host}:${store.sidecar.outbound.port}`
    const storefront = yield* startApp("storefront", "storefront", { SIDECAR_URL: `http://${outbound}` })
    const entry = `http://127.0.0.1:${storefront.port}/`
    const sidecars = [store, catalog1, catalog2, pricingSidecarA, pricingSidecarB, pricingSidecarC, inventorySidecar]
    const admins = sidecars.map((s) => s.admin)
    const controls = sidecars.map((s) => s.control)
    // The ready file first: whoever waits for the banner may read it at once.
    const pids = [catalogV1, catalogV2, pricingA, pricingB, pricingC, inventory, storefront].map((app) => app.pid)
    const dashboard = `${store.control}/`
    if (readyFile !== undefined) writeFileSync(readyFile, JSON.stringify({ entry, outbound: `http://${outbound}`, admins, controls, dashboard, pids, issuer: identities.issuer }, null, 2))
    process.stdout.write(
      [
        "iip-mesh demo is up: storefront -> catalog (an Effect RPC service, streamed) -> pricing x2 (weights 3:1), each behind a sidecar, all on this host;",
        "  storefront -> inventory (a gRPC service, grpc-js); the page's live counter is a WebSocket through the mesh to pricing;",
        "  catalog and pricing also run a v2, which only the canary reaches (routes file: " + files.routes + ").",
        `  open      ${entry}`,
        `  canary    ${entry}?canary=yes  or  curl -H 'x-canary: yes' ${entry}api/products  (v2 at every hop, one trace)`,
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
