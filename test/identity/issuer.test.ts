// The issuer (`iip-mesh identity`) over real HTTPS with a fake Kubernetes API server answering
// TokenReviews: a good ServiceAccount token earns spiffe://td/ns/<ns>/sa/<sa>, a good join token
// spiffe://td/svc/<service>; a token for the wrong audience, of an unknown account, a bad or
// unbound join token, a CSR asking for another identity and a malformed CSR are refused with a
// typed reason, counted and logged, and the issuer's certificate is verified by the sidecar.
import { X509Certificate } from "node:crypto"
import * as https from "node:https"
import { afterEach, beforeAll, describe, expect, it } from "vitest"
import { generateKeyPair } from "../../src/identity/certificates.ts"
import { createCertificateRequest } from "../../src/identity/certificateRequest.ts"
import type { ProofKind } from "../../src/identity/issuer.ts"
import { issuerSigner } from "../../src/identity/signers.ts"
import { spiffeIdOfCertificate } from "../../src/identity/spiffe.ts"
import { chainProblem } from "../../src/identity/trustBundle.ts"
import { audience, type FakeApiServer, joinTokensNow, makeIssuingCa, type RunningIssuer, startFakeApiServer, startIssuer, trustDomain } from "../support/identityTest.ts"

const catalogJoinToken = "j".repeat(40)
const sharedJoinToken = "s".repeat(40)

let ca: Awaited<ReturnType<typeof makeIssuingCa>>
let api: FakeApiServer
let running: RunningIssuer

beforeAll(async () => {
  ca = await makeIssuingCa()
  api = await startFakeApiServer({
    "good": { username: "system:serviceaccount:shop:catalog", audiences: [audience] },
    "for-the-api-server": { username: "system:serviceaccount:shop:catalog", audiences: ["https://kubernetes.default.svc"] },
    "deleted-account": { username: "system:serviceaccount:shop:gone", audiences: [audience], exists: false },
    "a-person": { username: "alice@example.org", audiences: [audience] },
    "audience-ignored": { username: "system:serviceaccount:shop:catalog", audiences: ["other"], ignoreAudiences: true }
  })
  running = await startIssuer(ca, {
    apiUrl: api.url,
    joinTokens: joinTokensNow(`${catalogJoinToken} catalog\n# a token two services share\n${sharedJoinToken} pricing,storefront\n`)
  })
  return async () => {
    await running.stop()
    await api.close()
  }
})

afterEach(() => {
  running.events.splice(0)
})

/** Asks the issuer for a leaf over a fresh key; resolves with the leaf's SPIFFE ID or rejects with the issuer's refusal. */
const ask = async (kind: ProofKind, token: string, requestedId?: string) => {
  const pair = await generateKeyPair()
  const signer = issuerSigner({ issuerUrl: running.url, trustDomain, trustBundle: () => ca.trustBundlePem, proof: () => ({ kind, token }) })
  const answer = await signer(await createCertificateRequest(pair.keys, requestedId))
  const leafPem = answer.certificateChainPem
  expect(chainProblem(leafPem, answer.trustBundlePem, new Date())).toBeUndefined()
  const leaf = new X509Certificate(leafPem)
  const lifeHours = (new Date(leaf.validTo).getTime() - new Date(leaf.validFrom).getTime()) / 3_600_000
  return { id: spiffeIdOfCertificate(leaf)?.text, answer, lifeHours }
}

const refusedCount = (reason: string) => (running.issuer.refused() as Record<string, number>)[reason]

