// TLS under IIP (PROTOCOL.md §19): what the client and the server take to run their connections
// inside TLS, and the names of the ways a handshake fails. Generic node:tls only: the sidecar
// (src/sidecar/meshTls.ts) turns workload credentials and discovery's expected identities into
// these options; this layer knows nothing of SPIFFE. A mesh connection is TLS 1.3 with a client
// certificate and ALPN "iip-mesh/1"; the Go reference's TLS mode is TLS without client
// certificates and without ALPN, the IIP bytes inside unchanged.
import { X509Certificate } from "node:crypto"
import { isIP, type LookupFunction } from "node:net"
import type * as tls from "node:tls"
import { checkServerIdentity, connect } from "node:tls"
import { Status, SystemChannel } from "../protocol/constants.ts"
import { clampErrorMessage, safeErrorCode } from "../protocol/errorText.ts"
import { MeshPath } from "../protocol/mesh.ts"
import { encodePacket } from "../protocol/packet.ts"
import { parseJsonObject } from "../protocol/systemMessages.ts"

/** The ALPN protocol of IIP between iip-mesh sidecars. */
export const MESH_ALPN = "iip-mesh/1"

/**
 * The cipher suites of a mesh connection (node:tls `ciphers`; TLS 1.3 only, so no TLS 1.2 list):
 * the three TLS 1.3 suites, as OpenSSL's default, but AES-128-GCM first where OpenSSL puts
 * AES-256-GCM (a node TLS server picks by its own order: mesh servers and clients use this one), as
 * Go's and BoringSSL's TLS 1.3 do. Less work per byte: 10 AES rounds to 14 (`openssl speed -evp`
 * here: 1.84 against 1.72 GB/s at 1 KiB); on a CPU with VAES, as the bench machine's, too little to
 * show in CPU per request, where a record's fixed cost in node's TLS layer dominates.
 */
export const MESH_CIPHERSUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

/** The first byte of a TLS connection (a handshake record); no IIP packet starts with it (status 22 is invalid, §3). */
export const TLS_HANDSHAKE_RECORD = 0x16

/**
 * Why a TLS connection was refused, as a token for `x-iip-mesh-error` reasons, metric labels and
 * logs. The peer_* reasons are this side's verdict on the peer's certificate; tls_refused is the
 * peer's verdict on ours (a TLS alert); plain_refused a peer that did not speak TLS where it must.
 */
export type TlsRefusalReason =
  | "peer_untrusted"
  | "peer_expired"
  | "peer_identity"
  | "peer_no_certificate"
  | "tls_refused"
  | "tls_handshake"
  | "plain_refused"

export interface TlsRefusal {
  readonly reason: TlsRefusalReason
  readonly message: string
}

/** PEM key, certificate chain (leaf first) and trusted roots: what a secure context is made of. */
export interface TlsCredentials {
  readonly key: string
  readonly cert: string
  /** Roots the peer's chain must reach; unset: the peer is not verified (the reference's mode). */
  readonly ca?: string
}

/** What a client connection runs over TLS with. */
export interface ClientTlsOptions {
  /** The context of the next connection (read at every dial, so a renewal applies to new connections only). */
  readonly secureContext: () => tls.SecureContext
  /** ALPN protocols offered; the server must pick the first when `requireAlpn`. Default [MESH_ALPN]. */
  readonly alpn?: ReadonlyArray<string>
  /** Refuse a server that does not agree on the ALPN protocol (mesh peers). Default false. */
  readonly requireAlpn?: boolean
  /** Verify the server's chain against the context's roots (default true); false: the reference's no-verify mode. */
  readonly verifyChain?: boolean
  /** SNI and, with no `checkPeer`, the name the certificate must carry; default: the host when it is a name. */
  readonly servername?: string
  /** After the chain verified: a refusal for a peer that is not who it should be (its SPIFFE ID), or undefined. */
  readonly checkPeer?: (certificate: X509Certificate) => TlsRefusal | undefined
  /** Told of every refusal with the certificate the peer showed, if any (for logs and metrics). */
  readonly onRefused?: (refusal: TlsRefusal, peer: X509Certificate | undefined) => void
  /** Told of every completed handshake (for the handshakes-per-second figure). */
  readonly onHandshake?: () => void
}

