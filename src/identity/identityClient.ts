// The sidecar's identity client: obtains its workload credentials and keeps them fresh. Each
// generation starts with a new ECDSA key pair made in memory (the private key is never written
// anywhere: it lives in the returned WorkloadCredentials only), a CSR over it, and a signer: the
// issuer over HTTPS (issuerClient.ts) or, in development, the issuer's key itself. What comes
// back is checked (the chain leads to the bundle, the leaf certifies our key and names the
// identity asked for) before it replaces anything.
//
// Renewal runs on Effect's Clock: at about 70 % of the leaf's life (plus or minus a jitter, so a
// fleet started together does not renew together); a failed attempt is retried with exponential
// backoff while the previous credentials stay in place, until new ones arrive. Between renewals
// the trust bundle is fetched again every few minutes (jittered, backoff on failure), so a root the
// issuer adds (`ca rotate`) reaches this sidecar's peer checks within minutes, not at its next
// renewal; what the issuer sends is bounded and checked like a sign answer.
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Random from "effect/Random"
import type * as Scope from "effect/Scope"
import { createPublicKey, type KeyObject, X509Certificate } from "node:crypto"
import * as tls from "node:tls"
import { type Log, messageOf } from "../iip/log.ts"
import { loggable } from "../iip/redact.ts"
import { generateKeyPair } from "./certificates.ts"
import { createCertificateRequest } from "./certificateRequest.ts"
import { type CredentialSource, makeCredentialHolder, type WorkloadCredentials } from "./credentials.ts"
import type { SignResponse } from "./issuer.ts"
import { IssuerRefused } from "./signers.ts"
import { parseSpiffeId, spiffeIdOfCertificate } from "./spiffe.ts"
import {
  boundedCertificatesOfPem,
  certificatesOfPem,
  chainProblem,
  chainUsableUntil,
  maxBundleCertificates,
  maxChainCertificates,
  type RootValidity,
  rootValidities
} from "./trustBundle.ts"

/**
 * Sends a CSR (PEM) to whoever signs it and returns the answer; rejects when it cannot. `signal`
 * aborts when the client's scope closes mid-call (the sidecar stopping): the call goes with it.
 */
export type Signer = (csrPem: string, signal?: AbortSignal) => Promise<SignResponse>

/**
 * The issuer's trust bundle as it is now (PEM text, if the issuer is honest: it is checked); rejects
 * when it cannot be had. `signal` aborts when the client's scope closes mid-fetch.
 */
export type BundleFetcher = (signal?: AbortSignal) => Promise<unknown>

/**
 * What a bundle refresh came to: a new bundle taken (updated), the one held again (unchanged), no
 * bundle had (failed: the issuer down or refusing, its certificate not trusted, a timeout), or the
 * bundle had refused (refused: too large, not PEM, not loadable, without our chain's root).
 */
export const bundleRefreshResults = ["updated", "unchanged", "failed", "refused"] as const
export type BundleRefreshResult = (typeof bundleRefreshResults)[number]

/** `retryAfterMs`: the issuer asked to be left alone this long (its `retry-after`, refusing 429 or 503). */
export class IdentityUnavailable extends Data.TaggedError("IdentityUnavailable")<{ readonly message: string; readonly retryAfterMs?: number | undefined }> {}

export interface IdentityClientOptions {
  readonly signer: Signer
  readonly trustDomain: string
  /** The identity to ask for (join tokens, development); undefined lets the proof decide (Kubernetes). */
  readonly requestedId: string | undefined
  /** Share of a leaf's life after which it is renewed (default 0.7). */
  readonly renewAtFraction?: number
  /** Plus or minus this share of the life around renewAtFraction (default 0.05). */
  readonly jitter?: number
  /** First retry after this; doubling up to retryMaxMs (defaults 1 s and 60 s). */
  readonly retryBaseMs?: number
  readonly retryMaxMs?: number
  /** Where the trust bundle is fetched again between renewals; undefined: it changes only with a renewal. */
  readonly fetchTrustBundle?: BundleFetcher
  /** Every this (+- 10 %) once fetchTrustBundle succeeded; a failure retries with backoff up to it (default 5 min). */
  readonly bundleRefreshMs?: number
  readonly log: Log
}

