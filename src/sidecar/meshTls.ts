// Mutual TLS between sidecars, where the workload's credentials (src/identity) meet the IIP
// transport (src/iip/tls.ts): the inbound server's TLS options (a client certificate from the
// trust bundle, an identity in the trust domain; permissive mode also takes plain IIP), and per
// endpoint the client's (the server must present the SPIFFE ID discovery promised, or, when
// discovery names none, any identity of the trust domain). A renewal or a new bundle builds new
// contexts for new connections; established connections keep running on theirs. Every refusal is
// counted and logged with both identities; the bundle's roots (an expired one fails every peer
// under it) and when this sidecar's chain ends are gauges read at each scrape.
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import { X509Certificate } from "node:crypto"
import { join } from "node:path"
import * as tls from "node:tls"
import { type CredentialSource, makeCredentialHolder, type WorkloadCredentials } from "../identity/credentials.ts"
import { parseSpiffeId, spiffeIdOfCertificate } from "../identity/spiffe.ts"
import { chainProblem, chainUsableUntil, maxPemChars, rootValidities } from "../identity/trustBundle.ts"
import type { Log } from "../iip/log.ts"
import { loggable } from "../iip/redact.ts"
import { MAX_SECRET_FILE_BYTES, readSmallFile, readSmallText } from "../iip/smallFile.ts"
import type { IipServer } from "../iip/server.ts"
import { type ClientTlsOptions, MESH_ALPN, MESH_CIPHERSUITES, type ServerTlsOptions, type TlsCredentials, type TlsRefusal } from "../iip/tls.ts"
import type { MeshMetrics, TrustState } from "../telemetry/metrics.ts"

/** `--mtls`: on (TLS only), permissive (TLS, and plain IIP from peers not yet migrated), off (plain IIP). */
export type MtlsMode = "on" | "permissive" | "off"

/**
 * How an endpoint is reached: "mtls" (an iip-mesh sidecar), "tls" (a plain IIP server in the Go
 * reference's TLS mode: no client certificate; its certificate verified only against a given CA),
 * "plain" (TCP). Unset: mtls when this sidecar's mode is on, or permissive and discovery names the
 * endpoint's identity; plain otherwise.
 */
export type EndpointSecurity = "mtls" | "tls" | "plain"

export interface SecuredEndpoint {
  readonly host: string
  readonly port: number
  /** The SPIFFE ID the endpoint must present (from discovery). */
  readonly identity?: string | undefined
  readonly security?: EndpointSecurity | undefined
  /** For "tls": a PEM file of the CA(s) the server's certificate must chain to. */
  readonly ca?: string | undefined
}

export class MtlsUnavailable extends Data.TaggedError("MtlsUnavailable")<{ readonly message: string }> {}

export interface MeshTlsOptions {
  readonly mode: MtlsMode
  readonly credentials: CredentialSource | undefined
  readonly handshakeTimeoutMs: number
  readonly metrics: MeshMetrics
  readonly log: Log
}

const contextOf = (credentials: WorkloadCredentials): tls.SecureContext =>
  tls.createSecureContext({
    key: credentials.privateKeyPem,
    cert: credentials.certificateChainPem,
    ca: credentials.trustBundlePem,
    minVersion: "TLSv1.3",
    ciphers: MESH_CIPHERSUITES
  })

const tlsCredentialsOf = (credentials: WorkloadCredentials): TlsCredentials => ({
  key: credentials.privateKeyPem,
  cert: credentials.certificateChainPem,
  ca: credentials.trustBundlePem
})

const trustDomainOf = (credentials: WorkloadCredentials): string => parseSpiffeId(credentials.spiffeId)?.trustDomain ?? ""

/**
 * What a certificate names, for a log line: its SPIFFE ID, or its subject, which any peer writes
 * (a refused one too): escaped, so a bidi override or a line separator in it cannot forge or hide log lines.
 */
const describe = (certificate: X509Certificate | undefined): string =>
  certificate === undefined ? "none" : spiffeIdOfCertificate(certificate)?.text ?? `subject ${loggable(certificate.subject.replaceAll("\n", ", "))}`

export class MeshTls {
  readonly mode: MtlsMode
  private readonly options: MeshTlsOptions
  private readonly credentials: CredentialSource | undefined
  private clientContext: tls.SecureContext | undefined
  private domain = ""
  /** The bundle's roots and the chain's end, read once per generation for the identity gauges. */
  private trust: TrustState = { roots: [], usableUntil: 0 }
  /** Contexts of the reference-TLS endpoints, per CA file ("" for none): read once. */
  private readonly referenceContexts = new Map<string, tls.SecureContext>()
  private readonly servers = new Set<IipServer>()
  private readonly unsubscribe: () => void

  /** Fails when mTLS is asked for and there are no credentials to speak it with. */
  static make(options: MeshTlsOptions): MeshTls | MtlsUnavailable {
    if (options.mode !== "off" && options.credentials === undefined) {
      return new MtlsUnavailable({ message: `--mtls ${options.mode} needs workload credentials (an identity issuer, or --tls-credentials-dir for tests and benches)` })
    }
    return new MeshTls(options)
  }

