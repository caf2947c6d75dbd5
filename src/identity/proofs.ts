// How a sidecar proves who it is to the issuer, and what identity each proof earns:
//
// - kubernetes: its projected ServiceAccount token, minted for the issuer's own audience. The
//   issuer asks the API server (TokenReview, authentication.k8s.io/v1) whether the token is valid
//   for that audience; the answer's username `system:serviceaccount:<ns>:<sa>` gives
//   spiffe://<td>/ns/<ns>/sa/<sa>. A token for another audience, of a deleted account, or not a
//   ServiceAccount's at all earns nothing.
// - join: a secret configured at the issuer, bound to the services it may claim, with an end
//   (`expires=`, or the issuer's TTL after its file was written); it earns
//   spiffe://<td>/svc/<service> for one of them. Past its end it earns a renewal only: the same
//   service's identity, for a sidecar presenting a certificate of it on the call.
//
// Every refusal is a ProofRefused with a reason from a closed set (metrics label it) and a detail
// for the log; no token ever reaches a log line.
import * as Data from "effect/Data"
import { createHash, timingSafeEqual } from "node:crypto"
import * as https from "node:https"
import { loggable } from "../iip/redact.ts"
import { MAX_SECRET_FILE_BYTES, readSmallText, readSmallTextAsync } from "../iip/smallFile.ts"
import { nodeHttp } from "../toolkit/nodeHttp.ts"
import { maxPemChars } from "./trustBundle.ts"

export const refusalReasons = [
  "bad-request",
  "malformed-csr",
  "wrong-audience",
  "unauthenticated",
  "not-a-service-account",
  "bad-join-token",
  "identity-not-allowed",
  "token-review-unavailable",
  "proof-not-accepted",
  "too-many-requests",
  "overloaded"
] as const
export type RefusalReason = (typeof refusalReasons)[number]

export class ProofRefused extends Data.TaggedError("ProofRefused")<{ readonly reason: RefusalReason; readonly detail: string }> {
  override get message(): string {
    return `${this.reason}: ${this.detail}`
  }
}

// --- Kubernetes ServiceAccount tokens -------------------------------------------------------

export interface TokenReviewOptions {
  /** The API server, e.g. https://10.96.0.1:443 (in-cluster: from KUBERNETES_SERVICE_HOST/PORT). */
  readonly apiUrl: string
  /** CA of the API server (in-cluster: the ServiceAccount's ca.crt); undefined for the system's. */
  readonly ca?: string | undefined
  /** The issuer's own credential for the TokenReview call, read on every call (kubelet rotates it). */
  readonly bearerToken: () => string | Promise<string>
  /** The audience sidecar tokens must be minted for: the issuer's own. */
  readonly audience: string
  readonly timeoutMs: number
  /** Largest TokenReview answer read; a larger one is refused unread. */
  readonly maxResponseBytes?: number
}

const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

/**
 * The in-cluster TokenReview settings, or undefined outside a cluster. Its files are not trusted to
 * be what they should: ca.crt, read once here, and the token, read on every TokenReview while the
 * issuer serves (off the event loop), are refused unread when a FIFO or a device (whose read would
 * wait for good) or larger than a PEM bundle or a secret may be, the error naming the file.
 */
export const inClusterTokenReview = (env: Record<string, string | undefined>, audience: string, timeoutMs: number, dir = serviceAccountDir): TokenReviewOptions | undefined => {
  const host = env.KUBERNETES_SERVICE_HOST
  if (host === undefined || host === "") return undefined
  const port = env.KUBERNETES_SERVICE_PORT ?? "443"
  return {
    apiUrl: `https://${host.includes(":") ? `[${host}]` : host}:${port}`,
    ca: readSmallText(`${dir}/ca.crt`, maxPemChars),
    bearerToken: async () => (await readSmallTextAsync(`${dir}/token`, MAX_SECRET_FILE_BYTES)).trim(),
    audience,
    timeoutMs
  }
}

const labelPattern = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/
/** Kubernetes ServiceAccount names are DNS subdomains; SPIFFE path segments take them as they are. */
const accountPattern = /^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$/

