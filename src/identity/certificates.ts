// Building the mesh's certificates: roots, intermediates and workload leaves (X.509-SVIDs), with
// @peculiar/x509 over WebCrypto. Used by `iip-mesh ca init`, by the issuer when it signs a
// sidecar's request, and by tests that need a foreign, expired or mis-named certificate. Keys are
// ECDSA P-256: small certificates and cheap TLS 1.3 handshakes. Nothing here touches the disk.
import "reflect-metadata"
import * as x509 from "@peculiar/x509"
import { randomBytes, webcrypto } from "node:crypto"

type CryptoKey = webcrypto.CryptoKey
type CryptoKeyPair = webcrypto.CryptoKeyPair
import * as Data from "effect/Data"
import { parseSpiffeId } from "./spiffe.ts"

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0])

export class CertificateBuildError extends Data.TaggedError("CertificateBuildError")<{ readonly reason: string }> {
  override get message(): string {
    return this.reason
  }
}

const keyAlgorithm = { name: "ECDSA", namedCurve: "P-256" } as const
const signingAlgorithm = { name: "ECDSA", hash: "SHA-256" } as const

/** A certificate and the private key it certifies, both PEM (the key PKCS#8). */
export interface CertifiedKey {
  readonly certificatePem: string
  readonly privateKeyPem: string
}

export interface KeyPair {
  readonly keys: CryptoKeyPair
  readonly privateKeyPem: string
}

const pem = (label: string, der: ArrayBuffer): string =>
  `-----BEGIN ${label}-----\n${Buffer.from(der).toString("base64").replace(/.{1,64}/g, "$&\n")}-----END ${label}-----\n`

/** A fresh ECDSA P-256 key pair, in memory only. */
export const generateKeyPair = async (): Promise<KeyPair> => {
  const keys = await webcrypto.subtle.generateKey(keyAlgorithm, true, ["sign", "verify"])
  return { keys, privateKeyPem: pem("PRIVATE KEY", await webcrypto.subtle.exportKey("pkcs8", keys.privateKey)) }
}

const importPrivateKey = async (privateKeyPem: string): Promise<CryptoKey> => {
  const body = privateKeyPem.replace(/-----[A-Z ]+-----/g, "").replace(/\s+/g, "")
  try {
    return await webcrypto.subtle.importKey("pkcs8", Buffer.from(body, "base64"), keyAlgorithm, false, ["sign"])
  } catch (cause) {
    throw new CertificateBuildError({ reason: `issuer key is not an ECDSA P-256 PKCS#8 key: ${String(cause)}` })
  }
}

/** A positive 128-bit serial number, as RFC 5280 asks (at most 20 octets, unpredictable). */
const serialNumber = (): string => {
  const bytes = randomBytes(16)
  bytes[0] = bytes[0]! & 0x7f
  return bytes.toString("hex")
}

export interface Validity {
  /** Start of validity; defaults to now minus a minute of clock-skew allowance. */
  readonly notBefore?: Date
  readonly lifetimeMs: number
}

const validity = (options: Validity): { notBefore: Date; notAfter: Date } => {
  const notBefore = options.notBefore ?? new Date(Date.now() - 60_000)
  return { notBefore, notAfter: new Date(notBefore.getTime() + options.lifetimeMs) }
}

/** What names a CA: its common name and, when given, its trust domain (`spiffe://<td>` as URI SAN, as the X.509-SVID spec suggests for signing certificates). */
export interface CaName {
  readonly commonName: string
  readonly trustDomain?: string
}

const trustDomainName = (options: CaName): Array<x509.Extension> =>
  options.trustDomain === undefined ? [] : [new x509.SubjectAlternativeNameExtension([{ type: "url", value: `spiffe://${options.trustDomain}` }])]

/** How long a workload leaf lives unless the issuer is told otherwise. */
export const defaultLeafLifetimeMs = 24 * 3_600_000

/** Valid from a minute ago (clock skew between hosts) until `lifetimeMs` from now: what the issuer signs. */
export const validFromNow = (lifetimeMs: number): Validity => ({ notBefore: new Date(Date.now() - 60_000), lifetimeMs: lifetimeMs + 60_000 })

/** A self-signed root CA (offline: only `ca init` and rotations use its key). */
export const createRootCa = async (options: Validity & CaName): Promise<CertifiedKey> => {
  const pair = await generateKeyPair()
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: [{ CN: [options.commonName] }],
    ...validity(options),
    keys: pair.keys,
    signingAlgorithm,
    extensions: [
      new x509.BasicConstraintsExtension(true, 1, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(pair.keys.publicKey),
      ...trustDomainName(options)
    ]
  })
  return { certificatePem: certificate.toString("pem") + "\n", privateKeyPem: pair.privateKeyPem }
}

const issuerOf = async (issuer: CertifiedKey): Promise<{ certificate: x509.X509Certificate; signingKey: CryptoKey }> => {
  try {
    return { certificate: new x509.X509Certificate(issuer.certificatePem), signingKey: await importPrivateKey(issuer.privateKeyPem) }
  } catch (cause) {
    if (cause instanceof CertificateBuildError) throw cause
    throw new CertificateBuildError({ reason: `issuer certificate does not parse: ${String(cause)}` })
  }
}

/** An intermediate CA under `root`: what the issuer holds and signs leaves with. */
export const createIntermediateCa = async (
  root: CertifiedKey,
  options: Validity & CaName
): Promise<CertifiedKey> => {
  const parent = await issuerOf(root)
  const pair = await generateKeyPair()
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: [{ CN: [options.commonName] }],
    issuer: parent.certificate.subject,
    ...validity(options),
    publicKey: pair.keys.publicKey,
    signingKey: parent.signingKey,
    signingAlgorithm,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(pair.keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(parent.certificate),
      ...trustDomainName(options)
    ]
  })
  return { certificatePem: certificate.toString("pem") + "\n", privateKeyPem: pair.privateKeyPem }
}

/**
 * A workload leaf (X.509-SVID) for `spiffeId`, signed by `issuer`: the SPIFFE ID as its only URI
 * SAN, not a CA, usable as TLS client and server. `publicKey` is the workload's own key (from its
 * certificate request); the issuer never sees the private half.
 */
export const issueLeaf = async (
  issuer: CertifiedKey,
  options: Validity & { readonly spiffeId: string; readonly publicKey: CryptoKey | x509.PublicKey }
): Promise<string> => {
  if (parseSpiffeId(options.spiffeId) === undefined) {
    throw new CertificateBuildError({ reason: `not a valid SPIFFE ID: ${JSON.stringify(options.spiffeId.slice(0, 200))}` })
  }
  const parent = await issuerOf(issuer)
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: [],
    issuer: parent.certificate.subject,
    ...validity(options),
    publicKey: options.publicKey,
    signingKey: parent.signingKey,
    signingAlgorithm,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: options.spiffeId }], true),
      await x509.AuthorityKeyIdentifierExtension.create(parent.certificate)
    ]
  })
  return certificate.toString("pem") + "\n"
}