describe("issuer: Kubernetes ServiceAccount tokens", () => {
  it("a token for the issuer's audience earns spiffe://td/ns/<ns>/sa/<sa> for 24 h, asked of TokenReview with that audience", async () => {
    const { id, answer, lifeHours } = await ask("kubernetes", "good")
    expect(id).toBe(`spiffe://${trustDomain}/ns/shop/sa/catalog`)
    expect(answer.spiffeId).toBe(id)
    expect(lifeHours).toBeCloseTo(24, 1)
    const review = api.reviews.at(-1)!
    expect(review.body.spec).toStrictEqual({ token: "good", audiences: [audience] })
    expect(review.authorization).toBe("Bearer issuer-own-token")
    expect(running.events.some((e) => e.event === "identity-issued" && e.fields.spiffeId === id)).toBe(true)
  })

  it("a token minted for another audience is refused wrong-audience, also from an API server that ignores audiences", async () => {
    const before = refusedCount("wrong-audience")!
    await expect(ask("kubernetes", "for-the-api-server")).rejects.toThrow(/401 wrong-audience/)
    await expect(ask("kubernetes", "audience-ignored")).rejects.toThrow(/401 wrong-audience/)
    expect(refusedCount("wrong-audience")).toBe(before + 2)
    const logged = running.events.filter((e) => e.event === "identity-refused")
    expect(logged.map((e) => e.fields.reason)).toStrictEqual(["wrong-audience", "wrong-audience"])
    expect(JSON.stringify(logged)).not.toContain("for-the-api-server")
  })

  it("an unknown ServiceAccount's token and a token that is no ServiceAccount's are refused", async () => {
    await expect(ask("kubernetes", "deleted-account")).rejects.toThrow(/401 unauthenticated/)
    await expect(ask("kubernetes", "never-issued")).rejects.toThrow(/401 unauthenticated/)
    await expect(ask("kubernetes", "a-person")).rejects.toThrow(/403 not-a-service-account/)
  })

  it("a CSR asking for another identity than the token's is refused", async () => {
    await expect(ask("kubernetes", "good", `spiffe://${trustDomain}/ns/shop/sa/payments`)).rejects.toThrow(/403 identity-not-allowed.*asks for spiffe:\/\/test\.mesh\/ns\/shop\/sa\/payments/)
    await expect(ask("kubernetes", "good", `spiffe://${trustDomain}/ns/shop/sa/catalog`)).resolves.toMatchObject({ id: `spiffe://${trustDomain}/ns/shop/sa/catalog` })
  })

  it("over HTTPS the API server is verified against the given CA: a token reviewed there is granted; with another CA nothing is", async () => {
    const secure = await startFakeApiServer({ "good": { username: "system:serviceaccount:shop:catalog", audiences: [audience] } }, { tls: true })
    const trusting = await startIssuer(ca, { apiUrl: secure.url, apiCa: secure.ca })
    const distrusting = await startIssuer(ca, { apiUrl: secure.url, apiCa: ca.trustBundlePem })
    try {
      const signVia = async (issuerUrl: string) => {
        const pair = await generateKeyPair()
        const signer = issuerSigner({ issuerUrl, trustDomain, trustBundle: () => ca.trustBundlePem, proof: () => ({ kind: "kubernetes", token: "good" }) })
        return signer(await createCertificateRequest(pair.keys, undefined))
      }
      expect((await signVia(trusting.url)).spiffeId).toBe(`spiffe://${trustDomain}/ns/shop/sa/catalog`)
      await expect(signVia(distrusting.url)).rejects.toThrow(/503 token-review-unavailable/)
      expect(secure.reviews).toHaveLength(1)
    } finally {
      await trusting.stop()
      await distrusting.stop()
      await secure.close()
    }
  })

  it("an API server that does not answer in time is token-review-unavailable (503), not a grant; signings past maxInFlight are refused overloaded", async () => {
    let reviewArrived: () => void = () => {}
    const arrived = new Promise<void>((resolve) => (reviewArrived = resolve))
    const silent = await import("node:http").then((http) => http.createServer(() => reviewArrived()))
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve))
    const slow = await startIssuer(ca, { apiUrl: `http://127.0.0.1:${(silent.address() as import("node:net").AddressInfo).port}`, maxInFlight: 1 })
    try {
      const pair = await generateKeyPair()
      const signer = issuerSigner({ issuerUrl: slow.url, trustDomain, trustBundle: () => ca.trustBundlePem, proof: () => ({ kind: "kubernetes", token: "good" }) })
      const csr = await createCertificateRequest(pair.keys, undefined)
      const started = Date.now()
      const first = signer(csr)
      first.catch(() => {})
      await arrived
      // The first is waiting for the API server: the second finds the one slot taken.
      await expect(signer(csr)).rejects.toThrow(/503 overloaded/)
      await expect(first).rejects.toThrow(/503 token-review-unavailable/)
      expect(Date.now() - started).toBeLessThan(5_000)
      expect(slow.issuer.refused()).toMatchObject({ "overloaded": 1, "token-review-unavailable": 1 })
    } finally {
      await slow.stop()
      silent.closeAllConnections()
      silent.close()
    }
  })
})

