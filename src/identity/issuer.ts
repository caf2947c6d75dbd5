// `iip-mesh identity`: the issuer. It holds the intermediate CA and signs sidecars' certificate
// requests over HTTPS (its own leaf, spiffe://<td>/issuer, under the same intermediate, so a
// sidecar verifies it against the trust bundle it already has):
//
//   POST /v1/sign  {"csr": PEM, "proof": {"kind": "kubernetes" | "join", "token": "..."}}
//     200 {"spiffeId", "certificateChainPem" (leaf + intermediate), "trustBundlePem", "notAfter"}
//     4xx/5xx {"error": <reason>, "message"}
//   GET /v1/bundle  200 {"trustBundlePem"}: the bundle signed leaves come with, fetched by sidecars
//     between renewals so a root added by a rotation reaches them within minutes (no proof needed:
//     the bundle is public)
//   GET /health, GET /metrics (signed and refused counts, join-token file re-reads, Prometheus text)
//
// The CSR is checked first (local, cheap), then the proof (proofs.ts), then the identity the CSR
// names must be the one the proof earns. A sidecar renewing presents the certificate it holds as
// its TLS client certificate (verified against the bundle, never required): past its join token's
// end, that certificate is what earns the renewal of the same service's identity. Every input is
// bounded: body size, request time, the TokenReview call's time and answer, the signings in
// flight and the connections, each in all and per peer (issuerShares.ts), and the rate at which one
// peer starts TLS handshakes (handshakeRate.ts); a peer is a source (src/iip/sourceKey.ts): an
// IPv4 address, or an IPv6 prefix (ipv6SourcePrefix, a /64 by default).
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { X509Certificate } from "node:crypto"
import type { IncomingMessage, ServerResponse } from "node:http"
import * as https from "node:https"
import type * as net from "node:net"
import type { TLSSocket } from "node:tls"
import { ListenFailed } from "../iip/server.ts"
import type { DocumentLoad } from "../iip/documentFile.ts"
import { type Log, LogThrottle } from "../iip/log.ts"
import { amount, checkOptions, count, durationMs, type Limits } from "../iip/optionLimits.ts"
import { loggable } from "../iip/redact.ts"
import { IPV6_SOURCE_PREFIX, sourceKeyOf } from "../iip/sourceKey.ts"
import { monotonicMillisOf } from "../mux/clock.ts"
import type { IssuingCa } from "./caDirectory.ts"
import { defaultLeafLifetimeMs, generateKeyPair, issueLeaf, validFromNow } from "./certificates.ts"
import { readCertificateRequest, RequestMalformed } from "./certificateRequest.ts"
import { HandshakeRate } from "./handshakeRate.ts"
import { IssuerShares } from "./issuerShares.ts"
import { checkJoinToken, type JoinToken, ProofRefused, type RefusalReason, refusalReasons, reviewServiceAccountToken, type TokenReviewOptions } from "./proofs.ts"
import { certificatesOfPem } from "./trustBundle.ts"
import { issuerSpiffeId, kubernetesSpiffeId, parseSpiffeId, serviceSpiffeId, spiffeIdOfCertificate } from "./spiffe.ts"

export const proofKinds = ["kubernetes", "join"] as const
export type ProofKind = (typeof proofKinds)[number]

/** The body of POST /v1/sign. */
export interface SignRequest {
  readonly csr: string
  readonly proof: { readonly kind: ProofKind; readonly token: string }
}

/** The answer to a successful POST /v1/sign. */
export interface SignResponse {
  readonly spiffeId: string
  readonly certificateChainPem: string
  readonly trustBundlePem: string
  readonly notAfter: string
}

