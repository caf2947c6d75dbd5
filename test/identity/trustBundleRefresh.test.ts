// A root added at the issuer reaches a running sidecar between its renewals: the issuer answers
// GET /v1/bundle with the bundle it signs with, and `iip-mesh sidecar`'s identity (as its settings
// build it, over real HTTPS) fetches it every 5 min +- 10 % on Effect's TestClock; in development
// the CA directory's bundle.pem is read again. Once the issuer signs under the new root, a sidecar
// whose --trust-bundle file was never updated still reaches it through the bundle it holds.
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { execFileSync } from "node:child_process"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { sidecarIdentity } from "../../src/cli/sidecarIdentity.ts"
import { issueLeaf } from "../../src/identity/certificates.ts"
import { readCertificateRequest } from "../../src/identity/certificateRequest.ts"
import * as IdentityClient from "../../src/identity/identityClient.ts"
import { caFiles, initCa, rotateCa } from "../../src/identity/caDirectory.ts"
import { developmentTrustBundle, issuerTrustBundle } from "../../src/identity/signers.ts"
import { certificatesOfPem } from "../../src/identity/trustBundle.ts"
import { sidecarConfig } from "../support/sidecarHarness.ts"
import { eventually, joinTokensNow, makeIssuingCa, silentServer, startIssuer, trustDomain } from "../support/identityTest.ts"

const minute = 60_000

const joinToken = "j".repeat(40)

/** An issuer of its own (its CA is replaced here) with a join token for catalog, leaves of `leafLifetimeMs`; stopped with the scope. */
const issuerWith = (leafLifetimeMs = 24 * 60 * minute) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const ca = await makeIssuingCa()
      return { ca, running: await startIssuer(ca, { joinTokens: joinTokensNow(`${joinToken} catalog\n`), leafLifetimeMs }) }
    }),
    ({ running }) => Effect.promise(() => running.stop())
  )
const ownIssuer = issuerWith()

/** The rotation's first step as the issuer sees it: the same intermediate, a bundle with a new root too; the new CA, for the switch. */
const addRootAndKeepNext = (issuer: Effect.Success<typeof ownIssuer>) =>
  Effect.promise(async () => {
    const next = await makeIssuingCa("next")
    const bundle = next.rootPem + issuer.ca.trustBundlePem
    await issuer.running.issuer.replaceCa({ ...issuer.ca, trustBundlePem: bundle })
    return { bundle, next }
  })
const addRoot = (issuer: Effect.Success<typeof ownIssuer>) => Effect.map(addRootAndKeepNext(issuer), ({ bundle }) => bundle)

