// The mesh's certificates work with node:tls as built: a leaf under root -> intermediate verifies
// in a TLS 1.3 handshake with client certificates both ways, names its SPIFFE ID, and a leaf from
// another root or an expired one is refused by the handshake itself. The handshake (what
// authenticates a peer) anchors only at a self-signed root: an intermediate in a bundle is no
// anchor, and the intermediate's path length 0 holds.
import { X509Certificate } from "node:crypto"
import type { AddressInfo } from "node:net"
import * as tls from "node:tls"
import { afterEach, describe, expect, it } from "vitest"
import { createIntermediateCa, createRootCa, generateKeyPair, issueLeaf, CertificateBuildError } from "../../src/identity/certificates.ts"
import { kubernetesSpiffeId, parseSpiffeId, serviceSpiffeId, spiffeIdOfCertificate } from "../../src/identity/spiffe.ts"

const day = 86_400_000

const makeMesh = async () => {
  const root = await createRootCa({ commonName: "test root", lifetimeMs: 10 * day })
  const intermediate = await createIntermediateCa(root, { commonName: "test intermediate", lifetimeMs: 5 * day })
  const leafFor = async (spiffeId: string, validity: { notBefore?: Date; lifetimeMs: number } = { lifetimeMs: day }) => {
    const pair = await generateKeyPair()
    const leaf = await issueLeaf(intermediate, { spiffeId, publicKey: pair.keys.publicKey, ...validity })
    return { key: pair.privateKeyPem, cert: leaf + intermediate.certificatePem }
  }
  return { root, intermediate, leafFor }
}

const servers: Array<tls.Server> = []
afterEach(() => {
  for (const server of servers.splice(0)) server.close()
})

/** Handshake client -> server; resolves with the server's view of the client's SPIFFE ID or the client's error. */
const handshake = async (
  server: { key: string; cert: string; ca: string },
  client: { key: string; cert: string; ca: string }
): Promise<{ ok: true; clientId: string | undefined; serverId: string | undefined } | { ok: false; error: string }> => {
  let seenClient: string | undefined
  const listener = tls.createServer({ ...server, requestCert: true, rejectUnauthorized: true, minVersion: "TLSv1.3" }, (socket) => {
    seenClient = spiffeIdOfCertificate(socket.getPeerX509Certificate()!)?.text
    socket.end("ok")
  })
  servers.push(listener)
  listener.on("tlsClientError", () => {})
  await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve))
  const port = (listener.address() as AddressInfo).port
  return new Promise((resolve) => {
    const socket = tls.connect({ host: "127.0.0.1", port, ...client, checkServerIdentity: () => undefined, minVersion: "TLSv1.3" })
    socket.on("data", () => {
      const serverId = spiffeIdOfCertificate(socket.getPeerX509Certificate()!)?.text
      socket.destroy()
      resolve({ ok: true, clientId: seenClient, serverId })
    })
    socket.on("error", (error) => resolve({ ok: false, error: String((error as NodeJS.ErrnoException).code ?? error.message) }))
    // In TLS 1.3 the client finishes before the server has judged its certificate: a refusal
    // arrives as an alert (an error above) or as a close without the server's "ok".
    socket.on("close", () => resolve({ ok: false, error: "closed" }))
  })
}

describe("SPIFFE IDs", () => {
  it("formats and parses the two identity forms and refuses malformed ones", () => {
    expect(kubernetesSpiffeId("iip-mesh.local", "shop", "catalog")).toBe("spiffe://iip-mesh.local/ns/shop/sa/catalog")
    expect(serviceSpiffeId("example.org", "pricing")).toBe("spiffe://example.org/svc/pricing")
    expect(parseSpiffeId("spiffe://td/a/b")).toStrictEqual({ trustDomain: "td", path: "/a/b", text: "spiffe://td/a/b" })
    for (const bad of ["http://td/a", "spiffe://TD/a", "spiffe:///a", "spiffe://td/a//b", "spiffe://td/a/../b", "spiffe://td/a/", "spiffe://td/a b", `spiffe://td/${"a".repeat(2100)}`]) {
      expect(parseSpiffeId(bad), bad.slice(0, 40)).toBeUndefined()
    }
    expect(() => serviceSpiffeId("td", "a/../b")).toThrow(/not a valid SPIFFE ID/)
  })
})

