// Certificate requests (PKCS#10): the sidecar's identity client builds one over its in-memory key
// pair; the issuer reads one, checks its signature (proof that the sender holds the private key)
// and the identity it asks for, before signing a leaf for its public key. Only ECDSA P-256 keys are
// taken, the one kind the mesh uses, so the issuer never parses more than it needs.
import "reflect-metadata"
import * as x509 from "@peculiar/x509"
import type { webcrypto } from "node:crypto"
import * as Data from "effect/Data"
import "./certificates.ts"

/** Why a certificate request was refused; `reason` is safe to log and to return to the sender. */
export class RequestMalformed extends Data.TaggedError("RequestMalformed")<{ readonly reason: string }> {
  override get message(): string {
    return this.reason
  }
}

/** PEM of a CSR is a few hundred bytes; anything near this is not one of ours. */
export const maxRequestPemBytes = 8 * 1024

const signingAlgorithm = { name: "ECDSA", hash: "SHA-256" } as const

/** A CSR for `keys`, naming `spiffeId` as its one URI SAN when the sender knows the identity it should get. */
export const createCertificateRequest = async (keys: webcrypto.CryptoKeyPair, spiffeId: string | undefined): Promise<string> => {
  const request = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm,
    extensions: spiffeId === undefined ? [] : [new x509.SubjectAlternativeNameExtension([{ type: "url", value: spiffeId }])]
  })
  return request.toString("pem") + "\n"
}

export interface ReadRequest {
  readonly publicKey: x509.PublicKey
  /** The identity the request names (its one URI SAN), or undefined when it names none. */
  readonly requestedId: string | undefined
}

/**
 * Parses and verifies a CSR: PEM within bounds, ECDSA P-256 key, a valid self-signature (proof of
 * possession), and at most one subject alternative name, a URI. Everything else is refused.
 */
export const readCertificateRequest = async (pem: string): Promise<ReadRequest> => {
  if (pem.length > maxRequestPemBytes) throw new RequestMalformed({ reason: `certificate request larger than ${maxRequestPemBytes} bytes` })
  if (!/^\s*-----BEGIN CERTIFICATE REQUEST-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE REQUEST-----\s*$/.test(pem)) {
    throw new RequestMalformed({ reason: "certificate request is not one PEM CERTIFICATE REQUEST block" })
  }
  let request: x509.Pkcs10CertificateRequest
  let algorithm: { name?: string; namedCurve?: string }
  let extensions: ReadonlyArray<x509.Extension>
  try {
    request = new x509.Pkcs10CertificateRequest(pem)
    // The key's parameters and the extensions are parsed on first use: their errors are the request's.
    algorithm = request.publicKey.algorithm
    extensions = request.extensions
  } catch {
    throw new RequestMalformed({ reason: "certificate request does not parse as PKCS#10" })
  }
  if (algorithm.name !== "ECDSA" || algorithm.namedCurve !== "P-256") {
    throw new RequestMalformed({ reason: "certificate request key is not ECDSA P-256" })
  }
  let verified = false
  try {
    verified = await request.verify()
  } catch {
    verified = false
  }
  if (!verified) throw new RequestMalformed({ reason: "certificate request signature does not verify (no proof of possession)" })
  const uris: Array<string> = []
  for (const extension of extensions) {
    if (!(extension instanceof x509.SubjectAlternativeNameExtension)) {
      throw new RequestMalformed({ reason: `certificate request carries an extension the issuer does not take (${extension.type})` })
    }
    for (const name of extension.names.items) {
      if (name.type !== "url") throw new RequestMalformed({ reason: `certificate request names a ${name.type}; only one URI (a SPIFFE ID) is taken` })
      uris.push(name.value)
    }
  }
  if (uris.length > 1) throw new RequestMalformed({ reason: "certificate request names more than one identity" })
  return { publicKey: request.publicKey, requestedId: uris[0] }
}