export interface IssuerOptions {
  /** The CA it starts with (replaceCa swaps it). */
  readonly ca: IssuingCa
  readonly trustDomain: string
  readonly host: string
  readonly port: number
  /** Lifetime of the leaves signed (default 24 h). */
  readonly leafLifetimeMs: number
  /** Kubernetes proofs are taken only with this; undefined refuses them. */
  readonly tokenReview: TokenReviewOptions | undefined
  /**
   * The join tokens in force (each with its end, judged on Effect's Clock), asked on every join
   * proof, so a re-read of their file (joinTokensFile.ts) applies from the next request on; none
   * refuses join proofs.
   */
  readonly joinTokens: () => ReadonlyArray<JoinToken>
  /** Re-reads of the join-token file by result, for /metrics; undefined when there is no file. */
  readonly joinTokenReloads?: () => Readonly<Record<DocumentLoad, number>>
  /** Largest request body (default 16 KiB). */
  readonly maxRequestBytes: number
  /** A request must be read and answered within this (default 10 s). */
  readonly requestTimeoutMs: number
  /** Signings in progress at once; past it requests are refused `overloaded` (default 64). */
  readonly maxInFlight: number
  /**
   * Of those, in progress for one source (an IPv4 address, an IPv6 prefix: src/iip/sourceKey.ts) at
   * once; past it its requests are refused `too-many-requests` (default 16; one connection holds 4
   * at most: maxInFlightPerConnection).
   */
  readonly maxInFlightPerSource: number
  /** Connections open at once; past it new ones are dropped (default 1024). */
  readonly maxConnections: number
  /** Of those, open from one source at once, handshakes included; past it new ones are closed (default 64). */
  readonly maxConnectionsPerSource: number
  /**
   * TLS handshakes one source may start a second, sustained (default 20), and at once
   * (default 40); past them its new connections are closed at accept, before any TLS work.
   */
  readonly handshakeRatePerSource: number
  readonly handshakeBurstPerSource: number
  /**
   * The prefix an IPv6 peer's address is counted by in the per-source limits (src/iip/sourceKey.ts;
   * default 64, the block an IPv6 host on a LAN can send from; 80 where a node is given a /80 in a
   * /64 shared with other nodes, as on EKS; 128 where the network lets a peer send from its own
   * address only).
   */
  readonly ipv6SourcePrefix: number
  readonly log: Log
}

export const issuerDefaults = {
  leafLifetimeMs: defaultLeafLifetimeMs,
  maxRequestBytes: 16 * 1024,
  requestTimeoutMs: 10_000,
  maxInFlight: 64,
  maxInFlightPerSource: 16,
  maxConnections: 1024,
  maxConnectionsPerSource: 64,
  // A sidecar makes one connection a call (join, renewal, bundle refresh: minutes apart; a failed
  // one retried after 1 s, doubling): 40 sidecars behind one address starting together, then 20
  // more a second, pass; a loop at full speed (300-340 a second measured, from 8 connections at a
  // time, the loop and the issuer in one process) is held to 20 a second.
  handshakeRatePerSource: 20,
  handshakeBurstPerSource: 40,
  ipv6SourcePrefix: IPV6_SOURCE_PREFIX.default
} as const

/**
 * The numeric options' ranges, the CLI's (src/cli/identityIssuer.ts) for those it takes: a library
 * caller's NaN, Infinity or negative would otherwise switch a bound off (every limit is `x > limit`).
 */
const issuerLimits: Limits<IssuerOptions> = {
  port: count(0, 65_535),
  // A second at least: tests renew leaves of a few seconds; the CLI asks a minute.
  leafLifetimeMs: amount(1_000, 366 * 86_400_000),
  maxRequestBytes: count(4096, 1024 * 1024),
  requestTimeoutMs: durationMs(1, 300_000),
  maxInFlight: count(1, 100_000),
  maxInFlightPerSource: count(1, 100_000),
  maxConnections: count(1, 1_000_000),
  maxConnectionsPerSource: count(1, 1_000_000),
  handshakeRatePerSource: count(1, 1_000_000),
  handshakeBurstPerSource: count(1, 1_000_000),
  ipv6SourcePrefix: count(IPV6_SOURCE_PREFIX.min, IPV6_SOURCE_PREFIX.max)
}

