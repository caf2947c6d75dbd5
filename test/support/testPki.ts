// A small PKI for the mTLS tests and benches: a root and an intermediate made in memory, and
// workload credentials under them (good, expired, for another identity), or under a foreign root;
// and an IP-named server certificate like a Go reference server's in TLS mode.
import "reflect-metadata"
import * as x509 from "@peculiar/x509"
import { webcrypto, X509Certificate } from "node:crypto"
import { createIntermediateCa, createRootCa, generateKeyPair, issueLeaf, type CertifiedKey } from "../../src/identity/certificates.ts"
import type { WorkloadCredentials } from "../../src/identity/credentials.ts"

const day = 86_400_000

export interface TestPki {
  readonly root: CertifiedKey
  readonly intermediate: CertifiedKey
  /** Credentials for `spiffeId` under this PKI; `bundle` overrides the trust bundle (default: this root). */
  readonly credentials: (spiffeId: string, options?: { readonly notBefore?: Date; readonly lifetimeMs?: number; readonly bundle?: string }) => Promise<WorkloadCredentials>
}

export const makeTestPki = async (name = "test"): Promise<TestPki> => {
  const root = await createRootCa({ commonName: `${name} root`, lifetimeMs: 10 * day })
  const intermediate = await createIntermediateCa(root, { commonName: `${name} intermediate`, lifetimeMs: 5 * day })
  return {
    root,
    intermediate,
    credentials: async (spiffeId, options = {}) => {
      const pair = await generateKeyPair()
      const leaf = await issueLeaf(intermediate, {
        spiffeId,
        publicKey: pair.keys.publicKey,
        lifetimeMs: options.lifetimeMs ?? day,
        ...(options.notBefore === undefined ? {} : { notBefore: options.notBefore })
      })
      return {
        spiffeId,
        privateKeyPem: pair.privateKeyPem,
        certificateChainPem: leaf + intermediate.certificatePem,
        trustBundlePem: options.bundle ?? root.certificatePem,
        notAfter: new Date(new X509Certificate(leaf).validTo)
      }
    }
  }
}

/** Credentials whose leaf expired an hour ago (issued two hours ago for one hour). */
export const expiredCredentials = (pki: TestPki, spiffeId: string): Promise<WorkloadCredentials> =>
  pki.credentials(spiffeId, { notBefore: new Date(Date.now() - 2 * 3_600_000), lifetimeMs: 3_600_000 })

/**
 * A server certificate for an IP address (an IP SAN, no SPIFFE ID), as a Go reference server in TLS
 * mode would have, under this PKI's intermediate; key and chain PEM.
 */
export const ipServerCertificate = async (pki: TestPki, ip: string): Promise<{ readonly key: string; readonly cert: string }> => {
  const pair = await generateKeyPair()
  const issuer = new x509.X509Certificate(pki.intermediate.certificatePem)
  const body = pki.intermediate.privateKeyPem.replace(/-----[A-Z ]+-----/g, "").replace(/\s+/g, "")
  const signingKey = await webcrypto.subtle.importKey("pkcs8", Buffer.from(body, "base64"), { name: "ECDSA", namedCurve: "P-256" }, false, ["sign"])
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: "01",
    subject: "CN=reference server",
    issuer: issuer.subject,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    publicKey: pair.keys.publicKey,
    signingKey,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: "ip", value: ip }])]
  })
  return { key: pair.privateKeyPem, cert: certificate.toString("pem") + "\n" + pki.intermediate.certificatePem }
}
