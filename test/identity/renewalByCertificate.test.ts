// The certificate-based renewal attacked (a new way to earn an identity): past its join token's
// end, a sign call earns `spiffe://<td>/svc/<service>` only when it presents, as its TLS client
// certificate, a current, verifiable leaf naming exactly that ID. Each certificate here is made
// by the test as an attacker holding some key would make it, presented with the expired token of
// the service it wants, to a real issuer on 127.0.0.1:0. Presenting one changes nothing for a
// Kubernetes proof; it reaches the issuer through a TCP relay, not through a proxy terminating TLS.
import "reflect-metadata"
import * as x509 from "@peculiar/x509"
import { randomBytes, webcrypto } from "node:crypto"
import * as net from "node:net"
import * as tls from "node:tls"
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest"
import type { CertifiedKey } from "../../src/identity/certificates.ts"
import { createIntermediateCa, createRootCa, generateKeyPair, issueLeaf, validFromNow } from "../../src/identity/certificates.ts"
import { createCertificateRequest } from "../../src/identity/certificateRequest.ts"
import { parseJoinTokens } from "../../src/identity/proofs.ts"
import { issuerSigner } from "../../src/identity/signers.ts"
import { issuerSpiffeId } from "../../src/identity/spiffe.ts"
import { audience, makeIssuingCa, type RunningIssuer, startFakeApiServer, startIssuer, trustDomain } from "../support/identityTest.ts"

const day = 86_400_000
const catalogToken = "c".repeat(40)
const catalog = `spiffe://${trustDomain}/svc/catalog`
const signingAlgorithm = { name: "ECDSA", hash: "SHA-256" } as const

let ca: Awaited<ReturnType<typeof makeIssuingCa>>
let running: RunningIssuer
beforeAll(async () => {
  ca = await makeIssuingCa()
  // catalog's token ended a day ago: only a certificate earns catalog's identity now.
  running = await startIssuer(ca, { joinTokens: parseJoinTokens(`${catalogToken} catalog,pricing\n`, { writtenAt: Date.now() - 2 * day, defaultTtlMs: day }) })
})
afterAll(async () => {
  await running?.stop()
})

const signingKeyOf = (signer: CertifiedKey) =>
  webcrypto.subtle.importKey("pkcs8", Buffer.from(signer.privateKeyPem.replace(/-----[A-Z ]+-----|\s+/g, ""), "base64"), { name: "ECDSA", namedCurve: "P-256" }, false, ["sign"])

/** What a client presents: its key and its chain, leaf first. */
interface Held {
  readonly privateKeyPem: string
  readonly certificateChainPem: string
}

/** A leaf signed by `signer` (its certificate and key), the way an attacker holding that key could make one. */
const forge = async (
  signer: CertifiedKey,
  options: {
    readonly uris: ReadonlyArray<string>
    readonly notBefore?: Date
    readonly notAfter?: Date
    readonly ca?: boolean
    readonly chain?: string
  }
): Promise<Held> => {
  const pair = await generateKeyPair()
  const parent = new x509.X509Certificate(signer.certificatePem)
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: randomBytes(8).toString("hex").replace(/^./, "1"),
    subject: options.ca === true ? [{ CN: ["forged ca"] }] : [],
    issuer: parent.subject,
    notBefore: options.notBefore ?? new Date(Date.now() - 60_000),
    notAfter: options.notAfter ?? new Date(Date.now() + day),
    publicKey: pair.keys.publicKey,
    signingKey: await signingKeyOf(signer),
    signingAlgorithm,
    extensions: [
      new x509.BasicConstraintsExtension(options.ca === true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement | (options.ca === true ? x509.KeyUsageFlags.keyCertSign : 0), true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension(options.uris.map((value) => ({ type: "url" as const, value })), true),
      await x509.AuthorityKeyIdentifierExtension.create(parent)
    ]
  })
  return { privateKeyPem: pair.privateKeyPem, certificateChainPem: certificate.toString("pem") + "\n" + (options.chain ?? signer.certificatePem) }
}