describe("issuer: join tokens", () => {
  it("a join token earns spiffe://td/svc/<service> for the service it is bound to", async () => {
    expect((await ask("join", catalogJoinToken, `spiffe://${trustDomain}/svc/catalog`)).id).toBe(`spiffe://${trustDomain}/svc/catalog`)
    expect((await ask("join", catalogJoinToken)).id).toBe(`spiffe://${trustDomain}/svc/catalog`)
    expect((await ask("join", sharedJoinToken, `spiffe://${trustDomain}/svc/storefront`)).id).toBe(`spiffe://${trustDomain}/svc/storefront`)
    expect(running.issuer.signed().join).toBeGreaterThanOrEqual(3)
  })

  it("a bad join token, one not bound to the service asked for, and a foreign identity are refused", async () => {
    await expect(ask("join", "x".repeat(40), `spiffe://${trustDomain}/svc/catalog`)).rejects.toThrow(/401 bad-join-token/)
    await expect(ask("join", catalogJoinToken, `spiffe://${trustDomain}/svc/pricing`)).rejects.toThrow(/403 identity-not-allowed/)
    await expect(ask("join", catalogJoinToken, `spiffe://${trustDomain}/ns/shop/sa/catalog`)).rejects.toThrow(/403 identity-not-allowed/)
    await expect(ask("join", catalogJoinToken, `spiffe://other.mesh/svc/catalog`)).rejects.toThrow(/403 identity-not-allowed/)
    await expect(ask("join", sharedJoinToken)).rejects.toThrow(/403 identity-not-allowed.*several services/)
    expect(running.events.filter((e) => e.event === "identity-refused").map((e) => e.fields.reason)).toStrictEqual([
      "bad-join-token",
      "identity-not-allowed",
      "identity-not-allowed",
      "identity-not-allowed",
      "identity-not-allowed"
    ])
  })

  it("a join-token file with a short token or a bad service name does not load", () => {
    expect(() => joinTokensNow("short catalog")).toThrow(/line 1: a token must be at least 32 characters/)
    expect(() => joinTokensNow(`${catalogJoinToken} Catalog`)).toThrow(/not service names/)
    expect(joinTokensNow(`sha256:${"ab".repeat(32)} catalog`)).toHaveLength(1)
  })

  it("a line with its columns swapped (SERVICE TOKEN) is refused without the token in the message: the issuer logs it on a re-read", () => {
    const token = "Zx9_kQ2-".repeat(6)
    const refusal = (() => {
      try {
        joinTokensNow(`catalog ${token}\n`)
        return "loaded"
      } catch (error) {
        return (error as Error).message
      }
    })()
    expect(refusal).toMatch(/line 1: a token must be at least 32 characters/)
    expect(refusal).not.toContain(token.slice(0, 8))
    // A third field that is not expires= (a second token pasted on the line) is not quoted either; a bad expires= is.
    expect(() => joinTokensNow(`${catalogJoinToken} catalog ${token}\n`)).toThrow(/line 1: expected expires=<RFC 3339 time with its zone, e\.g\. 2027-01-02T03:04:05Z>, got a third field that is not expires=$/)
    expect(() => joinTokensNow(`${catalogJoinToken} catalog expires=2027-02-30T00:00:00Z\n`)).toThrow(/got "expires=2027-02-30T00:00:00Z"$/)
  })
})

/** A raw POST to the issuer; resolves with status and body. */
const post = (path: string, body: string | Buffer, headers: Record<string, string> = {}) =>
  new Promise<{ status: number; body: string }>((resolve, reject) => {
    const request = https.request(`${running.url}${path}`, { method: "POST", ca: ca.trustBundlePem, checkServerIdentity: () => undefined, headers: { "content-type": "application/json", ...headers } }, (response) => {
      let text = ""
      response.on("data", (chunk: Buffer) => (text += chunk.toString()))
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body: text }))
    })
    request.on("error", reject)
    request.end(body)
  })

