// The sidecar's identity client on Effect's TestClock: it renews at 70 % +- 5 % of the leaf's
// life, retries with backoff while the issuer is down, keeps the old credentials meanwhile, and
// refuses an answer that does not certify its own key. The signer is in-process (the issuer's
// HTTP side has its own tests); it signs with the test clock's time as notBefore.
import { describe, expect, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import { TestClock } from "effect/testing"
import "reflect-metadata"
import * as x509 from "@peculiar/x509"
import { webcrypto, X509Certificate } from "node:crypto"
import * as tls from "node:tls"
import { createIntermediateCa, createRootCa, generateKeyPair, issueLeaf } from "../../src/identity/certificates.ts"
import { readCertificateRequest } from "../../src/identity/certificateRequest.ts"
import type { WorkloadCredentials } from "../../src/identity/credentials.ts"
import * as IdentityClient from "../../src/identity/identityClient.ts"
import { IssuerRefused } from "../../src/identity/signers.ts"
import type { SignResponse } from "../../src/identity/issuer.ts"
import { chainProblem, chainUsableUntil } from "../../src/identity/trustBundle.ts"
import { eventually, makeIssuingCa, trustDomain } from "../support/identityTest.ts"

const minute = 60_000
const hour = 60 * minute
const lifetime = 10 * hour
const catalogId = `spiffe://${trustDomain}/svc/catalog`

/**
 * A leaf under a CA with a 512-bit RSA key, in the chain and as the bundle: every signature
 * verifies, but OpenSSL refuses to load such a chain into a TLS context (ca key too small).
 */
const weakCaAnswer = async (spiffeId: string, publicKey: x509.PublicKey, notBefore: Date): Promise<SignResponse> => {
  const rsa = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256", publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 512 }
  const keys = (await webcrypto.subtle.generateKey(rsa, false, ["sign", "verify"])) as webcrypto.CryptoKeyPair
  const validity = { notBefore: new Date(notBefore.getTime() - hour), notAfter: new Date(notBefore.getTime() + lifetime) }
  const root = await x509.X509CertificateGenerator.createSelfSigned({ serialNumber: "01", name: "CN=weak", ...validity, keys, signingAlgorithm: rsa, extensions: [new x509.BasicConstraintsExtension(true, 1, true)] })
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: "02",
    subject: [],
    issuer: root.subject,
    ...validity,
    publicKey,
    signingKey: keys.privateKey,
    signingAlgorithm: rsa,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: spiffeId }], true)]
  })
  const rootPem = `${root.toString("pem")}\n`
  return { spiffeId, certificateChainPem: `${leaf.toString("pem")}\n${rootPem}`, trustBundlePem: rootPem, notAfter: validity.notAfter.toISOString() }
}

/** A signer over a fresh in-memory CA, signing at the test clock's time; `down` makes it fail like an unreachable issuer. */
const makeFakeIssuer = Effect.gen(function*() {
  const clock = yield* Clock.Clock
  const ca = yield* Effect.promise(() => makeIssuingCa())
  const state = { down: false, wrongKey: false, weakCa: false, calls: [] as Array<number>, bundle: ca.trustBundlePem, bundleDown: false, bundleCalls: [] as Array<number> }
  /** GET /v1/bundle of this issuer: what `state.bundle` holds now. */
  const fetchTrustBundle = async () => {
    state.bundleCalls.push(clock.currentTimeMillisUnsafe())
    if (state.bundleDown) throw new Error("connect ECONNREFUSED 127.0.0.1:8443")
    return state.bundle
  }
  const signer: IdentityClient.Signer = async (csrPem) => {
    state.calls.push(clock.currentTimeMillisUnsafe())
    if (state.down) throw new Error("connect ECONNREFUSED 127.0.0.1:8443")
    const request = await readCertificateRequest(csrPem)
    const publicKey = state.wrongKey ? (await generateKeyPair()).keys.publicKey : request.publicKey
    const notBefore = new Date(clock.currentTimeMillisUnsafe())
    if (state.weakCa) return weakCaAnswer(request.requestedId!, request.publicKey, notBefore)
    const leaf = await issueLeaf(ca.intermediate, { spiffeId: request.requestedId!, publicKey, notBefore, lifetimeMs: lifetime })
    const answer: SignResponse = {
      spiffeId: request.requestedId!,
      certificateChainPem: leaf + ca.intermediate.certificatePem,
      trustBundlePem: ca.trustBundlePem,
      notAfter: new Date(notBefore.getTime() + lifetime).toISOString()
    }
    return answer
  }
  return { signer, state, fetchTrustBundle, ca }
})