/** A sign call for catalog's identity with catalog's (expired) token, presenting `held`: the ID signed, or the refusal. */
const renewCatalog = async (held: Held | undefined, token = catalogToken, issuerUrl = running.url) => {
  const pair = await generateKeyPair()
  const signer = issuerSigner({ issuerUrl, trustDomain, trustBundle: () => ca.trustBundlePem, proof: () => ({ kind: "join", token }), credentials: () => held })
  return signer(await createCertificateRequest(pair.keys, catalog)).then((answer) => answer.spiffeId, (error: Error) => error.message)
}

const expiredToken = /^the issuer refused \(401 bad-join-token\): the join token expired at /

describe("renewal by certificate: what earns it", () => {
  it("a current leaf of the issuer's CA naming exactly the service's ID, with its chain, earns it (control)", async () => {
    expect(await renewCatalog(await forge(ca.intermediate, { uris: [catalog] }))).toBe(catalog)
    expect(await renewCatalog(undefined)).toMatch(expiredToken)
  })

  it("a leaf of the issuer's CA that has expired, or is not valid yet, earns nothing", async () => {
    expect(await renewCatalog(await forge(ca.intermediate, { uris: [catalog], notBefore: new Date(Date.now() - 2 * day), notAfter: new Date(Date.now() - 60_000) }))).toMatch(expiredToken)
    expect(await renewCatalog(await forge(ca.intermediate, { uris: [catalog], notBefore: new Date(Date.now() + 3_600_000), notAfter: new Date(Date.now() + day) }))).toMatch(expiredToken)
  })

  it("a leaf of the issuer's CA naming another trust domain, another service, or a variant of the ID, earns nothing", async () => {
    const variants = [
      `spiffe://other.mesh/svc/catalog`,
      `spiffe://${trustDomain}/svc/pricing`,
      `spiffe://${trustDomain}/svc/catalogx`,
      `spiffe://${trustDomain}/svc/catalo`,
      `spiffe://${trustDomain}/svc/Catalog`,
      `spiffe://${trustDomain}/svc/catalog/`,
      `spiffe://${trustDomain}/svc/catalog/x`,
      `spiffe://${trustDomain}/svc/cat%61log`,
      `spiffe://${trustDomain}//svc/catalog`,
      `spiffe://${trustDomain}/x/svc/catalog`,
      `spiffe://${trustDomain.toUpperCase()}/svc/catalog`,
      `spiffe://${trustDomain}:443/svc/catalog`,
      `spiffe://x@${trustDomain}/svc/catalog`,
      `spiffe://${trustDomain}/svc/catalog?x=1`,
      `spiffe://${trustDomain}/svc/catalog#x`,
      `https://${trustDomain}/svc/catalog`,
      `spiffe://${trustDomain}`
    ]
    for (const uri of variants) expect([uri, await renewCatalog(await forge(ca.intermediate, { uris: [uri] }))]).toStrictEqual([uri, expect.stringMatching(expiredToken)])
  })

  it("a leaf with two URI SANs earns nothing, even both the service's own ID", async () => {
    expect(await renewCatalog(await forge(ca.intermediate, { uris: [catalog, catalog] }))).toMatch(expiredToken)
    expect(await renewCatalog(await forge(ca.intermediate, { uris: [catalog, `spiffe://${trustDomain}/svc/pricing`] }))).toMatch(expiredToken)
  })

  it("a CA certificate presented as the leaf earns nothing: the bundle's root itself, or a CA under the intermediate naming the service", async () => {
    const root = await createRootCa({ commonName: "attack root", trustDomain, lifetimeMs: day })
    const issuing = await makeIssuingCaWithRoot(root)
    // The root as a leaf: the chain is the trust anchor itself.
    expect(await renewCatalogAt(issuing, { privateKeyPem: root.privateKeyPem, certificateChainPem: root.certificatePem })).toMatch(expiredToken)
    expect(await renewCatalog(await forge(ca.intermediate, { uris: [catalog], ca: true }))).toMatch(expiredToken)
  })

  it("a leaf under a second intermediate (a CA below the issuing one) earns nothing; a leaf sent without its intermediate earns nothing", async () => {
    const sub = await forgeCa(ca.intermediate, "sub intermediate")
    expect(await renewCatalog(await forge(sub, { uris: [catalog], chain: sub.certificatePem + ca.intermediate.certificatePem }))).toMatch(expiredToken)
    expect(await renewCatalog(await forge(ca.intermediate, { uris: [catalog], chain: "" }))).toMatch(expiredToken)
  })

  it("a leaf signed by a key not in the bundle under a CA certificate with the same subject (the intermediate's, or the root's) earns nothing", async () => {
    const lookalikeRoot = await createRootCa({ commonName: "test root", trustDomain, lifetimeMs: day })
    const lookalikeIntermediate = await createIntermediateCa(lookalikeRoot, { commonName: "test intermediate", trustDomain, lifetimeMs: day })
    expect(await renewCatalog(await forge(lookalikeIntermediate, { uris: [catalog] }))).toMatch(expiredToken)
    expect(await renewCatalog(await forge(lookalikeIntermediate, { uris: [catalog], chain: lookalikeIntermediate.certificatePem + lookalikeRoot.certificatePem }))).toMatch(expiredToken)
  })

  it("a current certificate of the service does not make a token good that is not in the file (revoked), even while another token of that service is", async () => {
    const held = await forge(ca.intermediate, { uris: [catalog] })
    expect(await renewCatalog(held, "r".repeat(40))).toBe("the issuer refused (401 bad-join-token): unknown join token")
  })
})