describe("issuer: malformed input", () => {
  it("a malformed CSR, a CSR whose signature does not verify, a body that is not a request, and an oversized body are refused", async () => {
    const pair = await generateKeyPair()
    const csr = await createCertificateRequest(pair.keys, `spiffe://${trustDomain}/svc/catalog`)
    const proof = { kind: "join", token: catalogJoinToken }
    const garbage = await post("/v1/sign", JSON.stringify({ csr: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", proof }))
    expect(garbage.status).toBe(400)
    expect(JSON.parse(garbage.body).error).toBe("malformed-csr")
    // Flip a byte of the signature (the end of the DER): the request no longer proves the key.
    const body64 = csr.replace(/-----[A-Z ]+-----/g, "").replace(/\s+/g, "")
    const der = Buffer.from(body64, "base64")
    der[der.length - 2] = der[der.length - 2]! ^ 0x01
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString("base64")}\n-----END CERTIFICATE REQUEST-----\n`
    const forged = await post("/v1/sign", JSON.stringify({ csr: tampered, proof }))
    expect(forged.status).toBe(400)
    expect(JSON.parse(forged.body).message).toMatch(/does not verify|does not parse/)
    expect((await post("/v1/sign", "not json")).status).toBe(400)
    expect(JSON.parse((await post("/v1/sign", JSON.stringify({ csr, proof: { kind: "password", token: "x" } }))).body).message).toMatch(/proof.kind/)
    const huge = await post("/v1/sign", Buffer.alloc(64 * 1024, 0x20))
    expect(huge.status).toBe(400)
    expect(JSON.parse(huge.body).message).toMatch(/larger than 16384 bytes/)
    expect(refusedCount("malformed-csr")).toBeGreaterThanOrEqual(2)
  })

  it("/metrics counts signings and refusals by reason; other paths are 404", async () => {
    const text = await new Promise<string>((resolve, reject) =>
      https.get(`${running.url}/metrics`, { ca: ca.trustBundlePem, checkServerIdentity: () => undefined }, (response) => {
        let body = ""
        response.on("data", (chunk: Buffer) => (body += chunk.toString()))
        response.on("end", () => resolve(body))
      }).on("error", reject))
    expect(text).toMatch(/^iip_mesh_issuer_refused_total\{reason="malformed-csr"\} [1-9]/m)
    expect(text).toMatch(/^iip_mesh_issuer_signed_total\{proof="join"\} [1-9]/m)
    expect((await post("/v2/anything", "{}")).status).toBe(404)
  })
})

describe("issuer: its own certificate", () => {
  it("names spiffe://td/issuer; a sidecar with another mesh's bundle refuses to talk to it", async () => {
    const peer = await new Promise<X509Certificate>((resolve, reject) =>
      https.get(`${running.url}/health`, { ca: ca.trustBundlePem, checkServerIdentity: () => undefined }, (response) => {
        resolve(new X509Certificate((response.socket as import("node:tls").TLSSocket).getPeerCertificate().raw))
        response.resume()
      }).on("error", reject))
    expect(spiffeIdOfCertificate(peer)?.text).toBe(`spiffe://${trustDomain}/issuer`)
    const foreign = await makeIssuingCa("foreign")
    const pair = await generateKeyPair()
    const signer = issuerSigner({ issuerUrl: running.url, trustDomain, trustBundle: () => foreign.trustBundlePem, proof: () => ({ kind: "join", token: catalogJoinToken }) })
    await expect(signer(await createCertificateRequest(pair.keys, undefined))).rejects.toThrow(/self-signed|unable to verify|certificate/i)
    const wrongDomain = issuerSigner({ issuerUrl: running.url, trustDomain: "other.mesh", trustBundle: () => ca.trustBundlePem, proof: () => ({ kind: "join", token: catalogJoinToken }) })
    await expect(wrongDomain(await createCertificateRequest(pair.keys, undefined))).rejects.toThrow(/does not name spiffe:\/\/other\.mesh\/issuer/)
  })
})