export interface Issuer {
  readonly host: string
  readonly port: number
  readonly signed: () => Readonly<Record<ProofKind, number>>
  readonly refused: () => Readonly<Record<RefusalReason, number>>
  /**
   * Signs with `ca` from now on (a new intermediate, a new bundle: a rotation step); the issuer's
   * own leaf is re-issued under it. Requests being signed finish with the CA they started with.
   */
  readonly replaceCa: (ca: IssuingCa) => Promise<void>
}

const statusOf: Record<RefusalReason, number> = {
  "bad-request": 400,
  "malformed-csr": 400,
  "wrong-audience": 401,
  "unauthenticated": 401,
  "not-a-service-account": 403,
  "bad-join-token": 401,
  "identity-not-allowed": 403,
  "token-review-unavailable": 503,
  "proof-not-accepted": 403,
  "too-many-requests": 429,
  "overloaded": 503
}

/**
 * Refusal and refused-connection lines: a peer repeats them as fast as it sends, so each kind is
 * logged at most this many a window, the rest counted in the next line (every one in the metrics).
 * One throttle a kind: a flood of one does not hide another's first lines.
 */
const floodLines = 20
const floodWindowMs = 60_000

const maxTokenChars = 8 * 1024

/** The body as a SignRequest, or a bad-request refusal saying what is wrong. */
const parseSignRequest = (text: string): SignRequest => {
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    throw new ProofRefused({ reason: "bad-request", detail: "the body is not JSON" })
  }
  const { csr, proof } = (typeof body === "object" && body !== null ? body : {}) as { csr?: unknown; proof?: { kind?: unknown; token?: unknown } }
  if (typeof csr !== "string") throw new ProofRefused({ reason: "bad-request", detail: "csr: expected a PEM string" })
  if (typeof proof !== "object" || proof === null || !proofKinds.includes(proof.kind as ProofKind)) {
    throw new ProofRefused({ reason: "bad-request", detail: `proof.kind: expected one of ${proofKinds.join(", ")}` })
  }
  if (typeof proof.token !== "string" || proof.token.length === 0 || proof.token.length > maxTokenChars) {
    throw new ProofRefused({ reason: "bad-request", detail: `proof.token: expected a string of 1..${maxTokenChars} characters` })
  }
  return { csr, proof: { kind: proof.kind as ProofKind, token: proof.token } }
}

/** Reads the body up to `maxBytes`; a larger one is refused without reading the rest. */
const readBody = (request: IncomingMessage, maxBytes: number) =>
  new Promise<string>((resolve, reject) => {
    const declared = Number(request.headers["content-length"] ?? 0)
    if (declared > maxBytes) return reject(new ProofRefused({ reason: "bad-request", detail: `body larger than ${maxBytes} bytes` }))
    const chunks: Array<Buffer> = []
    let size = 0
    request.on("data", (chunk: Buffer) => {
      size += chunk.length
      if (size > maxBytes) {
        request.pause()
        reject(new ProofRefused({ reason: "bad-request", detail: `body larger than ${maxBytes} bytes` }))
      } else chunks.push(chunk)
    })
    request.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")))
    request.on("error", reject)
  })

const listenTls = (server: https.Server, host: string, port: number) =>
  Effect.callback<{ host: string; port: number }, ListenFailed>((resume) => {
    const onError = (error: NodeJS.ErrnoException) => resume(Effect.fail(new ListenFailed({ message: `cannot listen on ${host}:${port}: ${error.code ?? error.message}` })))
    server.once("error", onError)
    server.listen(port, host, () => {
      server.off("error", onError)
      const bound = server.address() as net.AddressInfo
      resume(Effect.succeed({ host: bound.address, port: bound.port }))
    })
  })

/**
 * A leaf's validity from now: `lifetimeMs`, cut at the intermediate's own end. A leaf that outlives
 * what signed it is refused by every peer once the intermediate has expired.
 */