/** What a server runs its connections over TLS with. */
export interface ServerTlsOptions {
  readonly credentials: TlsCredentials
  /** Also take plain IIP connections, told apart by their first byte (permissive mode). Default false. */
  readonly acceptPlain?: boolean
  /** Ask for and verify a client certificate against `credentials.ca` (mesh); false: the reference's mode, none asked. */
  readonly requireClientCertificate: boolean
  /** ALPN protocols this side agrees to (default [MESH_ALPN]; a client offering none is still served). */
  readonly alpn?: ReadonlyArray<string>
  /** Lowest TLS version (default "TLSv1.3"; the reference's Go clients may need "TLSv1.2"). */
  readonly minVersion?: tls.SecureVersion
  /** Cipher suites in this server's order of preference, by which it picks (node:tls `ciphers`, `honorCipherOrder`); default node's. */
  readonly ciphers?: string
  /** A verified client's identity (its SPIFFE ID) for RequestContext.peerIdentity, or why it is refused. */
  readonly identifyPeer?: (certificate: X509Certificate) => string | TlsRefusal
  /** From accept to a finished handshake, the first byte included (default 10 s). */
  readonly handshakeTimeoutMs?: number
  /** Told of each refused connection (a failed handshake, a refused identity, a plain peer when plain is not accepted). */
  readonly onRefused?: (refusal: TlsRefusal, remote: string, peer: X509Certificate | undefined) => void
  /** Told of each accepted TLS connection and its peer's identity. */
  readonly onHandshake?: (identity: string | undefined) => void
  /** Told of each plain IIP connection taken in permissive mode. */
  readonly onPlain?: (remote: string) => void
}

const expired = new Set(["CERT_HAS_EXPIRED", "CERT_NOT_YET_VALID"])
const untrusted = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_SIGNATURE_FAILURE",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
  "INVALID_CA"
])

/** What a failed TLS handshake means, from the error node:tls gave (this side's verification, or the peer's alert). */
export const classifyTlsError = (error: NodeJS.ErrnoException): TlsRefusal => {
  const code = error.code ?? ""
  const message = error.message.slice(0, 300)
  if (expired.has(code)) return { reason: "peer_expired", message: `peer certificate expired or not yet valid (${code})` }
  if (untrusted.has(code)) return { reason: "peer_untrusted", message: `peer certificate does not chain to the trust bundle (${code})` }
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID") return { reason: "peer_identity", message }
  if (code === "ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE") return { reason: "peer_no_certificate", message: "peer presented no certificate" }
  // An alert from the peer: it refused this side's certificate (or its lack of one).
  const alert = /^ERR_SSL_(?:SSLV3|TLSV1|TLSV13)_ALERT_(.+)$/.exec(code)
  if (alert !== null) return { reason: "tls_refused", message: `peer refused the handshake: ${alert[1]!.toLowerCase().replaceAll("_", " ")}` }
  return { reason: "tls_handshake", message: `TLS handshake failed: ${code === "" ? message : `${code}: ${message}`}` }
}

const peerCertificateOf = (socket: tls.TLSSocket): X509Certificate | undefined => {
  try {
    return socket.getPeerX509Certificate()
  } catch {
    return undefined
  }
}

/**
 * Dials `host:port` over TLS: `opened` gets the socket once the handshake verified the server,
 * `fail` the refusal otherwise (a TCP failure, ECONNREFUSED say, comes without one). The caller's
 * connect timer bounds the handshake and calls `abandon`. `refusedAfterHandshake` tells why a
 * connection that was up failed before its first answer: in TLS 1.3 the server judges the client's
 * certificate after the client's side of the handshake is done.
 */
