// Join tokens expire (on Effect's TestClock, the issuer's clock): a token is taken until its
// `expires=` time, or 24 h (the default TTL) after its file was written, and refused 401
// bad-join-token after, naming when, counted. A sidecar that joined before keeps renewing past the
// expiry: it presents the certificate it holds on the sign call, and the issuer takes that (with the
// token still listed) for the same service only; a sidecar starting after the expiry is refused.
import { describe, expect, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import { TestClock } from "effect/testing"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { sidecarIdentity } from "../../src/cli/sidecarIdentity.ts"
import { generateKeyPair } from "../../src/identity/certificates.ts"
import { createCertificateRequest } from "../../src/identity/certificateRequest.ts"
import type { IssuingCa } from "../../src/identity/caDirectory.ts"
import type { WorkloadCredentials } from "../../src/identity/credentials.ts"
import * as Issuer from "../../src/identity/issuer.ts"
import { type JoinToken, parseJoinTokens } from "../../src/identity/proofs.ts"
import { issuerSigner } from "../../src/identity/signers.ts"
import { collectLog } from "../support/meshTest.ts"
import { eventually, makeIssuingCa, trustDomain } from "../support/identityTest.ts"
import { sidecarConfig } from "../support/sidecarHarness.ts"

const hour = 3_600_000
const catalogToken = "c".repeat(40)
const pricingToken = "p".repeat(40)
/** What a sidecar reads when its join token has ended at `end`. */
const expired = (end: number | string) =>
  `the issuer refused (401 bad-join-token): the join token expired at ${new Date(end).toISOString()}: joining needs a new one (a sidecar that joined with it renews with its certificate)`

/** An issuer on the test's clock (its token expiry is judged on it); stopped with the test's scope. */
const issuerOnTestClock = (ca: IssuingCa, joinTokens: ReadonlyArray<JoinToken>) =>
  Effect.gen(function*() {
    const { events, log } = collectLog()
    const issuer = yield* Issuer.make({ ca, trustDomain, host: "127.0.0.1", port: 0, ...Issuer.issuerDefaults, tokenReview: undefined, joinTokens: () => joinTokens, log })
    return { issuer, url: `https://127.0.0.1:${issuer.port}`, events }
  })

/** Signs a fresh key for `service` with `token`, presenting `held` (a sidecar's credentials) if given. */
const sign = (ca: IssuingCa, url: string, token: string, service: string, held?: WorkloadCredentials) =>
  Effect.promise(async () => {
    const pair = await generateKeyPair()
    const signer = issuerSigner({ issuerUrl: url, trustDomain, trustBundle: () => ca.trustBundlePem, proof: () => ({ kind: "join", token }), credentials: () => held })
    return signer(await createCertificateRequest(pair.keys, `spiffe://${trustDomain}/svc/${service}`)).then(
      (answer) => ({ signed: answer.spiffeId, refused: undefined }),
      (error: Error) => ({ signed: undefined, refused: error.message })
    )
  })

describe("join token expiry", () => {
  it.effect("a token without expires= is taken for 24 h after its file was written, then refused 401 bad-join-token naming when it expired, counted", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const written = yield* Clock.currentTimeMillis
      const ca = yield* Effect.promise(() => makeIssuingCa())
      const { issuer, url, events } = yield* issuerOnTestClock(ca, parseJoinTokens(`${catalogToken} catalog\n`, { writtenAt: written, defaultTtlMs: 24 * hour }))
      expect((yield* sign(ca, url, catalogToken, "catalog")).signed).toBe(`spiffe://${trustDomain}/svc/catalog`)
      yield* TestClock.adjust(24 * hour - 1)
      expect((yield* sign(ca, url, catalogToken, "catalog")).signed).toBe(`spiffe://${trustDomain}/svc/catalog`)
      yield* TestClock.adjust(1)
      const late = yield* sign(ca, url, catalogToken, "catalog")
      expect(late.refused).toBe(expired(written + 24 * hour))
      expect(issuer.refused()["bad-join-token"]).toBe(1)
      expect(issuer.signed().join).toBe(2)
      expect(events.filter((e) => e.event === "identity-refused").map((e) => e.fields.reason)).toStrictEqual(["bad-join-token"])
    }).pipe(Effect.scoped))

  it.effect("expires= sets a token's own end (an absolute RFC 3339 time), whatever the default TTL; the issuer's ready line counts the tokens already ended", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const now = yield* Clock.currentTimeMillis
      const ca = yield* Effect.promise(() => makeIssuingCa())
      const ends = new Date(now + 2 * hour).toISOString()
      const tokens = parseJoinTokens(`${catalogToken} catalog expires=${ends}\n${pricingToken} pricing\n`, { writtenAt: now, defaultTtlMs: hour })
      const started = yield* issuerOnTestClock(ca, tokens)
      const url = started.url
      // An issuer started now counts none of them ended; one started after the hour, pricing's.
      const ready = (events: ReadonlyArray<{ event: string; fields: Record<string, unknown> }>) => events.find((e) => e.event === "identity-issuer-ready")?.fields.joinTokensExpired
      expect(ready(started.events)).toBe(0)
      yield* TestClock.adjust(hour)
      expect(ready((yield* issuerOnTestClock(ca, tokens)).events)).toBe(1)
      expect(yield* sign(ca, url, catalogToken, "catalog")).toMatchObject({ signed: `spiffe://${trustDomain}/svc/catalog` })
      expect((yield* sign(ca, url, pricingToken, "pricing")).refused).toMatch(/401 bad-join-token.*expired at/)
      yield* TestClock.adjust(hour)
      expect((yield* sign(ca, url, catalogToken, "catalog")).refused).toBe(expired(ends))
    }).pipe(Effect.scoped))

  it("a join-token file's expires= must be an RFC 3339 time with its zone; a line with anything else does not load", () => {
    const times = { writtenAt: 0, defaultTtlMs: hour }
    expect(parseJoinTokens(`${catalogToken} catalog expires=2027-01-02T03:04:05Z`, times)[0]!.expiresAt).toBe(Date.parse("2027-01-02T03:04:05Z"))
    expect(parseJoinTokens(`${catalogToken} catalog expires=2027-01-02T03:04:05.250+02:00`, times)[0]!.expiresAt).toBe(Date.parse("2027-01-02T01:04:05.250Z"))
    expect(parseJoinTokens(`${catalogToken} catalog`, { writtenAt: 5, defaultTtlMs: hour })[0]!.expiresAt).toBe(5 + hour)
    expect(parseJoinTokens(`${catalogToken} catalog expires=2028-02-29T23:59:59Z`, times)[0]!.expiresAt).toBe(Date.parse("2028-02-29T23:59:59Z"))
    // Date.parse rolls a 30 February or a 24:00 over into the next days: a mistyped end is refused, not moved.
    const overflowing = ["expires=2027-02-29T03:04:05Z", "expires=2027-04-31T03:04:05Z", "expires=2027-01-02T24:00:00Z", "expires=2027-01-00T03:04:05Z"]
    for (const bad of ["expires=2027-01-02", "expires=2027-01-02T03:04:05", "expires=tomorrow", "expires=2027-13-02T03:04:05Z", "ttl=1h", ...overflowing]) {
      expect(() => parseJoinTokens(`# tokens\n${catalogToken} catalog ${bad}`, times)).toThrow(/^join tokens line 2: /)
    }
  })

  it.effect("a sidecar that joined renews with its certificate after its token expired; one starting after the expiry is refused; a certificate of another service or an unknown token earns nothing", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const now = yield* Clock.currentTimeMillis
      const ca = yield* Effect.promise(() => makeIssuingCa())
      const tokens = parseJoinTokens(`${catalogToken} catalog expires=${new Date(now + hour).toISOString()}\n${pricingToken} pricing\n`, { writtenAt: now, defaultTtlMs: 48 * hour })
      const { url, events } = yield* issuerOnTestClock(ca, tokens)
      const dir = yield* Effect.acquireRelease(Effect.sync(() => mkdtempSync(join(tmpdir(), "iip-mesh-join-expiry-"))), (path) => Effect.sync(() => rmSync(path, { recursive: true, force: true })))
      writeFileSync(join(dir, "bundle.pem"), ca.trustBundlePem)
      writeFileSync(join(dir, "join.token"), `${catalogToken}\n`)
      const config = sidecarConfig({ service: "catalog", trustDomain, identityIssuer: url, trustBundleFile: join(dir, "bundle.pem"), identityJoinTokenFile: join(dir, "join.token") })
      const client = yield* sidecarIdentity(config, () => {})
      const first = client.current()
      // Past the token's hour and the leaf's renewal (70 % +- 5 % of 24 h).
      yield* TestClock.adjust(20 * hour)
      yield* eventually(() => client.status().renewals === 1)
      expect(client.current().certificateChainPem).not.toBe(first.certificateChainPem)
      expect(client.status().lastError).toBeUndefined()
      expect(events.filter((e) => e.event === "identity-issued").map((e) => e.fields.byCertificate)).toStrictEqual([false, true])
      // A restarted sidecar holds no certificate (its key was never written): the token is all it has.
      expect((yield* sign(ca, url, catalogToken, "catalog")).refused).toMatch(/401 bad-join-token\): the join token expired at /)
      const pricing = yield* sign(ca, url, pricingToken, "pricing")
      expect(pricing.signed).toBe(`spiffe://${trustDomain}/svc/pricing`)
      const pricingHeld = yield* Effect.promise(async () => {
        const pair = await generateKeyPair()
        const answer = await issuerSigner({ issuerUrl: url, trustDomain, trustBundle: () => ca.trustBundlePem, proof: () => ({ kind: "join", token: pricingToken }) })(
          await createCertificateRequest(pair.keys, `spiffe://${trustDomain}/svc/pricing`)
        )
        return { spiffeId: answer.spiffeId, privateKeyPem: pair.privateKeyPem, certificateChainPem: answer.certificateChainPem, trustBundlePem: answer.trustBundlePem, notAfter: new Date(answer.notAfter) }
      })
      // pricing's certificate does not renew catalog's expired token; catalog's does not make an unknown token good.
      expect((yield* sign(ca, url, catalogToken, "catalog", pricingHeld)).refused).toMatch(/401 bad-join-token\): the join token expired at /)
      expect((yield* sign(ca, url, "x".repeat(40), "catalog", client.current())).refused).toMatch(/401 bad-join-token\): unknown join token/)
      expect((yield* sign(ca, url, catalogToken, "catalog", client.current())).signed).toBe(`spiffe://${trustDomain}/svc/catalog`)
    }).pipe(Effect.scoped))
})