const leafValidity = (ca: IssuingCa, lifetimeMs: number) => {
  const intermediateEnd = new Date(new X509Certificate(ca.intermediate.certificatePem).validTo).getTime()
  return validFromNow(Math.max(0, Math.min(lifetimeMs, intermediateEnd - Date.now())))
}

/**
 * The issuer's own serving credentials: a fresh in-memory key and a leaf under the intermediate,
 * and the bundle a client's certificate is verified against (asked for, never required).
 */
const servingCredentials = async (ca: IssuingCa, options: IssuerOptions) => {
  const pair = await generateKeyPair()
  const leaf = await issueLeaf(ca.intermediate, { spiffeId: issuerSpiffeId(options.trustDomain), publicKey: pair.keys.publicKey, ...leafValidity(ca, options.leafLifetimeMs) })
  return { key: pair.privateKeyPem, cert: leaf + ca.intermediate.certificatePem, ca: ca.trustBundlePem, minVersion: "TLSv1.3" as const }
}

/**
 * The service whose certificate the client presented, verified by node:tls against the bundle
 * (chained to a root we hand out), current at `now`, not a CA (an X.509-SVID leaf never is: OpenSSL
 * takes a CA certificate as a client's leaf when its key usage allows) and naming
 * spiffe://<td>/svc/<service>; else undefined. node:tls judged the dates once, at the connection's
 * full handshake: a connection kept alive would carry a certificate past its end, so the leaf's
 * dates are judged again on every call, on the wall clock as OpenSSL judges them (leaves never
 * outlive their intermediate: leafValidity). A resumed session counts no certificate: it shows
 * none, OpenSSL hands back the one of the session's first handshake (our client never resumes).
 */
const presentedService = (socket: TLSSocket, trustDomain: string, now: number): string | undefined => {
  if (!socket.authorized || socket.isSessionReused()) return undefined
  const leaf = socket.getPeerX509Certificate()
  const current = leaf !== undefined && !leaf.ca && leaf.validFromDate.getTime() <= now && now <= leaf.validToDate.getTime()
  const id = current ? spiffeIdOfCertificate(leaf) : undefined
  const segments = id?.trustDomain === trustDomain ? id.path.split("/") : []
  return segments.length === 3 && segments[1] === "svc" ? segments[2] : undefined
}

