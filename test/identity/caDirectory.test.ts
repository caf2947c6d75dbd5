// `iip-mesh ca init|rotate|switch-intermediate|finish-rotation` run as the command it is: what it
// writes verifies with node:crypto (root self-signed, intermediate issued and signed by it, keys
// 0600), the issuer loads it, and during a rotation the two-root bundle lets a leaf under the old
// root and a leaf under the new one complete mutual TLS with each other; after finish-rotation the
// old one fails. Until switch-intermediate, what the directory signs stays under the old root, so
// a sidecar that holds only the old root is never handed a peer it refuses; a switch that died
// midway completes when run again, and none is made into a bundle without the new root.
import { execFile } from "node:child_process"
import { X509Certificate } from "node:crypto"
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs"
import type { AddressInfo } from "node:net"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import * as tls from "node:tls"
import { afterAll, describe, expect, it } from "vitest"
import { finishRotation, initCa, loadIssuingCa, renewIntermediate, rotateCa, switchIntermediate } from "../../src/identity/caDirectory.ts"
import { generateKeyPair, issueLeaf } from "../../src/identity/certificates.ts"
import { spiffeIdOfCertificate } from "../../src/identity/spiffe.ts"
import { certificatesOfPem } from "../../src/identity/trustBundle.ts"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"

const main = resolve(import.meta.dirname, "../../src/cli/main.ts")
const work = mkdtempSync(join(tmpdir(), "iip-mesh-ca-test-"))
afterAll(() => rmSync(work, { recursive: true, force: true }))

const cli = (...args: Array<string>) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((done) => {
    execFile(process.execPath, [main, ...args], { timeout: CHILD_START_MS }, (error, stdout, stderr) => done({ code: error === null ? 0 : Number(error.code ?? 1), stdout, stderr }))
  })

const read = (dir: string, name: string) => readFileSync(join(dir, name), "utf8")

/** A leaf for `spiffeId` under the intermediate in `dir` as it is now: key and chain. */
const leafUnder = async (dir: string, spiffeId: string) => {
  const ca = loadIssuingCa(dir)
  const pair = await generateKeyPair()
  const leaf = await issueLeaf(ca.intermediate, { spiffeId, publicKey: pair.keys.publicKey, lifetimeMs: 3_600_000 })
  return { key: pair.privateKeyPem, cert: leaf + ca.intermediate.certificatePem }
}

/** Mutual TLS 1.3 between two leaves, both trusting `bundle`; the SPIFFE IDs each side saw, or the failure. */
const mutualTls = async (server: { key: string; cert: string }, client: { key: string; cert: string }, bundle: string) => {
  let serverSaw: string | undefined
  const listener = tls.createServer({ ...server, ca: bundle, requestCert: true, rejectUnauthorized: true, minVersion: "TLSv1.3" }, (socket) => {
    serverSaw = spiffeIdOfCertificate(socket.getPeerX509Certificate()!)?.text
    socket.end("ok")
  })
  listener.on("tlsClientError", () => {})
  await new Promise<void>((done) => listener.listen(0, "127.0.0.1", done))
  try {
    return await new Promise<{ ok: true; serverSaw: string | undefined; clientSaw: string | undefined } | { ok: false; error: string }>((done) => {
      const socket = tls.connect({ port: (listener.address() as AddressInfo).port, host: "127.0.0.1", ...client, ca: bundle, checkServerIdentity: () => undefined, minVersion: "TLSv1.3" })
      socket.on("data", () => {
        const clientSaw = spiffeIdOfCertificate(socket.getPeerX509Certificate()!)?.text
        socket.destroy()
        done({ ok: true, serverSaw, clientSaw })
      })
      socket.on("error", (error: NodeJS.ErrnoException) => done({ ok: false, error: error.code ?? error.message }))
      socket.on("close", () => done({ ok: false, error: "closed" }))
    })
  } finally {
    listener.close()
  }
}