/** What the admin and the logs may show: no key. */
export interface IdentityStatus {
  readonly spiffeId: string
  readonly notAfter: string
  /** When the next renewal is due (ISO time; a renewal failing now retries with backoff). */
  readonly renewAt: string
  readonly renewals: number
  readonly lastError: string | undefined
  /** Times a listener (a TLS context built from the credentials, say) threw on a new generation: logged, renewal goes on. */
  readonly listenerFailures: number
  /** Roots in the trust bundle held, and how many of them have expired (peers whose chains lead to one are refused). */
  readonly trustBundleRoots: number
  readonly expiredRoots: number
  /** Why the last refresh of the trust bundle failed; undefined once one succeeds. */
  readonly lastBundleError: string | undefined
  /** Refreshes of the trust bundle since start, by result (all 0 without a bundle fetcher). */
  readonly bundleRefreshes: Readonly<Record<BundleRefreshResult, number>>
}

export interface IdentityClient extends CredentialSource {
  readonly status: () => IdentityStatus
}

const spkiOf = (key: KeyObject): Buffer => key.export({ type: "spki", format: "der" })

/** Checks an answer against the key we hold and the identity we asked for; the credentials when it holds. */
const credentialsOf = (response: SignResponse, privateKeyPem: string, options: IdentityClientOptions, now: Date): WorkloadCredentials => {
  const refused = (why: string) => new IdentityUnavailable({ message: `the signer's answer is refused: ${why}` })
  if (typeof response?.certificateChainPem !== "string" || typeof response.trustBundlePem !== "string") throw refused("not a sign response")
  const chain = boundedCertificatesOfPem(response.certificateChainPem, "the chain", maxChainCertificates)
  if (typeof chain === "string") throw refused(chain)
  const bundle = boundedCertificatesOfPem(response.trustBundlePem, "the trust bundle", maxBundleCertificates)
  if (typeof bundle === "string") throw refused(bundle)
  const problem = chainProblem(response.certificateChainPem, response.trustBundlePem, now)
  if (problem !== undefined) throw refused(problem)
  const leaf = new X509Certificate(chain[0]!)
  if (!spkiOf(leaf.publicKey).equals(spkiOf(createPublicKey(privateKeyPem)))) throw refused("the leaf does not certify our key")
  const id = spiffeIdOfCertificate(leaf)
  if (id === undefined) throw refused("the leaf names no SPIFFE ID")
  if (id.trustDomain !== options.trustDomain) throw refused(`the leaf is for trust domain ${loggable(id.trustDomain)}, not ${options.trustDomain}`)
  if (options.requestedId !== undefined && id.text !== options.requestedId) throw refused(`the leaf names ${loggable(id.text)}, not ${options.requestedId}`)
  const credentials = {
    spiffeId: id.text,
    privateKeyPem,
    certificateChainPem: chain.join(""),
    trustBundlePem: bundle.join(""),
    notAfter: new Date(leaf.validTo)
  }
  loadable(credentials, refused)
  return credentials
}

/**
 * What OpenSSL will not load into a TLS context (a CA key below its security level, say) passes
 * every check of the certificates; refused here, it never reaches the listeners that build contexts from it.
 */
const loadable = (credentials: WorkloadCredentials, refused: (why: string) => IdentityUnavailable): void => {
  try {
    tls.createSecureContext({ key: credentials.privateKeyPem, cert: credentials.certificateChainPem, ca: credentials.trustBundlePem, minVersion: "TLSv1.3" })
  } catch (cause) {
    throw refused(`node:tls does not take it: ${loggable(messageOf(cause))}`)
  }
}

/**
 * The credentials held with the bundle the issuer sends now, or undefined when it is the one held.
 * Refused unless bounded, parsed, loadable, and still holding the root our chain leads to (a bundle
 * without it, after `ca finish-rotation`, comes with the next renewal, with a chain it anchors).
 */
const withRefreshedBundle = (current: WorkloadCredentials, bundlePem: unknown, now: Date): WorkloadCredentials | undefined => {
  const refused = (why: string) => new IdentityUnavailable({ message: `the issuer's trust bundle is refused: ${why}` })
  if (typeof bundlePem !== "string") throw refused("not a PEM text")
  const bundle = boundedCertificatesOfPem(bundlePem, "the trust bundle", maxBundleCertificates)
  if (typeof bundle === "string") throw refused(bundle)
  const trustBundlePem = bundle.join("")
  if (trustBundlePem === current.trustBundlePem) return undefined
  const problem = chainProblem(current.certificateChainPem, trustBundlePem, now)
  if (problem !== undefined) throw refused(`with it, the chain held: ${problem}`)
  const next = { ...current, trustBundlePem }
  loadable(next, refused)
  return next
}

