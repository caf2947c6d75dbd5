// The sidecar's identity settings (src/config/sidecarConfig.ts) and what `iip-mesh sidecar` does
// with them: flags and environment are read, settings that cannot work together are named at
// start, a development CA directory makes a sidecar sign its own certificate and say so loudly,
// and a broken one stops the start with a clear line.
import { Result } from "effect"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, afterEach, describe, expect, it } from "vitest"
import { parseFlags } from "../../src/config/flags.ts"
import { type ConfigInvalid, loadSidecarConfig } from "../../src/config/loadSidecarConfig.ts"
import type { SidecarConfig } from "../../src/config/sidecarConfig.ts"
import { initCa } from "../../src/identity/caDirectory.ts"
import { holdsStarts } from "../support/childStart.ts"
import { audience, makeIssuingCa, startFakeApiServer, startIssuer, trustDomain } from "../support/identityTest.ts"
import { killIfRunning, type SidecarProcess, spawnSidecarProcess } from "../support/sidecarProcess.ts"

const work = mkdtempSync(join(tmpdir(), "iip-mesh-identity-settings-"))
afterAll(() => rmSync(work, { recursive: true, force: true }))

const load = (argv: Array<string>, env: Record<string, string> = {}) => loadSidecarConfig({ flags: parseFlags(["--service", "catalog", ...argv]), env })
const loaded = (argv: Array<string>, env: Record<string, string> = {}): SidecarConfig => {
  const result = load(argv, env)
  if (Result.isFailure(result)) throw new Error(result.failure.message)
  return result.success
}
const problems = (argv: Array<string>): ReadonlyArray<string> => {
  const result = load(argv)
  return Result.isFailure(result) ? (result.failure as ConfigInvalid).problems : []
}

describe("identity settings", () => {
  it("default to no identity in trust domain iip-mesh.local; flags and environment set them", () => {
    expect(loaded([])).toMatchObject({ identityIssuer: null, identityTokenFile: null, identityJoinTokenFile: null, trustBundleFile: null, trustDomain: "iip-mesh.local", identityDevCaDir: null, identityRequestTimeoutMs: 10_000, identityBundleRefreshMs: 300_000 })
    expect(loaded(["--identity-issuer", "https://issuer.iip-mesh:8443", "--identity-token-file", "/var/run/token", "--trust-bundle", "/etc/bundle.pem", "--identity-request-timeout", "3s", "--identity-bundle-refresh", "1m"], { IIP_MESH_TRUST_DOMAIN: "shop.example" })).toMatchObject({
      identityIssuer: "https://issuer.iip-mesh:8443",
      identityTokenFile: "/var/run/token",
      trustBundleFile: "/etc/bundle.pem",
      trustDomain: "shop.example",
      identityRequestTimeoutMs: 3_000,
      identityBundleRefreshMs: 60_000
    })
    expect(loaded([], { IIP_MESH_IDENTITY_BUNDLE_REFRESH: "30s" }).identityBundleRefreshMs).toBe(30_000)
    expect(loaded(["--identity-dev-ca-dir", "/tmp/ca"], { IIP_MESH_IDENTITY_JOIN_TOKEN_FILE: "none" })).toMatchObject({ identityDevCaDir: "/tmp/ca", identityJoinTokenFile: null })
  })

  it("settings that cannot work together, and bad values, are named", () => {
    expect(problems(["--identity-issuer", "http://issuer:8443", "--identity-token-file", "t", "--trust-bundle", "b"])).toStrictEqual([expect.stringMatching(/^identityIssuer .*Expected https:\/\/HOST:PORT/)])
    expect(problems(["--identity-issuer", "https://issuer:8443", "--identity-token-file", "t"])).toStrictEqual([expect.stringMatching(/trustBundleFile: required with identityIssuer/)])
    expect(problems(["--identity-issuer", "https://issuer:8443", "--trust-bundle", "b"])).toStrictEqual([expect.stringMatching(/exactly one of identityTokenFile .* and identityJoinTokenFile/)])
    expect(problems(["--identity-issuer", "https://issuer:8443", "--trust-bundle", "b", "--identity-token-file", "t", "--identity-join-token-file", "j"])).toHaveLength(1)
    expect(problems(["--identity-join-token-file", "j"])).toStrictEqual([expect.stringMatching(/identityIssuer: required with/)])
    expect(problems(["--identity-issuer", "https://issuer:8443", "--trust-bundle", "b", "--identity-token-file", "t", "--identity-dev-ca-dir", "d"])).toStrictEqual([expect.stringMatching(/not both/)])
    expect(problems(["--trust-domain", "Shop Example"])).toStrictEqual([expect.stringMatching(/^trustDomain .*Expected a trust domain/)])
    // Every sidecar asks the one issuer this often: a tiny interval from a whole fleet would be a flood.
    expect(problems(["--identity-bundle-refresh", "1s"])).toStrictEqual([expect.stringMatching(/^identityBundleRefreshMs .*10000/)])
    expect(problems(["--identity-bundle-refresh", "61m"])).toStrictEqual([expect.stringMatching(/^identityBundleRefreshMs .*3600000/)])
  })
})