/** POSTs one JSON body and reads a bounded JSON answer; `signal` aborts it (the connection and the timer go with it). */
const postJson = (url: URL, body: string, headers: Record<string, string>, options: TokenReviewOptions, signal: AbortSignal | undefined) =>
  new Promise<{ status: number; json: unknown }>((resolve, reject) => {
    const maxBytes = options.maxResponseBytes ?? 64 * 1024
    const request = (url.protocol === "https:" ? https : nodeHttp).request(url, {
      method: "POST",
      headers: { ...headers, "content-type": "application/json", accept: "application/json", "content-length": String(Buffer.byteLength(body)) },
      ...(url.protocol === "https:" && options.ca !== undefined ? { ca: options.ca } : {}),
      signal
    })
    const timer = setTimeout(() => request.destroy(new Error(`no answer within ${options.timeoutMs} ms`)), options.timeoutMs)
    request.on("error", (error) => {
      clearTimeout(timer)
      reject(error)
    })
    request.on("response", (response) => {
      const chunks: Array<Buffer> = []
      let size = 0
      response.on("data", (chunk: Buffer) => {
        size += chunk.length
        if (size > maxBytes) request.destroy(new Error(`answer larger than ${maxBytes} bytes`))
        else chunks.push(chunk)
      })
      response.on("end", () => {
        clearTimeout(timer)
        try {
          resolve({ status: response.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString("utf8")) })
        } catch {
          reject(new Error(`answer (status ${response.statusCode}) is not JSON`))
        }
      })
      response.on("error", reject)
    })
    request.end(body)
  })

interface TokenReviewStatus {
  readonly authenticated?: boolean
  readonly audiences?: ReadonlyArray<string>
  readonly error?: string
  readonly user?: { readonly username?: unknown }
}

/**
 * A ServiceAccount token's namespace and account, as the API server vouches for them. `signal`
 * aborts the review (refused token-review-unavailable): the issuer's client has gone.
 */
export const reviewServiceAccountToken = async (options: TokenReviewOptions, token: string, signal?: AbortSignal): Promise<{ namespace: string; serviceAccount: string }> => {
  const body = JSON.stringify({
    apiVersion: "authentication.k8s.io/v1",
    kind: "TokenReview",
    spec: { token, audiences: [options.audience] }
  })
  let answer: { status: number; json: unknown }
  try {
    answer = await postJson(new URL("/apis/authentication.k8s.io/v1/tokenreviews", options.apiUrl), body, { authorization: `Bearer ${await options.bearerToken()}` }, options, signal)
  } catch (cause) {
    throw new ProofRefused({ reason: "token-review-unavailable", detail: `TokenReview failed: ${loggable(cause instanceof Error ? cause.message : String(cause))}` })
  }
  if (answer.status !== 200 && answer.status !== 201) {
    throw new ProofRefused({ reason: "token-review-unavailable", detail: `TokenReview answered status ${answer.status}` })
  }
  const status = (answer.json as { status?: TokenReviewStatus } | null)?.status ?? {}
  if (status.authenticated !== true) {
    const error = typeof status.error === "string" ? status.error : ""
    // The API server says why: a token minted for another audience names "audiences" in it.
    throw new ProofRefused({
      reason: /audience/i.test(error) ? "wrong-audience" : "unauthenticated",
      detail: `the API server does not authenticate the token${error === "" ? "" : `: ${loggable(error)}`}`
    })
  }
  // An API server that ignored spec.audiences would vouch for a token minted for anyone: the
  // audience must come back named, or the token is not for us.
  if (!Array.isArray(status.audiences) || !status.audiences.includes(options.audience)) {
    throw new ProofRefused({ reason: "wrong-audience", detail: `the token is not for audience ${options.audience}` })
  }
  // The answer's types are the API server's to get right: anything but a string names no account.
  const username = typeof status.user?.username === "string" ? status.user.username : ""
  const parts = username.split(":")
  if (parts.length !== 4 || parts[0] !== "system" || parts[1] !== "serviceaccount" || !labelPattern.test(parts[2]!) || !accountPattern.test(parts[3]!)) {
    throw new ProofRefused({ reason: "not-a-service-account", detail: `the token belongs to ${loggable(username)}, not a ServiceAccount` })
  }
  return { namespace: parts[2]!, serviceAccount: parts[3]! }
}

// --- Join tokens ----------------------------------------------------------------------------

/** A join token's SHA-256, the services it may claim, and when it stops earning a first certificate. */
export interface JoinToken {
  readonly sha256: Buffer
  readonly services: ReadonlySet<string>
  /** Milliseconds since the epoch; from then on the token earns renewals only (checkJoinToken). */
  readonly expiresAt: number
}

/**
 * Why a join token is reusable until its end rather than single-use: the sidecar's key is made in
 * memory and never written, so a sidecar that restarts has nothing but its token to join again
 * with, and the replicas of a service share their service's token. A single-use token would strand
 * the first restart and need a token per replica. What bounds a token instead is its end (24 h by
 * default, kubeadm's bootstrap-token TTL), and a running sidecar does not depend on it: it renews
 * with the certificate it holds (issuer.ts), so the end only bounds when a sidecar may (re)join.
 */
export const defaultJoinTokenTtlMs = 24 * 3_600_000

/** Where a token without `expires=` gets its end: its file's write time plus the issuer's TTL. */
export interface JoinTokenTimes {
  readonly writtenAt: number
  readonly defaultTtlMs: number
}