  private constructor(options: MeshTlsOptions) {
    this.options = options
    this.mode = options.mode
    this.credentials = options.credentials
    // With mTLS off, credentials still serve the endpoints configured `security=mtls`.
    if (this.credentials === undefined) {
      this.unsubscribe = () => {}
      return
    }
    this.adopt(this.credentials.current())
    options.metrics.watchTrust(() => this.trust)
    this.unsubscribe = this.credentials.subscribe((next) => {
      this.adopt(next)
      this.options.log("mtls-credentials-renewed", { identity: next.spiffeId, notAfter: next.notAfter.toISOString() })
    })
  }

  /** The trust domain of this sidecar's identity: where peers that discovery names no identity for must be. */
  get trustDomain(): string {
    return this.domain
  }

  /** This sidecar's own identity (its certificate's SPIFFE ID), if it has credentials. */
  get ownIdentity(): string | undefined {
    return this.credentials?.current().spiffeId
  }

  /** This sidecar's own identity, for logs. */
  get identity(): string {
    return this.ownIdentity ?? "none"
  }

  close(): void {
    this.unsubscribe()
    this.servers.clear()
  }

  /** The inbound server's TLS options; undefined with mTLS off. */
  serverOptions(): ServerTlsOptions | undefined {
    if (this.mode === "off" || this.credentials === undefined) return undefined
    const { metrics, log } = this.options
    return {
      credentials: tlsCredentialsOf(this.credentials.current()),
      acceptPlain: this.mode === "permissive",
      requireClientCertificate: true,
      alpn: [MESH_ALPN],
      ciphers: MESH_CIPHERSUITES,
      handshakeTimeoutMs: this.options.handshakeTimeoutMs,
      identifyPeer: (certificate) => this.identifyClient(certificate),
      onHandshake: () => metrics.tlsHandshake("inbound", "ok"),
      onPlain: (remote) => {
        metrics.plainConnection("accepted")
        log("mtls-plain-peer-accepted", { remote, mode: this.mode, local: this.identity })
      },
      onRefused: (refusal, remote, peer) => {
        if (refusal.reason === "plain_refused") metrics.plainConnection("refused")
        metrics.tlsHandshake("inbound", refusal.reason)
        log("mtls-refused", { direction: "inbound", reason: refusal.reason, message: refusal.message, remote, local: this.identity, peer: describe(peer) })
      }
    }
  }

  /** Renewals reach `server` (for its new connections) from now on. */
  attach(server: IipServer): void {
    if (this.mode !== "off") this.servers.add(server)
  }

  /** The client TLS options of an endpoint; undefined: plain TCP. */
  clientOptions(endpoint: SecuredEndpoint): ClientTlsOptions | undefined {
    const security = endpoint.security ?? this.defaultSecurity(endpoint)
    if (security === "plain") return undefined
    if (security === "tls") return this.referenceOptions(endpoint)
    const { metrics, log } = this.options
    if (this.clientContext === undefined) {
      // Asked for (security=mtls) without credentials: the dial happens, and is refused for it, by name.
      this.clientContext = tls.createSecureContext({ minVersion: "TLSv1.3", ciphers: MESH_CIPHERSUITES })
      log("mtls-without-credentials", { endpoint: `${endpoint.host}:${endpoint.port}`, message: "an endpoint requires mTLS and this sidecar has no credentials: its peer will refuse it" })
    }
    const expected = endpoint.identity
    const address = `${endpoint.host}:${endpoint.port}`
    return {
      secureContext: () => this.clientContext!,
      alpn: [MESH_ALPN],
      requireAlpn: true,
      checkPeer: (certificate) => this.checkServer(certificate, expected),
      onHandshake: () => metrics.tlsHandshake("outbound", "ok"),
      onRefused: (refusal, peer) => {
        metrics.tlsHandshake("outbound", refusal.reason)
        log("mtls-refused", {
          direction: "outbound",
          endpoint: address,
          reason: refusal.reason,
          message: refusal.message,
          local: this.identity,
          peer: describe(peer),
          expected: expected ?? `any identity in ${this.trustDomain}`
        })
      }
    }
  }

  private defaultSecurity(endpoint: SecuredEndpoint): EndpointSecurity {
    if (this.mode === "on") return "mtls"
    if (this.mode === "permissive" && endpoint.identity !== undefined) return "mtls"
    return "plain"
  }

  private adopt(credentials: WorkloadCredentials): void {
    this.clientContext = contextOf(credentials)
    this.domain = trustDomainOf(credentials)
    this.trust = { roots: rootValidities(credentials.trustBundlePem), usableUntil: chainUsableUntil(credentials.certificateChainPem, credentials.trustBundlePem) }
    for (const server of this.servers) server.updateTlsCredentials(tlsCredentialsOf(credentials))
  }