describe("iip-mesh sidecar with identity settings", () => {
  let sidecar: SidecarProcess | undefined
  afterEach(() => killIfRunning(sidecar?.proc))

  it("--identity-dev-ca-dir: signs its own certificate for spiffe://<td>/svc/<service> and says loudly that it does", async () => {
    const caDir = join(work, "dev-ca")
    await initCa({ dir: caDir, trustDomain: "dev.mesh" })
    sidecar = spawnSidecarProcess(["--service", "catalog", "--outbound", "127.0.0.1:0", "--inbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--identity-dev-ca-dir", caDir, "--trust-domain", "dev.mesh"])
    const ready = (await sidecar.ready) as unknown as { identity: string; identityNotAfter: string }
    expect(ready.identity).toBe("spiffe://dev.mesh/svc/catalog")
    const hours = (Date.parse(ready.identityNotAfter) - Date.now()) / 3_600_000
    expect(hours).toBeGreaterThan(23.9)
    expect(hours).toBeLessThanOrEqual(24)
    expect(sidecar.stderr()).toMatch(/"event":"identity-development-signing".*DEVELOPMENT ONLY/)
    // Its bundle refreshes (the CA directory's bundle.pem here) are counted on /metrics, by result.
    const metrics = await (await fetch(`http://${(await sidecar.ready).admin}/metrics`)).text()
    for (const result of ["updated", "unchanged", "failed", "refused"]) expect(metrics).toContain(`iip_mesh_trust_bundle_refreshes_total{result="${result}"} 0`)
  }, holdsStarts(1, 10_000))

  it("--identity-token-file: a projected ServiceAccount token earns the account's identity, whatever the service is called", async () => {
    const ca = await makeIssuingCa()
    const api = await startFakeApiServer({ "projected-token": { username: "system:serviceaccount:shop:storefront-sa", audiences: [audience] } })
    const issuer = await startIssuer(ca, { apiUrl: api.url })
    try {
      writeFileSync(join(work, "token"), "projected-token\n")
      writeFileSync(join(work, "bundle.pem"), ca.trustBundlePem)
      sidecar = spawnSidecarProcess([
        "--service", "storefront", "--outbound", "127.0.0.1:0", "--inbound", "127.0.0.1:0", "--admin", "127.0.0.1:0",
        "--identity-issuer", issuer.url, "--identity-token-file", join(work, "token"), "--trust-bundle", join(work, "bundle.pem"), "--trust-domain", trustDomain
      ])
      const ready = (await sidecar.ready) as unknown as { identity: string }
      expect(ready.identity).toBe(`spiffe://${trustDomain}/ns/shop/sa/storefront-sa`)
      expect(api.reviews.map((r) => r.body.spec.token)).toStrictEqual(["projected-token"])
    } finally {
      killIfRunning(sidecar?.proc)
      await issuer.stop()
      await api.close()
    }
  }, holdsStarts(1, 10_000))

  it("a development CA directory that holds no CA stops the start with one clear line, exit 2", async () => {
    sidecar = spawnSidecarProcess(["--service", "catalog", "--outbound", "127.0.0.1:0", "--inbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--identity-dev-ca-dir", join(work, "nothing-here")])
    await expect(sidecar.ready).rejects.toThrow(/exited with 2/)
    expect(sidecar.stderr()).toMatch(/^iip-mesh sidecar: identityDevCaDir: cannot read .*intermediate\.pem: ENOENT\n$/m)
  }, holdsStarts(1, 10_000))
})