/** One generation: a new key, a CSR, the signer's answer, checked. */
const obtain = (options: IdentityClientOptions) =>
  Effect.gen(function*() {
    const pair = yield* Effect.tryPromise({ try: () => generateKeyPair(), catch: (e) => new IdentityUnavailable({ message: `cannot make a key pair: ${messageOf(e)}` }) })
    const csr = yield* Effect.tryPromise({
      try: () => createCertificateRequest(pair.keys, options.requestedId),
      catch: (e) => new IdentityUnavailable({ message: `cannot make a certificate request: ${messageOf(e)}` })
    })
    const response = yield* Effect.tryPromise({
      try: (signal) => options.signer(csr, signal),
      catch: (e) => new IdentityUnavailable({ message: messageOf(e), retryAfterMs: e instanceof IssuerRefused ? e.retryAfterMs : undefined })
    })
    const now = new Date(yield* Clock.currentTimeMillis)
    return yield* Effect.try({
      try: () => credentialsOf(response, pair.privateKeyPem, options, now),
      catch: (e) => (e instanceof IdentityUnavailable ? e : new IdentityUnavailable({ message: `the signer's answer is refused: ${messageOf(e)}` }))
    })
  })

/**
 * When to renew credentials just received, in ms from `now`: at renewAt +- jitter of their life,
 * counted from when they became usable here (their notBefore, or now if the issuer backdated it
 * for clock skew), and never sooner than a second so a short-lived leaf cannot make a busy loop.
 * Their life ends with the first certificate of the chain, or the bundle root it leads to, to
 * expire: a leaf that outlives its intermediate or its root (an issuer whose CA is near its end,
 * or one that signs until 9999) is useless, to every peer, once either has expired.
 */
export const renewalDelayMs = (credentials: WorkloadCredentials, now: number, random: number, renewAt = 0.7, jitter = 0.05): number => {
  const leaf = new X509Certificate(certificatesOfPem(credentials.certificateChainPem)[0]!)
  const start = Math.max(new Date(leaf.validFrom).getTime(), now)
  const end = Math.min(credentials.notAfter.getTime(), chainUsableUntil(credentials.certificateChainPem, credentials.trustBundlePem))
  const fraction = renewAt + (random * 2 - 1) * jitter
  return Math.max(1_000, Math.round(start + (end - start) * fraction - now))
}

/**
 * Obtains the first credentials (retrying until it does) and keeps renewing them, and refreshing
 * their trust bundle, for the scope's life. The returned source always holds the newest
 * credentials that passed the checks.
 */