export const dialTls = (
  host: string,
  port: number,
  options: ClientTlsOptions,
  opened: (socket: tls.TLSSocket) => void,
  fail: (reason: string, refusal?: TlsRefusal) => void,
  /** Resolves a host name (the dial guard's, src/iip/dialGuard.ts); absent: dns.lookup. */
  lookup?: { readonly lookup: LookupFunction }
): { readonly abandon: () => void; readonly refusedAfterHandshake: () => TlsRefusal | undefined } => {
  const verify = options.verifyChain !== false
  const alpn = options.alpn ?? [MESH_ALPN]
  const servername = options.servername ?? (isIP(host) === 0 ? host : undefined)
  let identityRefusal: TlsRefusal | undefined
  let tcpUp = false
  let secure = false
  let lateError: NodeJS.ErrnoException | undefined
  const socket = connect({
    host,
    port,
    ...lookup,
    secureContext: options.secureContext(),
    ALPNProtocols: [...alpn],
    // The verdict is taken at secureConnect below, where the certificate the peer showed can still
    // be read for the log; nothing is sent to a peer that failed it.
    rejectUnauthorized: false,
    ...(servername === undefined ? {} : { servername }),
    checkServerIdentity: (name, certificate) => {
      if (!verify) return undefined
      if (options.checkPeer === undefined) return checkServerIdentity(servername ?? name, certificate)
      identityRefusal = options.checkPeer(new X509Certificate(certificate.raw))
      return identityRefusal === undefined ? undefined : new Error(identityRefusal.message)
    }
  })
  socket.setNoDelay(true)
  const refuse = (refusal: TlsRefusal) => {
    options.onRefused?.(refusal, peerCertificateOf(socket))
    fail(refusal.message, refusal)
  }
  socket.once("connect", () => (tcpUp = true))
  // Kept for the life of the socket, ahead of the connection's own listener: the error that ends a
  // connection right after its handshake is the server's alert about our certificate.
  socket.on("error", (error: NodeJS.ErrnoException) => {
    if (secure) {
      lateError ??= error
      return
    }
    if (!tcpUp) return fail(error.code ?? error.message)
    refuse(classifyTlsError(error))
  })
  socket.once("secureConnect", () => {
    secure = true
    if (verify && !socket.authorized) {
      // node:tls keeps only the error's code (or message) as authorizationError.
      const code = String(socket.authorizationError)
      return refuse(identityRefusal ?? classifyTlsError({ name: "Error", message: code, code }))
    }
    if (options.requireAlpn === true && socket.alpnProtocol !== alpn[0]) {
      return refuse({ reason: "tls_handshake", message: `peer did not agree on ALPN ${alpn[0]} (got ${String(socket.alpnProtocol)})` })
    }
    options.onHandshake?.()
    opened(socket)
  })
  return {
    abandon: () => socket.destroy(),
    refusedAfterHandshake: () => {
      if (lateError === undefined) return undefined
      const refusal = classifyTlsError(lateError)
      if (refusal.reason !== "tls_refused") return undefined
      options.onRefused?.(refusal, peerCertificateOf(socket))
      return refusal
    }
  }
}

/**
 * A mesh server that refuses a client says why in-band (§19): in TLS 1.3 the client is done with
 * its handshake before the server judges its certificate, so it has sent its hello; the server
 * answers that hello (status 5, channel 0, /sys/hello) with this packet and closes. A plain IIP
 * peer refused by a server that requires TLS gets the same answer, in plain IIP. No request of the
 * client is read. The body is an in-band error (§6) with the refusal's reason.
 */
export const encodeTlsRefusal = (refusal: TlsRefusal): Buffer =>
  encodePacket(Status.ResponseWhole, MeshPath.hello, SystemChannel, Buffer.from(JSON.stringify({ code: -1, message: refusal.message, tls_refused: refusal.reason })))

/** The refusal in a hello's answer, if it is one. */
export const decodeTlsRefusal = (data: Uint8Array): TlsRefusal | undefined => {
  const body = parseJsonObject(data)
  if (body === undefined || typeof body.tls_refused !== "string" || typeof body.message !== "string") return undefined
  const reason = safeErrorCode(body.tls_refused)
  return { reason: "tls_refused", message: `peer refused the connection: ${reason}: ${clampErrorMessage(body.message)}` }
}