/** Dies with OptionInvalid for a numeric option out of its range (src/iip/optionLimits.ts's rule for Effect constructors). */
export const make = (options: IssuerOptions): Effect.Effect<Issuer, ListenFailed, Scope.Scope> =>
  Effect.gen(function*() {
    checkOptions("Issuer", issuerLimits, options)
    let ca = options.ca
    const signed: Record<ProofKind, number> = { kubernetes: 0, join: 0 }
    const refused = Object.fromEntries(refusalReasons.map((reason) => [reason, 0])) as Record<RefusalReason, number>
    let abandoned = 0
    let handshakes = 0
    const shares = new IssuerShares(options)
    const refusalLines = Object.fromEntries(refusalReasons.map((reason) => [reason, new LogThrottle(floodLines, floodWindowMs)])) as Record<RefusalReason, LogThrottle>
    const connectionLines = { total: new LogThrottle(floodLines, floodWindowMs), per_source: new LogThrottle(floodLines, floodWindowMs), handshake_rate: new LogThrottle(floodLines, floodWindowMs) }
    const clock = yield* Clock.Clock
    /** The source a peer's address is counted under by the per-source limits. */
    const sourceOf = (remote: string) => sourceKeyOf(remote, options.ipv6SourcePrefix)
    const handshakeRate = new HandshakeRate({ ratePerSecond: options.handshakeRatePerSource, burst: options.handshakeBurstPerSource }, () => monotonicMillisOf(clock))

    /** The identity a proof earns for a CSR naming `requestedId` (or nothing), and whether a presented certificate earned it. */
    const grant = async (proof: SignRequest["proof"], requestedId: string | undefined, renewing: string | undefined, departure: AbortSignal): Promise<{ spiffeId: string; byCertificate: boolean }> => {
      if (proof.kind === "kubernetes") {
        if (options.tokenReview === undefined) throw new ProofRefused({ reason: "proof-not-accepted", detail: "this issuer takes no Kubernetes tokens (not in a cluster)" })
        const account = await reviewServiceAccountToken(options.tokenReview, proof.token, departure)
        return { spiffeId: kubernetesSpiffeId(options.trustDomain, account.namespace, account.serviceAccount), byCertificate: false }
      }
      const joinTokens = options.joinTokens()
      if (joinTokens.length === 0) throw new ProofRefused({ reason: "proof-not-accepted", detail: "this issuer has no join tokens" })
      let service: string | undefined
      if (requestedId !== undefined) {
        const parsed = parseSpiffeId(requestedId)
        const segments = parsed?.path.split("/") ?? []
        if (parsed?.trustDomain !== options.trustDomain || segments.length !== 3 || segments[1] !== "svc") {
          throw new ProofRefused({ reason: "identity-not-allowed", detail: `a join token earns spiffe://${options.trustDomain}/svc/<service>, not ${loggable(requestedId, 200)}` })
        }
        service = segments[2]
      }
      const granted = checkJoinToken(joinTokens, proof.token, service, clock.currentTimeMillisUnsafe(), renewing)
      return { spiffeId: serviceSpiffeId(options.trustDomain, granted.service), byCertificate: granted.byCertificate }
    }

    const sign = async (body: string, renewing: string | undefined, departure: AbortSignal): Promise<SignResponse> => {
      const signingCa = ca
      const request = parseSignRequest(body)
      let csr
      try {
        csr = await readCertificateRequest(request.csr)
      } catch (error) {
        if (error instanceof RequestMalformed) throw new ProofRefused({ reason: "malformed-csr", detail: error.reason })
        throw error
      }
      const { spiffeId, byCertificate } = await grant(request.proof, csr.requestedId, renewing, departure)
      if (csr.requestedId !== undefined && csr.requestedId !== spiffeId) {
        throw new ProofRefused({ reason: "identity-not-allowed", detail: `the request asks for ${loggable(csr.requestedId, 200)}; the proof earns ${spiffeId}` })
      }
      const leaf = await issueLeaf(signingCa.intermediate, { spiffeId, publicKey: csr.publicKey, ...leafValidity(signingCa, options.leafLifetimeMs) })
      signed[request.proof.kind]++
      const notAfter = new Date(new X509Certificate(leaf).validTo).toISOString()
      options.log("identity-issued", { spiffeId, proof: request.proof.kind, byCertificate, notAfter })
      return { spiffeId, certificateChainPem: leaf + signingCa.intermediate.certificatePem, trustBundlePem: signingCa.trustBundlePem, notAfter }
    }

    const answer = (response: ServerResponse, status: number, body: unknown, contentType = "application/json", retryAfter = false) => {
      if (response.headersSent || response.destroyed) return
      const text = typeof body === "string" ? body : JSON.stringify(body)
      response.writeHead(status, { "content-type": contentType, "content-length": Buffer.byteLength(text), "cache-control": "no-store", ...(retryAfter ? { "retry-after": "1" } : {}) })
      response.end(text)
    }

    const refuse = (response: ServerResponse, remote: string | undefined, source: string, error: unknown) => {
      const refusal = error instanceof ProofRefused ? error : new ProofRefused({ reason: "bad-request", detail: `unexpected: ${loggable(error instanceof Error ? error.message : String(error))}` })
      refused[refusal.reason]++
      const busy = refusal.reason === "too-many-requests" || refusal.reason === "overloaded"
      const admitted = refusalLines[refusal.reason].admit()
      if (admitted !== undefined) options.log("identity-refused", { reason: refusal.reason, detail: refusal.detail, remote, source, ...admitted })
      answer(response, statusOf[refusal.reason], { error: refusal.reason, message: refusal.detail }, "application/json", busy)
    }

    /** Logs a connection closed at accept: its address (`remote`) and the source its limits count it under. */
    const connectionRefused = (limit: "total" | "per_source" | "handshake_rate", remote: string | undefined) => {
      const admitted = connectionLines[limit].admit()
      if (admitted === undefined) return
      const detail = limit === "total"
        ? `all ${options.maxConnections} connections are taken`
        : limit === "per_source"
        ? `this source's share of connections (${options.maxConnectionsPerSource}) is taken`
        : `this source's TLS handshakes are past ${options.handshakeRatePerSource}/s, burst ${options.handshakeBurstPerSource}`
      options.log("identity-connection-refused", { limit, detail, remote, source: remote === undefined ? undefined : sourceOf(remote), ...admitted })
    }

    const joinTokenReloadsText = (): Array<string> => {
      const reloads = options.joinTokenReloads?.()
      if (reloads === undefined) return []
      return [
        "# HELP iip_mesh_issuer_join_tokens_reloads_total Re-reads of the join-token file: ok, or invalid (the last good tokens stay in force).",
        "# TYPE iip_mesh_issuer_join_tokens_reloads_total counter",
        `iip_mesh_issuer_join_tokens_reloads_total{result="ok"} ${reloads.ok}`,
        `iip_mesh_issuer_join_tokens_reloads_total{result="invalid"} ${reloads.invalid}`
      ]
    }

    const metricsText = () =>
      [
        "# HELP iip_mesh_issuer_signed_total Leaves signed, by proof kind.",
        "# TYPE iip_mesh_issuer_signed_total counter",
        ...proofKinds.map((kind) => `iip_mesh_issuer_signed_total{proof="${kind}"} ${signed[kind]}`),
        "# HELP iip_mesh_issuer_refused_total Certificate requests refused, by reason.",
        "# TYPE iip_mesh_issuer_refused_total counter",
        ...refusalReasons.map((reason) => `iip_mesh_issuer_refused_total{reason="${reason}"} ${refused[reason]}`),
        "# HELP iip_mesh_issuer_signings_in_flight Certificate requests being signed now.",
        "# TYPE iip_mesh_issuer_signings_in_flight gauge",
        `iip_mesh_issuer_signings_in_flight ${shares.inFlight}`,
        "# HELP iip_mesh_issuer_abandoned_total Signings given up because their client left during the TokenReview (the review aborted, the slot given back).",
        "# TYPE iip_mesh_issuer_abandoned_total counter",
        `iip_mesh_issuer_abandoned_total ${abandoned}`,
        "# HELP iip_mesh_issuer_tls_handshakes_total TLS handshakes completed (each costs the issuer a key exchange and a signature).",
        "# TYPE iip_mesh_issuer_tls_handshakes_total counter",
        `iip_mesh_issuer_tls_handshakes_total ${handshakes}`,
        "# HELP iip_mesh_issuer_connections Connections open now, TLS handshakes in progress included.",
        "# TYPE iip_mesh_issuer_connections gauge",
        `iip_mesh_issuer_connections ${shares.connections}`,
        "# HELP iip_mesh_issuer_connections_refused_total Connections closed at accept: past --max-connections in all, past --max-connections-per-source from one source (an IPv4 address, an IPv6 prefix), or past its --handshake-rate-per-source.",
        "# TYPE iip_mesh_issuer_connections_refused_total counter",
        `iip_mesh_issuer_connections_refused_total{limit="total"} ${shares.connectionsRefused.total}`,
        `iip_mesh_issuer_connections_refused_total{limit="per_source"} ${shares.connectionsRefused.per_source}`,
        `iip_mesh_issuer_connections_refused_total{limit="handshake_rate"} ${handshakeRate.refused}`,
        "# HELP iip_mesh_issuer_handshake_rate_sources Sources (IPv4 addresses, IPv6 prefixes) whose TLS handshake bucket is tracked now (not full again yet).",
        "# TYPE iip_mesh_issuer_handshake_rate_sources gauge",
        `iip_mesh_issuer_handshake_rate_sources ${handshakeRate.tracked}`,
        ...joinTokenReloadsText(),
        ""
      ].join("\n")

    // A connection's client certificate was verified against the bundle of its handshake: kept
    // alive across a replacement of the CA, it would still count a certificate whose root the
    // replacement dropped, and renew it into the new CA. So a certificate counts only on a
    // connection verified under the CA now; one whose handshake may have begun before the
    // replacement (it is bounded by handshakeTimeout) counts none: a sidecar retries anew.
    let caGeneration = 0
    let caReplacedAt = -Infinity
    const verifiedUnder = new WeakMap<TLSSocket, number>()
    // A signing slot is the peer's until its signing ends, and a TokenReview may take up to its
    // timeout: a peer that sends and leaves would hold its share that long for nothing. So a
    // connection's signings are given up when it closes (one signal a connection, made at its first).
    const departures = new WeakMap<TLSSocket, AbortSignal>()
    const departureOf = (socket: TLSSocket): AbortSignal => {
      const known = departures.get(socket)
      if (known !== undefined) return known
      const controller = new AbortController()
      if (socket.destroyed) controller.abort()
      else socket.once("close", () => controller.abort())
      departures.set(socket, controller.signal)
      return controller.signal
    }
    const serving = yield* Effect.promise(() => servingCredentials(ca, options))
    // The TLS handshake is bounded like the request that follows it.
    // node checks the request and header timeouts every connectionsCheckingInterval (30 s by
    // default): a stalled client would hold its connection three times the bound, so every second.
    // A client certificate is asked for (a renewing sidecar presents its own) but never required:
    // a sidecar joining has none, and one that does not verify earns nothing by itself.
    const server = https.createServer({ ...serving, requestCert: true, rejectUnauthorized: false, handshakeTimeout: options.requestTimeoutMs, connectionsCheckingInterval: 1_000 }, (request, response) => {
      const remote = request.socket.remoteAddress
      const path = (request.url ?? "").split("?")[0]
      if (request.method === "GET" && path === "/health") return answer(response, 200, "ok\n", "text/plain")
      if (request.method === "GET" && path === "/metrics") return answer(response, 200, metricsText(), "text/plain; version=0.0.4")
      if (request.method === "GET" && path === "/v1/bundle") return answer(response, 200, { trustBundlePem: ca.trustBundlePem })
      if (path !== "/v1/sign") return answer(response, 404, { error: "not-found", message: "POST /v1/sign" })
      if (request.method !== "POST") return answer(response, 405, { error: "method-not-allowed", message: "POST /v1/sign" })
      // Read now, while the connection is open: a client may leave once its body is sent, and a
      // closed TLSSocket has no peer certificate left to read.
      const socket = request.socket as TLSSocket
      const renewing = verifiedUnder.get(socket) === caGeneration ? presentedService(socket, options.trustDomain, Date.now()) : undefined
      // A slot is taken once the body is in: a client that sends its body slowly (or never) holds
      // a connection, bounded by the connection limits and the request timeout, never a signing
      // slot; one that leaves while signed gives its slot back (departureOf).
      const source = remote === undefined ? "unknown" : sourceOf(remote)
      let departure: AbortSignal | undefined
      readBody(request, options.maxRequestBytes)
        .then((body) => {
          const refusal = shares.take(socket, source)
          if (refusal !== undefined) throw refusal
          departure = departureOf(socket)
          return sign(body, renewing, departure).finally(() => shares.release(socket, source))
        })
        .then(
          (signedResponse) => answer(response, 200, signedResponse),
          // Aborted because the client left: no one to answer, and not the API server's refusal.
          (error) => (departure?.aborted === true && error instanceof ProofRefused && error.reason === "token-review-unavailable" ? void abandoned++ : refuse(response, remote, source, error))
        )
    })
    // Before the HTTP layer takes the connection, so its first request finds the tag.
    server.prependListener("secureConnection", (socket: TLSSocket) => {
      handshakes++
      verifiedUnder.set(socket, Date.now() - caReplacedAt <= options.requestTimeoutMs ? -1 : caGeneration)
    })
    server.requestTimeout = options.requestTimeoutMs
    server.headersTimeout = Math.min(options.requestTimeoutMs, 60_000)
    server.keepAliveTimeout = 5_000
    server.maxConnections = options.maxConnections
    server.on("tlsClientError", () => {})
    /** Closes a connection refused at accept (counted and logged, by `limit`, unless its peer had already gone); false. */
    const closeAtAccept = (socket: net.Socket, remote?: string, limit?: "per_source" | "handshake_rate"): false => {
      socket.destroy()
      if (limit !== undefined) connectionRefused(limit, remote)
      return false
    }
    /** Whether a connection just accepted may go on to its TLS handshake; one that may not is closed. */
    const admit = (socket: net.Socket): boolean => {
      const remote = socket.remoteAddress
      // No address: the peer is already gone.
      if (remote === undefined) return closeAtAccept(socket)
      const source = sourceOf(remote)
      // The rate first: a connection it refuses never holds a place in the shares.
      if (handshakeRate.take(source) !== "admitted") return closeAtAccept(socket, remote, "handshake_rate")
      if (!shares.admit(source)) return closeAtAccept(socket, remote, "per_source")
      socket.once("close", () => shares.closed(source))
      return true
    }
    // At the TCP accept, before any TLS work (its CPU and its place are what a flood takes): node's
    // own connection listener, which wraps the socket in a TLSSocket (an SSL object made, even for a
    // socket already closed), runs only for a connection admitted. Measured: closing a connection
    // costs ~42 us, a TLSSocket made on it ~83 us more.
    const startTls = server.listeners("connection") as Array<(socket: net.Socket) => void>
    server.removeAllListeners("connection")
    server.on("connection", (socket: net.Socket) => {
      if (admit(socket)) for (const listener of startTls) listener.call(server, socket)
    })
    server.on("drop", (dropped?: { readonly remoteAddress?: string }) => {
      shares.connectionsRefused.total++
      connectionRefused("total", dropped?.remoteAddress)
    })
    const bound = yield* Effect.acquireRelease(listenTls(server, options.host, options.port), () =>
      Effect.callback<void>((resume) => {
        server.close(() => resume(Effect.void))
        server.closeAllConnections()
      }))
    // The serving leaf is renewed at half its life; new connections get the new one.
    yield* Effect.forkScoped(
      Effect.forever(
        Effect.sleep(options.leafLifetimeMs / 2).pipe(
          Effect.andThen(Effect.promise(() => servingCredentials(ca, options))),
          Effect.tap((next) => Effect.sync(() => server.setSecureContext(next)))
        )
      )
    )
    // Tokens already ended earn renewals only: a file older than its TTL shows here, not at the first refused join.
    const startedAt = clock.currentTimeMillisUnsafe()
    const joinTokens = options.joinTokens()
    const joinTokensExpired = joinTokens.filter((token) => token.expiresAt <= startedAt).length
    options.log("identity-issuer-ready", { address: `${bound.host}:${bound.port}`, trustDomain: options.trustDomain, kubernetes: options.tokenReview !== undefined, joinTokens: joinTokens.length, joinTokensExpired })
    const replaceCa = async (next: IssuingCa): Promise<void> => {
      const nextServing = await servingCredentials(next, options)
      ca = next
      server.setSecureContext(nextServing)
      caGeneration++
      caReplacedAt = Date.now()
      options.log("identity-ca-replaced", { intermediate: new X509Certificate(next.intermediate.certificatePem).subject, roots: certificatesOfPem(next.trustBundlePem).length })
    }
    return { ...bound, signed: () => ({ ...signed }), refused: () => ({ ...refused }), replaceCa }
  })