describe("certificates", () => {
  it("a leaf under root -> intermediate carries its SPIFFE ID and completes mutual TLS 1.3", async () => {
    const mesh = await makeMesh()
    const server = await mesh.leafFor("spiffe://iip-mesh.local/svc/catalog")
    const client = await mesh.leafFor("spiffe://iip-mesh.local/svc/storefront")
    const result = await handshake({ ...server, ca: mesh.root.certificatePem }, { ...client, ca: mesh.root.certificatePem })
    expect(result).toStrictEqual({ ok: true, clientId: "spiffe://iip-mesh.local/svc/storefront", serverId: "spiffe://iip-mesh.local/svc/catalog" })
    const leaf = new X509Certificate(server.cert)
    expect(leaf.ca).toBe(false)
    expect(leaf.checkIssued(new X509Certificate(mesh.intermediate.certificatePem))).toBe(true)
  })

  it("a client leaf from another root is refused by the handshake", async () => {
    const mesh = await makeMesh()
    const foreign = await makeMesh()
    const server = await mesh.leafFor("spiffe://iip-mesh.local/svc/catalog")
    const intruder = await foreign.leafFor("spiffe://iip-mesh.local/svc/storefront")
    const result = await handshake({ ...server, ca: mesh.root.certificatePem }, { ...intruder, ca: mesh.root.certificatePem })
    expect(result.ok).toBe(false)
  })

  it("an expired server leaf is refused by the client", async () => {
    const mesh = await makeMesh()
    const expired = await mesh.leafFor("spiffe://iip-mesh.local/svc/catalog", { notBefore: new Date(Date.now() - 2 * day), lifetimeMs: day })
    const client = await mesh.leafFor("spiffe://iip-mesh.local/svc/storefront")
    const result = await handshake({ ...expired, ca: mesh.root.certificatePem }, { ...client, ca: mesh.root.certificatePem })
    expect(result).toStrictEqual({ ok: false, error: "CERT_HAS_EXPIRED" })
  })

  it("only a root anchors a peer: a bundle of just the intermediate is refused (no partial chains), a CA under the intermediate exceeds its path length", async () => {
    const mesh = await makeMesh()
    const client = await mesh.leafFor("spiffe://iip-mesh.local/svc/storefront")
    const server = await mesh.leafFor("spiffe://iip-mesh.local/svc/catalog")
    const intermediateOnly = mesh.intermediate.certificatePem
    expect(await handshake({ ...server, ca: intermediateOnly }, { ...client, ca: intermediateOnly })).toStrictEqual({ ok: false, error: "UNABLE_TO_GET_ISSUER_CERT" })
    // Whoever holds the intermediate's key (the issuer) minting a CA of its own: peers refuse what it signs.
    const subCa = await createIntermediateCa(mesh.intermediate, { commonName: "minted CA", lifetimeMs: day })
    const minted = await generateKeyPair()
    const mintedLeaf = await issueLeaf(subCa, { spiffeId: "spiffe://iip-mesh.local/svc/catalog", publicKey: minted.keys.publicKey, lifetimeMs: day })
    const viaSubCa = { key: minted.privateKeyPem, cert: mintedLeaf + subCa.certificatePem + mesh.intermediate.certificatePem, ca: mesh.root.certificatePem }
    expect(await handshake(viaSubCa, { ...client, ca: mesh.root.certificatePem })).toStrictEqual({ ok: false, error: "PATH_LENGTH_EXCEEDED" })
  })

  it("refuses to issue for an invalid SPIFFE ID or with a key that is not the issuer's kind", async () => {
    const mesh = await makeMesh()
    const pair = await generateKeyPair()
    await expect(issueLeaf(mesh.intermediate, { spiffeId: "spiffe://td/a/../b", publicKey: pair.keys.publicKey, lifetimeMs: day })).rejects.toBeInstanceOf(CertificateBuildError)
    await expect(issueLeaf({ ...mesh.intermediate, privateKeyPem: "junk" }, { spiffeId: "spiffe://td/a", publicKey: pair.keys.publicKey, lifetimeMs: day })).rejects.toBeInstanceOf(CertificateBuildError)
  })
})