/**
 * A raw TLS client presenting `held` (and resuming `session` when given) that POSTs catalog's
 * renewal and closes: the status, whether the session was resumed, and the session it was given.
 */
const rawRenew = async (held: Held, session?: Buffer) => {
  const pair = await generateKeyPair()
  const body = JSON.stringify({ csr: await createCertificateRequest(pair.keys, catalog), proof: { kind: "join", token: catalogToken } })
  return new Promise<{ status: number; reused: boolean; session: Buffer | undefined }>((resolve, reject) => {
    const chunks: Array<Buffer> = []
    let given: Buffer | undefined
    let reused = false
    const socket = tls.connect(
      { host: "127.0.0.1", port: Number(new URL(running.url).port), rejectUnauthorized: false, key: held.privateKeyPem, cert: held.certificateChainPem, ...(session === undefined ? {} : { session }) },
      () => {
        reused = socket.isSessionReused()
        socket.write(`POST /v1/sign HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
      }
    )
    socket.on("session", (ticket: Buffer) => (given = ticket))
    socket.on("data", (chunk: Buffer) => chunks.push(chunk))
    socket.on("error", reject)
    socket.on("close", () => resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(Buffer.concat(chunks).toString())?.[1] ?? 0), reused, session: given }))
  })
}

describe("renewal by certificate: a connection or session outliving what it was verified against", () => {
  it("a TLS session resumed after its certificate expired earns nothing: the certificate is judged on the call, not when it was first shown", async () => {
    const notAfter = new Date(Math.ceil(Date.now() / 1000) * 1000 + 1_000)
    const held = await forge(ca.intermediate, { uris: [catalog], notAfter })
    const first = await rawRenew(held)
    expect(first.status).toBe(200)
    expect(first.session).toBeDefined()
    // The certificate's end is on the wall clock (OpenSSL judges it there): wait for it, bounded.
    await vi.waitFor(() => expect(Date.now()).toBeGreaterThan(notAfter.getTime() + 1_000), { timeout: 5_000, interval: 50 })
    const resumed = await rawRenew(held, first.session)
    expect(resumed.reused).toBe(true)
    expect(resumed.status).toBe(401)
    // The same certificate shown afresh is refused, as it should be.
    expect((await rawRenew(held)).status).toBe(401)
  })

  it("a connection kept alive past its certificate's end earns nothing more with it", async () => {
    const notAfter = new Date(Math.ceil(Date.now() / 1000) * 1000 + 1_000)
    const connection = await keptAlive(running.url, await forge(ca.intermediate, { uris: [catalog], notAfter }))
    try {
      expect(await connection.renew()).toBe(200)
      await vi.waitFor(() => expect(Date.now()).toBeGreaterThan(notAfter.getTime() + 1_000), { timeout: 5_000, interval: 50 })
      expect(await connection.renew()).toBe(401)
    } finally {
      connection.close()
    }
  })

  it("a connection kept alive across a CA replacement that drops its certificate's root earns nothing more with it (it would renew into the new CA)", async () => {
    const rotating = await startIssuer(ca, { joinTokens: parseJoinTokens(`${catalogToken} catalog\n`, { writtenAt: Date.now() - 2 * day, defaultTtlMs: day }), requestTimeoutMs: 1_000 })
    const connection = await keptAlive(rotating.url, await forge(ca.intermediate, { uris: [catalog] }))
    try {
      expect(await connection.renew()).toBe(200)
      const next = await makeIssuingCa("next")
      await rotating.issuer.replaceCa(next)
      const replaced = Date.now()
      expect(await connection.renew()).toBe(401)
      // A new connection with a certificate of the new CA renews once no handshake can have begun
      // before the replacement (the handshake's bound, requestTimeoutMs: 1 s here), waited for.
      await vi.waitFor(() => expect(Date.now()).toBeGreaterThan(replaced + 1_000), { timeout: 5_000, interval: 50 })
      const fresh = await keptAlive(rotating.url, await forge(next.intermediate, { uris: [catalog] }))
      expect(await fresh.renew()).toBe(200)
      fresh.close()
    } finally {
      connection.close()
      await rotating.stop()
    }
  })
})

/** A TLS connection to `url` presenting `held`, kept open: renew() sends catalog's renewal on it and resolves with the status once the whole answer is in. */
const keptAlive = async (url: string, held: Held) => {
  const socket = tls.connect({ host: "127.0.0.1", port: Number(new URL(url).port), rejectUnauthorized: false, key: held.privateKeyPem, cert: held.certificateChainPem })
  socket.on("error", () => {})
  await new Promise((resolve) => socket.once("secureConnect", resolve))
  let received = ""
  socket.on("data", (chunk: Buffer) => (received += chunk.toString()))
  const renew = async () => {
    const pair = await generateKeyPair()
    const body = JSON.stringify({ csr: await createCertificateRequest(pair.keys, catalog), proof: { kind: "join", token: catalogToken } })
    received = ""
    socket.write(`POST /v1/sign HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
    await vi.waitFor(() => {
      const head = /^HTTP\/1\.1 (\d{3})[^]*?content-length: (\d+)\r\n[^]*?\r\n\r\n/i.exec(received)
      expect(head !== null && Buffer.byteLength(received) >= head[0].length + Number(head[2])).toBe(true)
    }, { timeout: 5_000, interval: 5 })
    return Number(received.slice(9, 12))
  }
  return { renew, close: () => socket.destroy() }
}

describe("renewal by certificate: what presenting one does elsewhere", () => {
  it("a Kubernetes proof is judged by its token alone: a presented certificate (of a service, expired, foreign) neither blocks nor changes the identity it earns", async () => {
    const api = await startFakeApiServer({ good: { username: "system:serviceaccount:shop:catalog", audiences: [audience] } })
    const issuing = await startIssuer(ca, { apiUrl: api.url })
    try {
      const foreign = await makeIssuingCa("foreign")
      const presented = [
        await forge(ca.intermediate, { uris: [catalog] }),
        await forge(ca.intermediate, { uris: [`spiffe://${trustDomain}/ns/shop/sa/catalog`], notBefore: new Date(Date.now() - 2 * day), notAfter: new Date(Date.now() - 60_000) }),
        await forge(foreign.intermediate, { uris: [`spiffe://${trustDomain}/ns/shop/sa/catalog`] })
      ]
      for (const held of presented) {
        const pair = await generateKeyPair()
        const signer = issuerSigner({ issuerUrl: issuing.url, trustDomain, trustBundle: () => ca.trustBundlePem, proof: () => ({ kind: "kubernetes", token: "good" }), credentials: () => held })
        expect((await signer(await createCertificateRequest(pair.keys, undefined))).spiffeId).toBe(`spiffe://${trustDomain}/ns/shop/sa/catalog`)
        // The service's certificate does not lift a Kubernetes proof to the service's identity.
        await expect(signer(await createCertificateRequest(pair.keys, catalog))).rejects.toThrow(/403 identity-not-allowed/)
      }
    } finally {
      await issuing.stop()
      await api.close()
    }
  })

  it("behind a TCP relay the certificate reaches the issuer and renews; behind a proxy that terminates TLS it cannot (the issuer sees the proxy's connection): such a proxy must pass TLS through", async () => {
    const relays: Array<net.Server> = []
    const sockets = new Set<net.Socket>()
    /** A proxy on 127.0.0.1:0 passing each connection to the issuer: as bytes, or through TLS of its own (as the issuer, asking for client certificates). */
    const proxy = async (terminate: boolean) => {
      const pair = await generateKeyPair()
      const cert = (await issueLeaf(ca.intermediate, { spiffeId: issuerSpiffeId(trustDomain), publicKey: pair.keys.publicKey, ...validFromNow(day) })) + ca.intermediate.certificatePem
      const port = Number(new URL(running.url).port)
      const relay = (client: net.Socket) => {
        const upstream = terminate ? tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false }) : net.connect(port, "127.0.0.1")
        sockets.add(client).add(upstream)
        client.on("error", () => upstream.destroy())
        upstream.on("error", () => client.destroy())
        client.pipe(upstream).pipe(client)
      }
      const server = terminate ? tls.createServer({ key: pair.privateKeyPem, cert, requestCert: true, rejectUnauthorized: false }, relay) : net.createServer(relay)
      relays.push(server)
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
      return `https://127.0.0.1:${(server.address() as net.AddressInfo).port}`
    }
    try {
      const held = await forge(ca.intermediate, { uris: [catalog] })
      expect(await renewCatalog(held, catalogToken, await proxy(false))).toBe(catalog)
      expect(await renewCatalog(held, catalogToken, await proxy(true))).toMatch(expiredToken)
    } finally {
      for (const socket of sockets) socket.destroy()
      await Promise.all(relays.map((server) => new Promise((resolve) => server.close(resolve))))
    }
  })
})

/** A CA under `signer` (no path length of its own): below the issuing intermediate, whose path length is 0. */
const forgeCa = async (signer: CertifiedKey, commonName: string): Promise<CertifiedKey> => {
  const pair = await generateKeyPair()
  const parent = new x509.X509Certificate(signer.certificatePem)
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: randomBytes(8).toString("hex").replace(/^./, "1"),
    subject: [{ CN: [commonName] }],
    issuer: parent.subject,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + day),
    publicKey: pair.keys.publicKey,
    signingKey: await signingKeyOf(signer),
    signingAlgorithm,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(pair.keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(parent)
    ]
  })
  return { certificatePem: certificate.toString("pem") + "\n", privateKeyPem: pair.privateKeyPem }
}

/** An issuing CA whose root (key included) the test holds. */
const makeIssuingCaWithRoot = async (root: CertifiedKey) => {
  const intermediate = await createIntermediateCa(root, { commonName: "attack intermediate", trustDomain, lifetimeMs: day })
  return { intermediate, trustBundlePem: root.certificatePem, trustDomain }
}

/** renewCatalog against an issuer of `issuing`, started and stopped for the one call. */
const renewCatalogAt = async (issuing: Awaited<ReturnType<typeof makeIssuingCaWithRoot>>, held: Held) => {
  const other = await startIssuer(issuing, { joinTokens: parseJoinTokens(`${catalogToken} catalog\n`, { writtenAt: Date.now() - 2 * day, defaultTtlMs: day }) })
  try {
    const pair = await generateKeyPair()
    const signer = issuerSigner({ issuerUrl: other.url, trustDomain, trustBundle: () => issuing.trustBundlePem, proof: () => ({ kind: "join", token: catalogToken }), credentials: () => held })
    return await signer(await createCertificateRequest(pair.keys, catalog)).then((answer) => answer.spiffeId, (error: Error) => error.message)
  } finally {
    await other.stop()
  }
}