export const make = (options: IdentityClientOptions): Effect.Effect<IdentityClient, never, Scope.Scope> =>
  Effect.gen(function*() {
    const retryBaseMs = options.retryBaseMs ?? 1_000
    const retryMaxMs = options.retryMaxMs ?? 60_000
    let renewals = 0
    let listenerFailures = 0
    let lastError: string | undefined
    let lastBundleError: string | undefined
    const bundleRefreshes = Object.fromEntries(bundleRefreshResults.map((result) => [result, 0])) as Record<BundleRefreshResult, number>
    let renewAt = 0

    /** The wait before retry `attempt` (from 0): doubling from retryBaseMs up to `maxMs`, times a jitter in [0.5, 1). */
    const backoff = (attempt: number, maxMs: number) =>
      Effect.map(Random.next, (random) => Math.floor(Math.min(maxMs, retryBaseMs * 2 ** Math.min(attempt, 30)) * (0.5 + random / 2))) // rounding up could reach the bound

    /** Obtains credentials, retrying with backoff (and jitter) until it does. */
    const obtainPatiently = Effect.gen(function*() {
      for (let attempt = 0;; attempt++) {
        const result = yield* Effect.result(obtain(options))
        if (result._tag === "Success") {
          lastError = undefined
          return result.success
        }
        lastError = result.failure.message
        // No sooner than the issuer's retry-after (a busy issuer says when), no later than retryMaxMs whatever it says.
        const delay = Math.max(yield* backoff(attempt, retryMaxMs), Math.min(result.failure.retryAfterMs ?? 0, retryMaxMs))
        options.log("identity-renewal-failed", { error: loggable(lastError), attempt: attempt + 1, retryInMs: delay })
        yield* Effect.sleep(delay)
      }
    })

    const clock = yield* Clock.Clock
    let roots: Array<RootValidity> = []
    /** The roots of the generation held whose expiry was logged: each once (a new generation logs its own). */
    let reported = new Set<RootValidity>()
    /** Logs, by name, each root held that has expired since it was last checked (every handshake of a peer under one fails). */
    const checkRoots = () => {
      const now = clock.currentTimeMillisUnsafe()
      for (const root of roots) {
        if (root.notAfter >= now || reported.has(root)) continue
        reported.add(root)
        options.log("identity-trust-bundle-root-expired", { root: loggable(root.subject), notAfter: new Date(root.notAfter).toISOString(), roots: roots.length })
      }
    }
    const readRoots = (credentials: WorkloadCredentials) => {
      roots = rootValidities(credentials.trustBundlePem)
      reported = new Set()
      checkRoots()
    }

    const first = yield* obtainPatiently
    const holder = makeCredentialHolder(first)
    options.log("identity-obtained", { spiffeId: first.spiffeId, notAfter: first.notAfter.toISOString() })
    readRoots(first)

    /** Hands a new generation on to every listener; one that throws is logged and counted. */
    const publish = (next: WorkloadCredentials) => {
      readRoots(next)
      for (const failure of holder.update(next)) {
        listenerFailures++
        options.log("identity-listener-failed", { error: loggable(messageOf(failure)) })
      }
    }

    /** Picks the next renewal time (so the status shows it before the renewal fiber runs). */
    const schedule = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const delay = renewalDelayMs(holder.current(), now, yield* Random.next, options.renewAtFraction, options.jitter)
      renewAt = now + delay
      return delay
    })
    let delay = yield* schedule
    yield* Effect.forkScoped(
      Effect.forever(
        Effect.gen(function*() {
          yield* Effect.sleep(delay)
          const next = yield* obtainPatiently
          renewals++
          publish(next)
          options.log("identity-renewed", { spiffeId: next.spiffeId, notAfter: next.notAfter.toISOString() })
          delay = yield* schedule
        })
      )
    )

    const fetchTrustBundle = options.fetchTrustBundle
    if (fetchTrustBundle !== undefined) {
      const refreshMs = options.bundleRefreshMs ?? 300_000
      const refresh = Effect.gen(function*() {
        const bundlePem = yield* Effect.tryPromise({ try: (signal) => fetchTrustBundle(signal), catch: (e) => new IdentityUnavailable({ message: messageOf(e) }) }).pipe(
          Effect.tapError(() => Effect.sync(() => bundleRefreshes.failed++))
        )
        const now = new Date(yield* Clock.currentTimeMillis)
        // Checked and handed on in one step: a renewal landing in between would otherwise get its predecessor's key back.
        const refreshed = yield* Effect.try({
          try: () => {
            const next = withRefreshedBundle(holder.current(), bundlePem, now)
            if (next !== undefined) publish(next)
            return next !== undefined
          },
          catch: (e) => (e instanceof IdentityUnavailable ? e : new IdentityUnavailable({ message: `the issuer's trust bundle is refused: ${messageOf(e)}` }))
        }).pipe(Effect.tapError(() => Effect.sync(() => bundleRefreshes.refused++)))
        bundleRefreshes[refreshed ? "updated" : "unchanged"]++
        if (refreshed) options.log("identity-trust-bundle-refreshed", { roots: roots.length })
      })
      const interval = Effect.map(Random.next, (random) => Math.round(refreshMs * (0.9 + 0.2 * random)))
      yield* Effect.forkScoped(Effect.gen(function*() {
        let delay = yield* interval
        for (let failures = 0;;) {
          yield* Effect.sleep(delay)
          const result = yield* Effect.result(refresh)
          checkRoots()
          if (result._tag === "Success") {
            failures = 0
            lastBundleError = undefined
            delay = yield* interval
          } else {
            delay = yield* backoff(failures++, refreshMs)
            lastBundleError = result.failure.message
            options.log("identity-trust-bundle-refresh-failed", { error: loggable(lastBundleError), attempt: failures, retryInMs: delay })
          }
        }
      }))
    }

    return {
      current: holder.current,
      subscribe: holder.subscribe,
      status: () => {
        const current = holder.current()
        const now = clock.currentTimeMillisUnsafe()
        return {
          spiffeId: current.spiffeId,
          notAfter: current.notAfter.toISOString(),
          renewAt: new Date(renewAt).toISOString(),
          renewals,
          lastError,
          listenerFailures,
          trustBundleRoots: roots.length,
          expiredRoots: roots.filter((root) => root.notAfter < now).length,
          lastBundleError,
          bundleRefreshes: { ...bundleRefreshes }
        }
      }
    }
  })

/** The SPIFFE ID a sidecar asks for outside Kubernetes: spiffe://<td>/svc/<service>. */
export const requestedServiceId = (trustDomain: string, service: string): string => {
  const id = `spiffe://${trustDomain}/svc/${service}`
  if (parseSpiffeId(id) === undefined) throw new IdentityUnavailable({ message: `not a valid identity: ${loggable(id)}` })
  return id
}