describe("iip-mesh ca", () => {
  const dir = join(work, "ca")

  it("init writes a root and an intermediate that verify, keys 0600, a one-root bundle; a second init refuses", async () => {
    const result = await cli("ca", "init", "--dir", dir, "--trust-domain", "shop.example")
    expect(result.stderr).toBe("")
    expect(result.code).toBe(0)
    expect(statSync(dir).mode & 0o777).toBe(0o700)
    for (const key of ["root.key.pem", "intermediate.key.pem"]) expect(statSync(join(dir, key)).mode & 0o777, key).toBe(0o600)
    const root = new X509Certificate(read(dir, "root.pem"))
    const intermediate = new X509Certificate(read(dir, "intermediate.pem"))
    expect(root.ca && intermediate.ca).toBe(true)
    expect(root.checkIssued(root) && root.verify(root.publicKey)).toBe(true)
    expect(intermediate.checkIssued(root) && intermediate.verify(root.publicKey)).toBe(true)
    expect(root.subjectAltName).toBe("URI:spiffe://shop.example")
    expect(certificatesOfPem(read(dir, "bundle.pem"))).toStrictEqual([read(dir, "root.pem")])
    expect(loadIssuingCa(dir).trustDomain).toBe("shop.example")
    const again = await cli("ca", "init", "--dir", dir)
    expect(again.code).toBe(1)
    expect(again.stderr).toMatch(/holds a CA already/)
    expect(read(dir, "root.pem")).toBe(root.toString())
  }, holdsStarts(2, 10_000))

  it("renew-intermediate: a new intermediate under the same root; the bundle stays, old and new leaves verify each other", async () => {
    const before = { root: read(dir, "root.pem"), bundle: read(dir, "bundle.pem"), intermediate: read(dir, "intermediate.pem") }
    const oldLeaf = await leafUnder(dir, "spiffe://shop.example/svc/catalog")
    const result = await cli("ca", "renew-intermediate", "--dir", dir)
    expect(result.stderr).toBe("")
    expect(result.code).toBe(0)
    expect(read(dir, "intermediate.pem")).not.toBe(before.intermediate)
    expect({ root: read(dir, "root.pem"), bundle: read(dir, "bundle.pem") }).toStrictEqual({ root: before.root, bundle: before.bundle })
    expect(statSync(join(dir, "intermediate.key.pem")).mode & 0o777).toBe(0o600)
    const root = new X509Certificate(before.root)
    const intermediate = new X509Certificate(read(dir, "intermediate.pem"))
    expect(intermediate.checkIssued(root) && intermediate.verify(root.publicKey)).toBe(true)
    expect(intermediate.subjectAltName).toBe("URI:spiffe://shop.example")
    const newLeaf = await leafUnder(dir, "spiffe://shop.example/svc/pricing")
    expect(await mutualTls(oldLeaf, newLeaf, before.bundle)).toMatchObject({ ok: true })
  }, holdsStarts(1, 10_000))

  it("rotate: a two-root bundle carries mutual TLS between a leaf under the old root and one under the new; finish-rotation drops the old", async () => {
    const oldLeaf = await leafUnder(dir, "spiffe://shop.example/svc/catalog")
    const oldRoot = read(dir, "root.pem")
    // As README and deploy/README give it, without --trust-domain: the rotation keeps the root's.
    const rotated = await cli("ca", "rotate", "--dir", dir)
    expect(rotated.code).toBe(0)
    expect(read(dir, "previous-root.pem")).toBe(oldRoot)
    expect(new X509Certificate(read(dir, "root.pem")).subjectAltName).toBe("URI:spiffe://shop.example")
    const bundle = read(dir, "bundle.pem")
    expect(certificatesOfPem(bundle)).toStrictEqual([read(dir, "root.pem"), oldRoot])
    expect(read(dir, "root.pem")).not.toBe(oldRoot)
    expect(rotated.stdout).toMatch(/run ca switch-intermediate/)
    const switched = await cli("ca", "switch-intermediate", "--dir", dir)
    expect(switched.stderr).toBe("")
    expect(switched.code).toBe(0)
    const newLeaf = await leafUnder(dir, "spiffe://shop.example/svc/pricing")
    expect(await mutualTls(oldLeaf, newLeaf, bundle)).toStrictEqual({ ok: true, serverSaw: "spiffe://shop.example/svc/pricing", clientSaw: "spiffe://shop.example/svc/catalog" })
    expect(await mutualTls(newLeaf, oldLeaf, bundle)).toMatchObject({ ok: true })
    // The new root alone does not trust the old leaf: the bundle is what carries the rotation.
    expect(await mutualTls(newLeaf, oldLeaf, read(dir, "root.pem"))).toMatchObject({ ok: false })
    await expect(rotateCa({ dir, trustDomain: "shop.example" })).rejects.toThrow(/rotation is in progress/)

    const finished = await cli("ca", "finish-rotation", "--dir", dir)
    expect(finished.code).toBe(0)
    const after = read(dir, "bundle.pem")
    expect(certificatesOfPem(after)).toStrictEqual([read(dir, "root.pem")])
    expect(await mutualTls(newLeaf, oldLeaf, after)).toMatchObject({ ok: false })
    expect(await mutualTls(newLeaf, await leafUnder(dir, "spiffe://shop.example/svc/storefront"), after)).toMatchObject({ ok: true })
  }, holdsStarts(3, 10_000))

  it("rotate keeps the issuer signing under the old root: a sidecar that holds only the old root still completes mTLS with a leaf signed after the issuer re-read the directory; switch-intermediate then moves signing to the new root", async () => {
    const order = join(work, "order")
    await initCa({ dir: order, trustDomain: "shop.example" })
    const oldBundle = read(order, "bundle.pem")
    // A sidecar that has not fetched the two-root bundle yet: its leaf and its bundle are the old root's.
    const stale = await leafUnder(order, "spiffe://shop.example/svc/catalog")
    await rotateCa({ dir: order, trustDomain: "shop.example" })
    // What an issuer that re-reads the directory (--ca-reload-interval) signs a renewal with.
    const renewed = await leafUnder(order, "spiffe://shop.example/svc/pricing")
    expect(await mutualTls(renewed, stale, oldBundle)).toStrictEqual({ ok: true, serverSaw: "spiffe://shop.example/svc/catalog", clientSaw: "spiffe://shop.example/svc/pricing" })
    expect(loadIssuingCa(order).trustBundlePem).toBe(read(order, "bundle.pem"))
    expect(certificatesOfPem(read(order, "bundle.pem"))).toHaveLength(2)
    expect(statSync(join(order, "next-intermediate.key.pem")).mode & 0o777).toBe(0o600)
    // Neither step may skip the switch: each would put the old root's intermediate out of reach.
    await expect(renewIntermediate({ dir: order })).rejects.toThrow(/switch-intermediate first/)
    expect(() => finishRotation({ dir: order })).toThrow(/switch-intermediate first/)

    switchIntermediate({ dir: order })
    const switched = await leafUnder(order, "spiffe://shop.example/svc/storefront")
    expect(await mutualTls(switched, stale, read(order, "bundle.pem"))).toMatchObject({ ok: true })
    // Why the switch waits for the fleet: a peer with the old bundle refuses the new root's leaves.
    expect(await mutualTls(switched, stale, oldBundle)).toMatchObject({ ok: false })
    expect(existsSync(join(order, "next-intermediate.pem"))).toBe(false)
    expect(() => switchIntermediate({ dir: order })).toThrow(/ca rotate first/)
  })

  it("switch-intermediate interrupted between its two renames (the new key in service, the old certificate): run again, it completes the switch", async () => {
    const crashed = join(work, "crashed")
    await initCa({ dir: crashed, trustDomain: "shop.example" })
    await rotateCa({ dir: crashed, trustDomain: "shop.example" })
    const next = read(crashed, "next-intermediate.pem")
    // What the first rename left when the process died before the second.
    renameSync(join(crashed, "next-intermediate.key.pem"), join(crashed, "intermediate.key.pem"))
    // The issuer refuses this pair (it keeps its CA; one restarting now would not start).
    expect(() => loadIssuingCa(crashed)).toThrow(/is not the key of/)
    // The other steps refuse too, each naming the switch: it alone can get the directory out of this.
    expect(() => finishRotation({ dir: crashed })).toThrow(/switch-intermediate first/)
    switchIntermediate({ dir: crashed })
    expect(loadIssuingCa(crashed).intermediate.certificatePem).toBe(next)
    expect(existsSync(join(crashed, "next-intermediate.pem"))).toBe(false)
    finishRotation({ dir: crashed })
    expect(certificatesOfPem(read(crashed, "bundle.pem"))).toStrictEqual([read(crashed, "root.pem")])
  })

  it("rotate interrupted before its bundle write: the other steps refuse, naming ca rotate, which run again finishes it (test/identity/caRotateCrash.test.ts stops it after each write)", async () => {
    const torn = join(work, "torn")
    await initCa({ dir: torn, trustDomain: "shop.example" })
    const oldBundle = read(torn, "bundle.pem")
    const inService = read(torn, "intermediate.pem")
    await rotateCa({ dir: torn, trustDomain: "shop.example" })
    const made = { root: read(torn, "root.pem"), next: read(torn, "next-intermediate.pem") }
    // What rotate left when the process died after writing the new root's intermediate, before the two-root bundle.
    writeFileSync(join(torn, "bundle.pem"), oldBundle)
    expect(() => finishRotation({ dir: torn })).toThrow(/stopped midway.*run ca rotate again/)
    expect(() => switchIntermediate({ dir: torn })).toThrow(/stopped midway.*run ca rotate again/)
    await expect(renewIntermediate({ dir: torn })).rejects.toThrow(/stopped midway.*run ca rotate again/)
    // Nothing moved: the issuer still loads the directory, signing under the old root its bundle holds.
    expect(loadIssuingCa(torn).intermediate.certificatePem).toBe(inService)
    expect(await rotateCa({ dir: torn, trustDomain: "shop.example" })).toBe("resumed")
    // What was whole is kept: the new root and its intermediate, the bundle written with both roots.
    expect({ root: read(torn, "root.pem"), next: read(torn, "next-intermediate.pem") }).toStrictEqual(made)
    expect(certificatesOfPem(read(torn, "bundle.pem"))).toStrictEqual([made.root, oldBundle])
    await expect(rotateCa({ dir: torn })).rejects.toThrow(/rotation is in progress .*ca switch-intermediate next/)
  })

  it("rotate keeps the root's trust domain: another one given is refused before anything is written (the issuer would refuse the switched intermediate)", async () => {
    const other = join(work, "other-domain")
    await initCa({ dir: other, trustDomain: "shop.example" })
    const before = { root: read(other, "root.pem"), bundle: read(other, "bundle.pem") }
    await expect(rotateCa({ dir: other, trustDomain: "iip-mesh.local" })).rejects.toThrow(/names trust domain shop\.example, not iip-mesh\.local/)
    expect({ root: read(other, "root.pem"), bundle: read(other, "bundle.pem") }).toStrictEqual(before)
    expect(existsSync(join(other, "next-intermediate.pem"))).toBe(false)
    await rotateCa({ dir: other })
    expect(loadIssuingCa(other).trustDomain).toBe("shop.example")
    switchIntermediate({ dir: other })
    expect(loadIssuingCa(other).trustDomain).toBe("shop.example")
  })

  it("a bad trust domain is refused before anything is written", async () => {
    const result = await cli("ca", "init", "--dir", join(work, "bad"), "--trust-domain", "Shop Example")
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/not a trust domain/)
    expect(existsSync(join(work, "bad"))).toBe(false)
  }, holdsStarts(1, 10_000))
})