const servicePattern = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/
/** RFC 3339 with its zone: a time without one would be read in the issuer's local zone. */
const rfc3339 = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})$/

/**
 * The time an RFC 3339 `text` names, or NaN. Date.parse takes days up to 31 in every month and an
 * hour of 24, rolling them into the following days: a mistyped end (30 February) would be moved
 * silently, so the day must exist in its month and the hour be below 24.
 */
const rfc3339Time = (text: string): number => {
  const fields = rfc3339.exec(text)
  if (fields === null) return NaN
  const [year, month, day, hour] = fields.slice(1, 5).map(Number) as [number, number, number, number]
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate()
  return day >= 1 && day <= daysInMonth && hour <= 23 ? Date.parse(text) : NaN
}

/** Shorter secrets are refused when the file is read: a join token must not be guessable. */
export const minJoinTokenLength = 32

const sha256 = (text: string): Buffer => createHash("sha256").update(text, "utf8").digest()

/**
 * Parses a join-token file: one token per line, `TOKEN SERVICE[,SERVICE...] [expires=TIME]`, the
 * token as given or as `sha256:<hex>` of it (so the file need not hold the secret), TIME in RFC
 * 3339 with its zone (`2027-01-02T03:04:05Z`); `#` starts a comment.
 */
export const parseJoinTokens = (text: string, times: JoinTokenTimes): Array<JoinToken> =>
  text.split("\n").flatMap((raw, index) => {
    const line = raw.replace(/#.*/, "").trim()
    if (line === "") return []
    const [secret = "", services = "", end, ...extra] = line.split(/\s+/)
    const where = `join tokens line ${index + 1}`
    if (extra.length > 0 || services === "") throw new Error(`${where}: expected TOKEN SERVICE[,SERVICE...] [expires=TIME]`)
    // The token first: a line with its columns swapped would otherwise quote it as a bad service name, into the log of a re-read.
    const hashed = /^sha256:([0-9a-f]{64})$/.exec(secret)
    if (hashed === null && secret.length < minJoinTokenLength) throw new Error(`${where}: a token must be at least ${minJoinTokenLength} characters (or sha256:<hex> of one)`)
    const names = services.split(",")
    const bad = names.filter((name) => !servicePattern.test(name))
    if (bad.length > 0) throw new Error(`${where}: not service names: ${bad.map((name) => JSON.stringify(loggable(name, 64))).join(", ")}`)
    const expiresAt = end === undefined ? times.writtenAt + times.defaultTtlMs : end.startsWith("expires=") ? rfc3339Time(end.slice(8)) : NaN
    if (Number.isNaN(expiresAt)) throw new Error(`${where}: expected expires=<RFC 3339 time with its zone, e.g. 2027-01-02T03:04:05Z>, got ${end?.startsWith("expires=") === true ? JSON.stringify(loggable(end, 64)) : "a third field that is not expires="}`)
    return [{ sha256: hashed !== null ? Buffer.from(hashed[1]!, "hex") : sha256(secret), services: new Set(names), expiresAt }]
  })

/**
 * The service a join token lets its bearer claim: `requested` when the token is bound to it, or
 * the token's only service when nothing is requested. Tokens are compared by hash in constant time.
 * A token past its end (at `now`) earns only a renewal (byCertificate): the service `renewing` (the
 * one a verified certificate presented on the call names) when it is that one. The token presented
 * is the one judged, never another of the same service: a token removed from the file earns
 * nothing, certificate or not, even while the service has others; that is how one is revoked.
 */
export const checkJoinToken = (
  tokens: ReadonlyArray<JoinToken>,
  token: string,
  requested: string | undefined,
  now: number,
  renewing: string | undefined
): { readonly service: string; readonly byCertificate: boolean } => {
  const presented = sha256(token)
  let match: JoinToken | undefined
  for (const candidate of tokens) if (timingSafeEqual(candidate.sha256, presented)) match = candidate
  if (match === undefined) throw new ProofRefused({ reason: "bad-join-token", detail: "unknown join token" })
  let service: string
  if (requested === undefined) {
    if (match.services.size !== 1) throw new ProofRefused({ reason: "identity-not-allowed", detail: "the join token is bound to several services: the request must name one" })
    service = [...match.services][0]!
  } else if (!match.services.has(requested)) {
    throw new ProofRefused({ reason: "identity-not-allowed", detail: `the join token is not bound to service ${loggable(requested, 64)}` })
  } else service = requested
  if (now < match.expiresAt) return { service, byCertificate: false }
  if (renewing === service) return { service, byCertificate: true }
  throw new ProofRefused({ reason: "bad-join-token", detail: `the join token expired at ${new Date(match.expiresAt).toISOString()}: joining needs a new one (a sidecar that joined with it renews with its certificate)` })
}