describe("trust bundle refresh", () => {
  it("development: the CA directory's bundle.pem as it is now, a rotation's two roots included; a file over 64 KiB is refused unread", async () => {
    const dir = mkdtempSync(join(tmpdir(), "iip-mesh-dev-bundle-"))
    try {
      await initCa({ dir, trustDomain })
      const fetch = developmentTrustBundle(dir)
      const before = await fetch()
      expect(certificatesOfPem(String(before))).toHaveLength(1)
      await rotateCa({ dir, trustDomain })
      expect(await fetch()).toBe(readFileSync(join(dir, caFiles.bundle), "utf8"))
      expect(certificatesOfPem(String(await fetch()))).toHaveLength(2)
      writeFileSync(join(dir, caFiles.bundle), " ".repeat(70_000))
      await expect(fetch()).rejects.toThrow(/bundle\.pem: larger than 65536 bytes/)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it.effect("GET /v1/bundle answers the bundle the issuer signs with, the new one once a root is added", () =>
    Effect.gen(function*() {
      const issuer = yield* ownIssuer
      const fetch = issuerTrustBundle({ issuerUrl: issuer.running.url, trustDomain, trustBundle: () => issuer.ca.trustBundlePem })
      expect(yield* Effect.promise(fetch)).toBe(issuer.ca.trustBundlePem)
      const bundle = yield* addRoot(issuer)
      expect(yield* Effect.promise(fetch)).toBe(bundle)
    }).pipe(Effect.scoped))

  it.effect("a sidecar's identity (issuer and join token settings) takes a root added at the issuer within 5.5 min, without renewing", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const issuer = yield* ownIssuer
      const dir = yield* Effect.acquireRelease(Effect.sync(() => mkdtempSync(join(tmpdir(), "iip-mesh-bundle-refresh-"))), (path) => Effect.sync(() => rmSync(path, { recursive: true, force: true })))
      writeFileSync(join(dir, "bundle.pem"), issuer.ca.trustBundlePem)
      writeFileSync(join(dir, "join.token"), `${joinToken}\n`)
      const events: Array<string> = []
      const config = sidecarConfig({
        service: "catalog",
        trustDomain,
        identityIssuer: issuer.running.url,
        trustBundleFile: join(dir, "bundle.pem"),
        identityJoinTokenFile: join(dir, "join.token")
      })
      const client = yield* sidecarIdentity(config, (event) => void events.push(event))
      const first = client.current()
      const bundle = yield* addRoot(issuer)
      yield* TestClock.adjust(5.5 * minute)
      yield* Effect.promise(() =>
        new Promise<void>((resolve, reject) => {
          const started = Date.now()
          const poll = () => (client.current() !== first ? resolve() : Date.now() - started > 5_000 ? reject(new Error(`no new bundle; events ${events.join(", ")}`)) : setTimeout(poll, 5))
          poll()
        })
      )
      expect(client.current().trustBundlePem).toBe(bundle)
      expect(client.current().certificateChainPem).toBe(first.certificateChainPem)
      expect(client.status()).toMatchObject({ renewals: 0, trustBundleRoots: 2, lastBundleError: undefined })
      expect(events).toContain("identity-trust-bundle-refreshed")
    }).pipe(Effect.scoped))

  /** A sidecar's identity from `issuer` whose --trust-bundle file is `file` (the issuer's bundle at first), and its events. */
  const sidecarWithBundleFile = (issuer: Effect.Success<typeof ownIssuer>) =>
    Effect.gen(function*() {
      const dir = yield* Effect.acquireRelease(Effect.sync(() => mkdtempSync(join(tmpdir(), "iip-mesh-bundle-file-"))), (path) => Effect.sync(() => rmSync(path, { recursive: true, force: true })))
      const file = join(dir, "bundle.pem")
      writeFileSync(file, issuer.ca.trustBundlePem)
      writeFileSync(join(dir, "join.token"), `${joinToken}\n`)
      const events: Array<string> = []
      const config = sidecarConfig({ service: "catalog", trustDomain, identityIssuer: issuer.running.url, trustBundleFile: file, identityJoinTokenFile: join(dir, "join.token") })
      const client = yield* sidecarIdentity(config, (event) => void events.push(event))
      return { client, file, events }
    })

  it.effect("a --trust-bundle file past 64 KiB is refused unread: the refresh fails naming it, the sidecar keeps the bundle it holds and takes the new one once the file is sound", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const issuer = yield* ownIssuer
      const { client, file } = yield* sidecarWithBundleFile(issuer)
      const held = client.current().trustBundlePem
      const bundle = yield* addRoot(issuer)
      // Before, the whole file was read (however large) and handed to TLS as the roots.
      writeFileSync(file, " ".repeat(70_000))
      yield* TestClock.adjust(5.5 * minute)
      yield* eventually(() => client.status().bundleRefreshes.failed === 1)
      expect(client.status().lastBundleError).toBe(`${file}: larger than 65536 bytes (70000)`)
      expect(client.current().trustBundlePem).toBe(held)
      writeFileSync(file, issuer.ca.trustBundlePem)
      // The retry, within the refresh interval.
      yield* TestClock.adjust(5.5 * minute)
      yield* eventually(() => client.current().trustBundlePem === bundle)
    }).pipe(Effect.scoped))

  it.effect("a --trust-bundle file that is a FIFO nobody writes is refused at once, not read: the event loop never blocks, the sidecar keeps its bundle", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const issuer = yield* ownIssuer
      const { client, file } = yield* sidecarWithBundleFile(issuer)
      const held = client.current().trustBundlePem
      yield* addRoot(issuer)
      rmSync(file)
      execFileSync("mkfifo", [file])
      // Before, readFileSync opened the FIFO on the event loop and waited for a writer for good.
      yield* TestClock.adjust(5.5 * minute)
      yield* eventually(() => client.status().bundleRefreshes.failed === 1)
      expect(client.status().lastBundleError).toBe(`${file}: not a regular file`)
      expect(client.current().trustBundlePem).toBe(held)
    }).pipe(Effect.scoped))

  it.effect("identityBundleRefreshMs sets the interval: at 1 min a root added at the issuer reaches the sidecar within 1.1 min", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const issuer = yield* ownIssuer
      const dir = yield* Effect.acquireRelease(Effect.sync(() => mkdtempSync(join(tmpdir(), "iip-mesh-bundle-interval-"))), (path) => Effect.sync(() => rmSync(path, { recursive: true, force: true })))
      writeFileSync(join(dir, "bundle.pem"), issuer.ca.trustBundlePem)
      writeFileSync(join(dir, "join.token"), `${joinToken}\n`)
      const config = sidecarConfig({
        service: "catalog",
        trustDomain,
        identityIssuer: issuer.running.url,
        trustBundleFile: join(dir, "bundle.pem"),
        identityJoinTokenFile: join(dir, "join.token"),
        identityBundleRefreshMs: minute
      })
      const client = yield* sidecarIdentity(config, () => {})
      const bundle = yield* addRoot(issuer)
      yield* TestClock.adjust(1.1 * minute)
      yield* eventually(() => client.current().trustBundlePem === bundle)
      expect(client.status().bundleRefreshes).toStrictEqual({ updated: 1, unchanged: 0, failed: 0, refused: 0 })
    }).pipe(Effect.scoped))

  it.effect("after the issuer switches to the new root's intermediate, a sidecar whose --trust-bundle file holds only the old root still renews: the issuer is verified against the bundle it handed out too", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const issuer = yield* issuerWith(60 * minute)
      const dir = yield* Effect.acquireRelease(Effect.sync(() => mkdtempSync(join(tmpdir(), "iip-mesh-bundle-issuer-"))), (path) => Effect.sync(() => rmSync(path, { recursive: true, force: true })))
      // The file as it was written at install time (a ConfigMap not updated, a file outside Kubernetes).
      writeFileSync(join(dir, "bundle.pem"), issuer.ca.trustBundlePem)
      writeFileSync(join(dir, "join.token"), `${joinToken}\n`)
      const events: Array<string> = []
      const config = sidecarConfig({ service: "catalog", trustDomain, identityIssuer: issuer.running.url, trustBundleFile: join(dir, "bundle.pem"), identityJoinTokenFile: join(dir, "join.token") })
      const client = yield* sidecarIdentity(config, (event) => void events.push(event))
      const { bundle, next } = yield* addRootAndKeepNext(issuer)
      yield* TestClock.adjust(5.5 * minute)
      yield* eventually(() => client.status().trustBundleRoots === 2)
      // `ca switch-intermediate`: the issuer's own leaf now chains to the new root, which the file lacks.
      yield* Effect.promise(() => issuer.running.issuer.replaceCa({ intermediate: next.intermediate, trustBundlePem: bundle, trustDomain }))
      // Past the renewal (70 % +- 5 % of 60 min) and a bundle refresh (5 min +- 10 %).
      yield* TestClock.adjust(50 * minute)
      yield* Effect.promise(() =>
        new Promise<void>((resolve, reject) => {
          const started = Date.now()
          const poll = () => (client.status().renewals === 1 ? resolve() : Date.now() - started > 5_000 ? reject(new Error(`no renewal: ${client.status().lastError}`)) : setTimeout(poll, 5))
          poll()
        })
      )
      expect(certificatesOfPem(client.current().certificateChainPem)[1]).toBe(next.intermediate.certificatePem)
      expect(client.status()).toMatchObject({ lastError: undefined, trustBundleRoots: 2 })
      // The refresh between (at 10 min +- 10 %) reached the switched issuer too.
      yield* eventually(() => client.status().bundleRefreshes.unchanged === 1)
      expect(client.status().bundleRefreshes).toStrictEqual({ updated: 1, unchanged: 1, failed: 0, refused: 0 })
    }).pipe(Effect.scoped))

  it.effect("a refresh in flight when the sidecar's scope closes is abandoned with it: its connection to an issuer that never answers closes at once, not at the request timeout", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const ca = yield* Effect.promise(() => makeIssuingCa())
      const signer: IdentityClient.Signer = async (csr) => {
        const request = await readCertificateRequest(csr)
        const leaf = await issueLeaf(ca.intermediate, { spiffeId: request.requestedId!, publicKey: request.publicKey, lifetimeMs: 10 * 60 * minute })
        return { spiffeId: request.requestedId!, certificateChainPem: leaf + ca.intermediate.certificatePem, trustBundlePem: ca.trustBundlePem, notAfter: "" }
      }
      const { port, state } = yield* silentServer
      const fetchTrustBundle = issuerTrustBundle({ issuerUrl: `https://127.0.0.1:${port}`, trustDomain, trustBundle: () => ca.trustBundlePem, timeoutMs: 10_000 })
      const scope = yield* Scope.make()
      yield* IdentityClient.make({ signer, fetchTrustBundle, trustDomain, requestedId: `spiffe://${trustDomain}/svc/catalog`, log: () => {} }).pipe(Scope.provide(scope))
      yield* TestClock.adjust(5.5 * minute)
      yield* eventually(() => state.held.size === 1)
      yield* Scope.close(scope, Exit.void)
      yield* eventually(() => state.closed === 1, 2_000)
    }).pipe(Effect.scoped))
})