const startClient = (signer: IdentityClient.Signer, events: Array<{ event: string; fields: Record<string, unknown> }>) =>
  IdentityClient.make({ signer, trustDomain, requestedId: catalogId, log: (event, fields) => void events.push({ event, fields }) })

const notBeforeOf = (credentials: WorkloadCredentials) => new Date(new X509Certificate(credentials.certificateChainPem.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n").validFrom).getTime()

describe("identity client", () => {
  it("renewalDelayMs: 70 % +- 5 % of the life left when received, from notBefore at the earliest, at least 1 s", async () => {
    const ca = await makeIssuingCa()
    const pair = await generateKeyPair()
    const notBefore = new Date(Date.UTC(2030, 0, 1))
    const leaf = await issueLeaf(ca.intermediate, { spiffeId: catalogId, publicKey: pair.keys.publicKey, notBefore, lifetimeMs: lifetime })
    const credentials = { spiffeId: catalogId, privateKeyPem: pair.privateKeyPem, certificateChainPem: leaf, trustBundlePem: ca.trustBundlePem, notAfter: new Date(notBefore.getTime() + lifetime) }
    // Received at notBefore: 70 % of the life, +- 5 %.
    expect(IdentityClient.renewalDelayMs(credentials, notBefore.getTime(), 0.5)).toBe(7 * hour)
    expect(IdentityClient.renewalDelayMs(credentials, notBefore.getTime(), 0)).toBe(6.5 * hour)
    expect(IdentityClient.renewalDelayMs(credentials, notBefore.getTime(), 0.999999)).toBeCloseTo(7.5 * hour, -2)
    // Backdated by the issuer (received an hour after notBefore): 70 % of what is left.
    expect(IdentityClient.renewalDelayMs(credentials, notBefore.getTime() + hour, 0.5)).toBe(0.7 * 9 * hour)
    // Received before notBefore (skew the other way): from notBefore.
    expect(IdentityClient.renewalDelayMs(credentials, notBefore.getTime() - hour, 0.5)).toBe(8 * hour)
    // Never a busy loop.
    expect(IdentityClient.renewalDelayMs(credentials, notBefore.getTime() + lifetime - 10, 0.5)).toBe(1_000)
  })

  it("renewalDelayMs: a leaf that outlives its intermediate is renewed at 70 % of the chain's life, not of the leaf's", async () => {
    const now = Date.UTC(2030, 0, 1)
    const root = await createRootCa({ commonName: "root", trustDomain, notBefore: new Date(now - hour), lifetimeMs: 100 * hour })
    // The intermediate expires 2 h from now; the leaf it signed (a hostile or careless issuer) lives until 9999.
    const intermediate = await createIntermediateCa(root, { commonName: "intermediate", trustDomain, notBefore: new Date(now - hour), lifetimeMs: 3 * hour })
    const pair = await generateKeyPair()
    const notAfter = new Date(Date.UTC(9999, 11, 31))
    const leaf = await issueLeaf(intermediate, { spiffeId: catalogId, publicKey: pair.keys.publicKey, notBefore: new Date(now), lifetimeMs: notAfter.getTime() - now })
    const credentials = { spiffeId: catalogId, privateKeyPem: pair.privateKeyPem, certificateChainPem: leaf + intermediate.certificatePem, trustBundlePem: root.certificatePem, notAfter }
    expect(IdentityClient.renewalDelayMs(credentials, now, 0.5)).toBe(0.7 * 2 * hour)
  })

  it("renewalDelayMs: a chain whose bundle root expires before the leaf (and the intermediate) is renewed at 70 % of the root's life left", async () => {
    const now = Date.UTC(2030, 0, 1)
    // The root expires 2 h from now; its intermediate (a careless CA) and the leaf outlive it.
    const root = await createRootCa({ commonName: "root", trustDomain, notBefore: new Date(now - hour), lifetimeMs: 3 * hour })
    const other = await createRootCa({ commonName: "other root", trustDomain, notBefore: new Date(now - hour), lifetimeMs: hour / 2 })
    const intermediate = await createIntermediateCa(root, { commonName: "intermediate", trustDomain, notBefore: new Date(now - hour), lifetimeMs: 100 * hour })
    const pair = await generateKeyPair()
    const leaf = await issueLeaf(intermediate, { spiffeId: catalogId, publicKey: pair.keys.publicKey, notBefore: new Date(now), lifetimeMs: lifetime })
    const credentials = {
      spiffeId: catalogId,
      privateKeyPem: pair.privateKeyPem,
      certificateChainPem: leaf + intermediate.certificatePem,
      // A second root of the bundle (the chain does not lead to it) expiring sooner does not matter to this leaf.
      trustBundlePem: other.certificatePem + root.certificatePem,
      notAfter: new Date(now + lifetime)
    }
    expect(IdentityClient.renewalDelayMs(credentials, now, 0.5)).toBe(0.7 * 2 * hour)
  })

  it("a root re-issued with its own key (the old copy first in the bundle) anchors the chain once the old copy has expired, as for OpenSSL, and renewal is timed from the copy that lasts", async () => {
    const now = Date.UTC(2030, 0, 1)
    const rootKeys = await generateKeyPair()
    const rootCopy = async (serialNumber: string, notBefore: number, notAfter: number) => {
      const signingAlgorithm = { name: "ECDSA", hash: "SHA-256" }
      const certificate = await x509.X509CertificateGenerator.createSelfSigned({
        serialNumber,
        name: "CN=root",
        notBefore: new Date(notBefore),
        notAfter: new Date(notAfter),
        keys: rootKeys.keys,
        signingAlgorithm,
        extensions: [new x509.BasicConstraintsExtension(true, 1, true), await x509.SubjectKeyIdentifierExtension.create(rootKeys.keys.publicKey)]
      })
      return `${certificate.toString("pem")}\n`
    }
    const old = await rootCopy("01", now - 10 * hour, now + hour)
    const renewed = await rootCopy("02", now - hour, now + 100 * hour)
    const intermediate = await createIntermediateCa({ certificatePem: renewed, privateKeyPem: rootKeys.privateKeyPem }, { commonName: "intermediate", notBefore: new Date(now - hour), lifetimeMs: 50 * hour })
    const pair = await generateKeyPair()
    const leaf = await issueLeaf(intermediate, { spiffeId: catalogId, publicKey: pair.keys.publicKey, notBefore: new Date(now), lifetimeMs: lifetime })
    const credentials = { spiffeId: catalogId, privateKeyPem: pair.privateKeyPem, certificateChainPem: leaf + intermediate.certificatePem, trustBundlePem: old + renewed, notAfter: new Date(now + lifetime) }
    expect(chainProblem(credentials.certificateChainPem, credentials.trustBundlePem, new Date(now + 2 * hour))).toBeUndefined()
    expect(chainUsableUntil(credentials.certificateChainPem, credentials.trustBundlePem)).toBe(now + lifetime)
    expect(IdentityClient.renewalDelayMs(credentials, now, 0.5)).toBe(0.7 * lifetime)
    // Only the old copy: the chain ends with it.
    expect(chainProblem(credentials.certificateChainPem, old, new Date(now + 2 * hour))).toMatch(/the root is not valid/)
    expect(chainUsableUntil(credentials.certificateChainPem, old)).toBe(now + hour)
  })

  it.effect("renews at 70 % +- 5 % of the leaf's life on the clock, not before; the key is new and listeners hear it", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const { signer, state } = yield* makeFakeIssuer
      const events: Array<{ event: string; fields: Record<string, unknown> }> = []
      const client = yield* startClient(signer, events)
      const first = client.current()
      expect(first.spiffeId).toBe(catalogId)
      const heard: Array<WorkloadCredentials> = []
      client.subscribe((next) => heard.push(next))
      const start = notBeforeOf(first)
      const renewAt = Date.parse(client.status().renewAt)
      expect(renewAt - start).toBeGreaterThanOrEqual(0.65 * lifetime)
      expect(renewAt - start).toBeLessThanOrEqual(0.75 * lifetime)

      yield* TestClock.adjust(renewAt - (yield* Clock.currentTimeMillis) - 1)
      yield* Effect.yieldNow
      expect(state.calls).toHaveLength(1)
      expect(client.current()).toBe(first)

      yield* TestClock.adjust(1)
      yield* eventually(() => heard.length === 1)
      expect(state.calls).toHaveLength(2)
      expect(state.calls[1]).toBe(renewAt)
      const second = client.current()
      expect(second).toBe(heard[0])
      expect(second.privateKeyPem).not.toBe(first.privateKeyPem)
      expect(Math.abs(second.notAfter.getTime() - (renewAt + lifetime))).toBeLessThan(1000) // X.509 times are whole seconds
      expect(client.status()).toMatchObject({ spiffeId: catalogId, renewals: 1, lastError: undefined })
      // The next one is scheduled the same way from the new leaf.
      const again = Date.parse(client.status().renewAt) - renewAt
      expect(again).toBeGreaterThanOrEqual(0.65 * lifetime)
      expect(again).toBeLessThanOrEqual(0.75 * lifetime)
      expect(events.map((e) => e.event)).toStrictEqual(["identity-obtained", "identity-renewed"])
    }).pipe(Effect.scoped))

  it.effect("a listener that throws does not end renewal: it is logged and counted, the listeners after it hear every generation, and it hears the later ones", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const { signer, state } = yield* makeFakeIssuer
      const events: Array<{ event: string; fields: Record<string, unknown> }> = []
      const client = yield* startClient(signer, events)
      const thrown: Array<WorkloadCredentials> = []
      const heard: Array<WorkloadCredentials> = []
      client.subscribe((next) => {
        thrown.push(next)
        throw new Error("secure context refused\u202e")
      })
      client.subscribe((next) => heard.push(next))
      for (let renewal = 1; renewal <= 2; renewal++) {
        yield* TestClock.adjust(Date.parse(client.status().renewAt) - (yield* Clock.currentTimeMillis))
        yield* eventually(() => heard.length === renewal)
        expect(thrown).toStrictEqual(heard)
        expect(client.current()).toBe(heard[renewal - 1])
        expect(client.status()).toMatchObject({ renewals: renewal, listenerFailures: renewal })
      }
      expect(state.calls).toHaveLength(3)
      const failed = events.filter((e) => e.event === "identity-listener-failed")
      expect(failed).toHaveLength(2)
      expect(failed[0]!.fields.error).toBe("secure context refused\\u202e")
    }).pipe(Effect.scoped))

  it.effect("an expired root in the bundle received is logged by name and counted in the status, and a root expiring later is counted from then", () =>
    Effect.gen(function*() {
      const start = Date.now()
      yield* TestClock.setTime(start)
      const { signer } = yield* makeFakeIssuer
      const expired = yield* Effect.promise(() => createRootCa({ commonName: "retired root", trustDomain, notBefore: new Date(start - 10 * hour), lifetimeMs: hour }))
      const expiring = yield* Effect.promise(() => createRootCa({ commonName: "expiring root", trustDomain, notBefore: new Date(start - hour), lifetimeMs: 3 * hour }))
      const withOldRoots: IdentityClient.Signer = async (csr) => {
        const answer = await signer(csr)
        return { ...answer, trustBundlePem: expired.certificatePem + answer.trustBundlePem + expiring.certificatePem }
      }
      const events: Array<{ event: string; fields: Record<string, unknown> }> = []
      const client = yield* startClient(withOldRoots, events)
      expect(client.status()).toMatchObject({ trustBundleRoots: 3, expiredRoots: 1 })
      const logged = events.filter((e) => e.event === "identity-trust-bundle-root-expired")
      expect(logged.map((e) => e.fields)).toStrictEqual([{ root: "CN=retired root", notAfter: new Date(new X509Certificate(expired.certificatePem).validTo).toISOString(), roots: 3 }])
      yield* TestClock.adjust(2 * hour + 1_000)
      expect(client.status()).toMatchObject({ trustBundleRoots: 3, expiredRoots: 2 })
    }).pipe(Effect.scoped))

  it.effect("a root added to the issuer's bundle reaches the listeners within the refresh interval (+- 10 %), long before the leaf renews; the key and chain stay", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const { signer, state, fetchTrustBundle, ca } = yield* makeFakeIssuer
      const events: Array<{ event: string; fields: Record<string, unknown> }> = []
      const client = yield* IdentityClient.make({ signer, fetchTrustBundle, bundleRefreshMs: 5 * minute, trustDomain, requestedId: catalogId, log: (event, fields) => void events.push({ event, fields }) })
      const first = client.current()
      const heard: Array<WorkloadCredentials> = []
      client.subscribe((next) => heard.push(next))
      // Unchanged: nothing is handed on.
      yield* TestClock.adjust(5.5 * minute)
      yield* eventually(() => state.bundleCalls.length === 1)
      expect(state.bundleCalls[0]! - state.calls[0]!).toBeGreaterThanOrEqual(4.5 * minute)
      expect(heard).toHaveLength(0)
      yield* eventually(() => client.status().bundleRefreshes.unchanged === 1)
      const rotated = (yield* Effect.promise(() => makeIssuingCa("rotated"))).rootPem
      state.bundle = rotated + ca.trustBundlePem
      yield* TestClock.adjust(5.5 * minute)
      yield* eventually(() => heard.length === 1)
      expect(heard[0]!.trustBundlePem).toBe(rotated + ca.trustBundlePem)
      expect([heard[0]!.privateKeyPem, heard[0]!.certificateChainPem]).toStrictEqual([first.privateKeyPem, first.certificateChainPem])
      expect(client.current()).toBe(heard[0])
      expect(client.status()).toMatchObject({ renewals: 0, trustBundleRoots: 2, bundleRefreshes: { updated: 1, unchanged: 1, failed: 0, refused: 0 } })
      expect(state.calls).toHaveLength(1)
      expect(events.filter((e) => e.event === "identity-trust-bundle-refreshed").map((e) => e.fields)).toStrictEqual([{ roots: 2 }])
    }).pipe(Effect.scoped))

  it.effect("a root of the bundle held that expires while the sidecar runs is logged at the next bundle refresh, once", () =>
    Effect.gen(function*() {
      const start = Date.now()
      yield* TestClock.setTime(start)
      const { signer, state, fetchTrustBundle, ca } = yield* makeFakeIssuer
      const expiring = yield* Effect.promise(() => createRootCa({ commonName: "expiring root", trustDomain, notBefore: new Date(start - hour), lifetimeMs: hour + 12 * minute }))
      state.bundle = ca.trustBundlePem + expiring.certificatePem
      const withExpiring: IdentityClient.Signer = async (csr) => ({ ...(await signer(csr)), trustBundlePem: state.bundle })
      const events: Array<{ event: string; fields: Record<string, unknown> }> = []
      yield* IdentityClient.make({ signer: withExpiring, fetchTrustBundle, bundleRefreshMs: 5 * minute, trustDomain, requestedId: catalogId, log: (event, fields) => void events.push({ event, fields }) })
      const expired = () => events.filter((e) => e.event === "identity-trust-bundle-root-expired")
      // Refreshes at 4.5-5.5 and 9-11 min: the root is still valid (at the test clock's time, whenever
      // they finish); the third, at 13.5-16.5 min, finds it expired (12 min); the fourth does not log it
      // again (done once the fifth fetch is asked for: refreshes run one after the other).
      for (let refresh = 1; refresh <= 5; refresh++) {
        yield* TestClock.adjust(5.5 * minute)
        yield* eventually(() => state.bundleCalls.length === refresh)
        if (refresh < 3) expect(expired()).toHaveLength(0)
        if (refresh === 3) yield* eventually(() => expired().length === 1)
      }
      expect(expired()).toHaveLength(1)
      expect(expired()[0]!.fields).toMatchObject({ root: "CN=expiring root", roots: 2 })
    }).pipe(Effect.scoped))

  it.effect("a bundle refresh that fails, or brings a bundle too large, of too many roots, not text or without our root, is retried with backoff; the credentials stay", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const { signer, state, fetchTrustBundle, ca } = yield* makeFakeIssuer
      const events: Array<{ event: string; fields: Record<string, unknown> }> = []
      const client = yield* IdentityClient.make({ signer, fetchTrustBundle, bundleRefreshMs: 5 * minute, trustDomain, requestedId: catalogId, log: (event, fields) => void events.push({ event, fields }) })
      const first = client.current()
      const heard: Array<WorkloadCredentials> = []
      client.subscribe((next) => heard.push(next))
      const foreign = yield* Effect.promise(() => makeIssuingCa("foreign"))
      const failures = () => events.filter((e) => e.event === "identity-trust-bundle-refresh-failed")
      const answers: Array<[unknown, RegExp]> = [
        [ca.trustBundlePem.repeat(17), /the trust bundle holds 17 certificates, more than 16/],
        [ca.trustBundlePem + " ".repeat(70_000), /the trust bundle is larger than 65536 characters/],
        [7, /not a PEM text/],
        [foreign.trustBundlePem, /with it, the chain held: the chain leads to no root of the trust bundle/],
        ["-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", /does not parse/]
      ]
      state.bundleDown = true
      // To the first refresh (4.5 to 5.5 min), in steps shorter than the first retry.
      yield* TestClock.adjust(4.5 * minute - 1)
      for (let step = 0; step < 400 && state.bundleCalls.length === 0; step++) {
        yield* TestClock.adjust(400)
        yield* Effect.yieldNow
      }
      yield* eventually(() => failures().length === 1)
      expect(failures()[0]!.fields.error).toMatch(/ECONNREFUSED/)
      for (const [index, [answer, why]] of answers.entries()) {
        state.bundleDown = false
        state.bundle = answer as string
        const retryInMs = failures()[index]!.fields.retryInMs as number
        // Backoff: 1 s, 2 s, 4 s ..., each scaled by a jitter in [0.5, 1).
        expect(retryInMs).toBeGreaterThanOrEqual(500 * 2 ** index)
        expect(retryInMs).toBeLessThan(1000 * 2 ** index)
        yield* TestClock.adjust(retryInMs)
        yield* eventually(() => failures().length === index + 2)
        expect(failures()[index + 1]!.fields.error).toMatch(why)
        expect(client.status().lastBundleError).toMatch(why)
        expect(client.current()).toBe(first)
      }
      expect(heard).toHaveLength(0)
      state.bundle = foreign.rootPem + ca.trustBundlePem
      yield* TestClock.adjust(failures().at(-1)!.fields.retryInMs as number)
      yield* eventually(() => heard.length === 1)
      expect(heard[0]!.trustBundlePem).toBe(foreign.rootPem + ca.trustBundlePem)
      expect(client.status()).toMatchObject({ lastBundleError: undefined, trustBundleRoots: 2, renewals: 0, bundleRefreshes: { updated: 1, unchanged: 0, failed: 1, refused: 5 } })
    }).pipe(Effect.scoped))

  it.effect("the issuer down at renewal: retries with growing backoff, the old credentials stay until new ones arrive", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const { signer, state } = yield* makeFakeIssuer
      const events: Array<{ event: string; fields: Record<string, unknown> }> = []
      const client = yield* startClient(signer, events)
      const first = client.current()
      state.down = true
      yield* TestClock.adjust(Date.parse(client.status().renewAt) - (yield* Clock.currentTimeMillis))
      const failures = () => events.filter((e) => e.event === "identity-renewal-failed")
      yield* eventually(() => failures().length === 1)
      const retries: Array<number> = []
      for (let attempt = 1; attempt <= 4; attempt++) {
        const retryInMs = failures()[attempt - 1]!.fields.retryInMs as number
        retries.push(retryInMs)
        expect(client.current()).toBe(first)
        expect(client.status().lastError).toMatch(/ECONNREFUSED/)
        yield* TestClock.adjust(retryInMs)
        if (attempt < 4) yield* eventually(() => failures().length === attempt + 1)
        if (attempt === 3) state.down = false
      }
      yield* eventually(() => client.current() !== first)
      // Backoff: 1 s, 2 s, 4 s, 8 s, each scaled by a jitter in [0.5, 1).
      retries.forEach((ms, i) => {
        expect(ms).toBeGreaterThanOrEqual(500 * 2 ** i)
        expect(ms).toBeLessThan(1000 * 2 ** i)
      })
      expect(state.calls).toHaveLength(6)
      expect(client.status()).toMatchObject({ renewals: 1, lastError: undefined })
      expect(client.current().privateKeyPem).not.toBe(first.privateKeyPem)
    }).pipe(Effect.scoped))

  it.effect("a busy issuer's retry-after is waited out (bounded by retryMaxMs); a refused proof retries on the backoff alone", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const { signer, state } = yield* makeFakeIssuer
      const refusals = [
        new IssuerRefused({ status: 429, reason: "too-many-requests", detail: "this address's share of signings in progress (16) is taken", retryAfterMs: 5_000 }),
        new IssuerRefused({ status: 503, reason: "overloaded", detail: "64 signings in progress", retryAfterMs: 86_400_000 }),
        new IssuerRefused({ status: 401, reason: "bad-join-token", detail: "no such join token", retryAfterMs: undefined })
      ]
      const refusing: IdentityClient.Signer = async (csrPem, signal) => {
        const refusal = refusals.shift()
        if (refusal === undefined) return signer(csrPem, signal)
        state.calls.push(Date.now())
        throw refusal
      }
      const events: Array<{ event: string; fields: Record<string, unknown> }> = []
      const fiber = yield* Effect.forkScoped(startClient(refusing, events))
      const retries = () => events.filter((e) => e.event === "identity-renewal-failed").map((e) => e.fields.retryInMs as number)
      yield* eventually(() => retries().length === 1)
      // The backoff's first wait is under 1 s; the issuer asked for 5 s.
      expect(retries()[0]).toBe(5_000)
      yield* TestClock.adjust(4_999)
      expect(state.calls).toHaveLength(1)
      yield* TestClock.adjust(1)
      yield* eventually(() => retries().length === 2)
      // A day asked for: 60 s (retryMaxMs) at most.
      expect(retries()[1]).toBe(60_000)
      yield* TestClock.adjust(60_000)
      yield* eventually(() => retries().length === 3)
      // No retry-after: the backoff's third wait, 4 s times a jitter in [0.5, 1).
      expect(retries()[2]).toBeGreaterThanOrEqual(2_000)
      expect(retries()[2]).toBeLessThan(4_000)
      expect(events[2]!.fields.error).toMatch(/the issuer refused \(401 bad-join-token\)/)
      yield* TestClock.adjust(retries()[2]!)
      const client = yield* Fiber.join(fiber)
      expect(client.current().spiffeId).toBe(catalogId)
      expect(state.calls).toHaveLength(4)
    }).pipe(Effect.scoped))

  it.effect("an answer that does not certify the client's own key is refused and retried; the first credentials wait for a good one", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const { signer, state } = yield* makeFakeIssuer
      state.wrongKey = true
      const events: Array<{ event: string; fields: Record<string, unknown> }> = []
      const fiber = yield* Effect.forkScoped(startClient(signer, events))
      yield* eventually(() => events.length === 1)
      expect(events[0]!.fields.error).toMatch(/the leaf does not certify our key/)
      state.wrongKey = false
      yield* TestClock.adjust(events[0]!.fields.retryInMs as number)
      const client = yield* Fiber.join(fiber)
      expect(client.current().spiffeId).toBe(catalogId)
      expect(state.calls).toHaveLength(2)
    }).pipe(Effect.scoped))

  it.effect("an answer whose chain node:tls cannot load (a 512-bit RSA CA: every signature verifies) is refused and retried, never handed to the listeners", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const { signer, state } = yield* makeFakeIssuer
      state.weakCa = true
      const events: Array<{ event: string; fields: Record<string, unknown> }> = []
      const fiber = yield* Effect.forkScoped(startClient(signer, events))
      yield* eventually(() => events.length === 1)
      expect([events[0]!.event, events[0]!.fields.error]).toStrictEqual(["identity-renewal-failed", expect.stringMatching(/ca key too small/)])
      state.weakCa = false
      yield* TestClock.adjust(events[0]!.fields.retryInMs as number)
      const client = yield* Fiber.join(fiber)
      const current = client.current()
      expect(() => tls.createSecureContext({ key: current.privateKeyPem, cert: current.certificateChainPem, ca: current.trustBundlePem })).not.toThrow()
      expect(state.calls).toHaveLength(2)
    }).pipe(Effect.scoped))
})