  /** The server must be who discovery said, or (discovery naming no one) someone of the trust domain. */
  private checkServer(certificate: X509Certificate, expected: string | undefined): TlsRefusal | undefined {
    const id = spiffeIdOfCertificate(certificate)
    if (id === undefined) return { reason: "peer_identity", message: "peer certificate names no SPIFFE ID" }
    if (expected !== undefined) {
      return id.text === expected ? undefined : { reason: "peer_identity", message: `peer is ${id.text}, discovery promised ${expected}` }
    }
    return id.trustDomain === this.trustDomain ? undefined : { reason: "peer_identity", message: `peer ${id.text} is not in trust domain ${this.trustDomain}` }
  }

  private identifyClient(certificate: X509Certificate): string | TlsRefusal {
    const id = spiffeIdOfCertificate(certificate)
    if (id === undefined) return { reason: "peer_identity", message: "client certificate names no SPIFFE ID" }
    if (id.trustDomain !== this.trustDomain) return { reason: "peer_identity", message: `client ${id.text} is not in trust domain ${this.trustDomain}` }
    return id.text
  }

  /** The Go reference's TLS mode: no client certificate, no ALPN; the server verified only against a given CA. */
  private referenceOptions(endpoint: SecuredEndpoint): ClientTlsOptions {
    const ca = endpoint.ca ?? ""
    let context = this.referenceContexts.get(ca)
    if (context === undefined) {
      // An unreadable CA file is given as no certificate at all ([]): a falsy `ca` ("") makes node
      // trust its default roots, the system's, instead.
      context = tls.createSecureContext({ minVersion: "TLSv1.2", ...(ca === "" ? {} : { ca: this.readCa(ca) ?? [] }) })
      this.referenceContexts.set(ca, context)
      if (ca === "") this.options.log("tls-endpoint-unverified", { endpoint: `${endpoint.host}:${endpoint.port}`, message: "no CA given: the server's certificate is not verified, as the reference does" })
    }
    const fixed = context
    return {
      secureContext: () => fixed,
      alpn: [],
      verifyChain: ca !== "",
      onRefused: (refusal) => {
        this.options.metrics.tlsHandshake("outbound", refusal.reason)
        this.options.log("tls-refused", { direction: "outbound", endpoint: `${endpoint.host}:${endpoint.port}`, reason: refusal.reason, message: refusal.message })
      }
    }
  }

  /**
   * A CA file's PEM; one that cannot be read trusts nothing (every handshake then fails
   * peer_untrusted), said in the log. Read on the event loop while the sidecar serves (the first
   * dial of an endpoint naming it, from a reloaded endpoints file): so without blocking (a FIFO is
   * refused unread, not waited on for a writer) and at most maxPemChars bytes.
   */
  private readCa(path: string): string | undefined {
    try {
      const read = readSmallFile(path, maxPemChars, { followSymlink: true })
      if ("text" in read) return read.text
      this.options.log("tls-endpoint-ca-unreadable", { path, message: read.problem })
    } catch (error) {
      this.options.log("tls-endpoint-ca-unreadable", { path, message: error instanceof Error ? error.message : String(error) })
    }
    return undefined
  }
}

/** How far a credentials directory's chain may be not yet valid (its writer's clock ahead of ours) and still be taken. */
const CredentialsDirSkewMs = 5 * 60_000

/**
 * Fixed credentials from a directory, for tests and benches: `key.pem` (PKCS#8), `chain.pem` (the
 * leaf, then intermediates), `bundle.pem` (the roots). Read once, never renewed; the identity is
 * the leaf's SPIFFE ID. Read as the issuer's answers are checked: a FIFO or device is refused
 * unread (a FIFO without a writer blocked the start, and the event loop, for good), a file past
 * the PEM or secret bound unread (a 100 MB bundle.pem took 5 s and was taken), and a chain that
 * is expired, not yet valid past a clock skew, or leads to no root of the bundle is refused at
 * start, not by every peer's handshake.
 */
export const readCredentialsDir = (directory: string): Effect.Effect<CredentialSource, MtlsUnavailable> =>
  Effect.try({
    try: () => {
      const read = (name: string, maxBytes: number) => readSmallText(join(directory, name), maxBytes)
      const chain = read("chain.pem", maxPemChars)
      const bundle = read("bundle.pem", maxPemChars)
      const now = Date.now()
      const problem = chainProblem(chain, bundle, new Date(now))
      // Not yet valid only by a clock skew (valid a few minutes on): taken, as peers whose clocks
      // are ahead take it now and the rest soon; the files are never read again, so a refusal
      // here would end a start that waiting a minute would have made good.
      if (problem !== undefined && chainProblem(chain, bundle, new Date(now + CredentialsDirSkewMs)) !== undefined) throw new Error(`chain.pem: ${problem}`)
      const leaf = new X509Certificate(chain)
      const id = spiffeIdOfCertificate(leaf)
      if (id === undefined) throw new Error("the leaf of chain.pem names no SPIFFE ID")
      return makeCredentialHolder({ spiffeId: id.text, privateKeyPem: read("key.pem", MAX_SECRET_FILE_BYTES), certificateChainPem: chain, trustBundlePem: bundle, notAfter: new Date(leaf.validTo) })
    },
    catch: (error) => new MtlsUnavailable({ message: `tlsCredentialsDir ${directory}: ${error instanceof Error ? error.message : String(error)}` })
  })
