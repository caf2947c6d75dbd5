// A small PKI for the mTLS tests and benches: a root and an intermediate made in memory, and
// workload credentials under them (good, expired, for another identity), or under a foreign root.
import { X509Certificate } from "node:crypto"
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
