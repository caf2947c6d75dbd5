// PEM bundles and chains as node:crypto sees them: splitting a bundle into its certificates and
// checking that a chain (leaf first) leads to one of a bundle's roots within its validity. The
// issuer checks its intermediate with it at start, and the identity client checks every leaf it
// receives before using it, so a wrong answer never replaces good credentials; when the chain
// stops being usable (its first expiry, root included) times the renewal, and the roots' validity
// is what the status and the metrics report.
import { X509Certificate } from "node:crypto"

const pemBlock = /-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----/g

/** The certificates of a PEM text, each as its own PEM block (anything between blocks is ignored). */
export const certificatesOfPem = (text: string): Array<string> => [...text.matchAll(pemBlock)].map((match) => `${match[0]}\n`)

/** Most characters of a chain or a bundle from the issuer, and most certificates in each: checked before any is parsed. */
export const maxPemChars = 64 * 1024
export const maxChainCertificates = 8
export const maxBundleCertificates = 16

/**
 * The certificates of PEM text from the issuer (hostile: it may be anything), or why it is refused:
 * its size, then how many blocks it holds, both checked before a certificate is parsed.
 */
export const boundedCertificatesOfPem = (text: string, what: string, maxCertificates: number): Array<string> | string => {
  if (text.length > maxPemChars) return `${what} is larger than ${maxPemChars} characters (${text.length})`
  const certificates = certificatesOfPem(text)
  if (certificates.length === 0) return `${what} holds no certificate`
  if (certificates.length > maxCertificates) return `${what} holds ${certificates.length} certificates, more than ${maxCertificates}`
  return certificates
}

const validAt = (certificate: X509Certificate, at: Date): boolean =>
  new Date(certificate.validFrom).getTime() <= at.getTime() && at.getTime() <= new Date(certificate.validTo).getTime()

/**
 * The roots of `roots` that issued and signed the chain's last certificate: one, or more when a
 * root was re-issued with its own key (a longer life), which OpenSSL takes whichever is valid of.
 */
const anchorsOf = (chain: ReadonlyArray<X509Certificate>, roots: ReadonlyArray<X509Certificate>): Array<X509Certificate> => {
  const top = chain[chain.length - 1]!
  return roots.filter((candidate) => top.checkIssued(candidate) && top.verify(candidate.publicKey))
}

const notAfterOf = (certificate: X509Certificate): number => new Date(certificate.validTo).getTime()

/**
 * When a chain that chainProblem accepted stops being usable, in ms: the first expiry among its
 * certificates and the bundle root it leads to (of a root's copies, the one that lasts). A leaf
 * that outlives its intermediate or its root is refused by every peer once either has expired.
 */
export const chainUsableUntil = (chainPem: string, bundlePem: string): number => {
  const chain = certificatesOfPem(chainPem).map((pem) => new X509Certificate(pem))
  const anchors = anchorsOf(chain, certificatesOfPem(bundlePem).map((pem) => new X509Certificate(pem)))
  const rootEnd = anchors.length === 0 ? Infinity : Math.max(...anchors.map(notAfterOf))
  return Math.min(rootEnd, ...chain.map(notAfterOf))
}

/** A bundle root as the status and the metrics count it: what it is called and when it is valid. */
export interface RootValidity {
  readonly subject: string
  readonly notBefore: number
  readonly notAfter: number
}

/** The roots of a bundle that chainProblem accepted, read once per generation so a status or a scrape only compares times. */
export const rootValidities = (bundlePem: string): Array<RootValidity> =>
  certificatesOfPem(bundlePem).map((pem) => {
    const root = new X509Certificate(pem)
    return { subject: root.subject.replaceAll("\n", ", "), notBefore: new Date(root.validFrom).getTime(), notAfter: new Date(root.validTo).getTime() }
  })

/**
 * Why `chainPem` (leaf first, then intermediates) does not lead to a root of `bundlePem` at `at`,
 * or undefined when it does: each certificate issued and signed by the next, the last by a bundle
 * root, every one of them within its validity.
 */
export const chainProblem = (chainPem: string, bundlePem: string, at: Date): string | undefined => {
  let chain: Array<X509Certificate>
  let roots: Array<X509Certificate>
  try {
    chain = certificatesOfPem(chainPem).map((pem) => new X509Certificate(pem))
    roots = certificatesOfPem(bundlePem).map((pem) => new X509Certificate(pem))
  } catch (cause) {
    return `a certificate does not parse: ${cause instanceof Error ? cause.message : String(cause)}`
  }
  if (chain.length === 0) return "the chain holds no certificate"
  if (roots.length === 0) return "the trust bundle holds no certificate"
  for (const [index, certificate] of chain.entries()) {
    if (!validAt(certificate, at)) return `certificate ${index} of the chain is not valid at ${at.toISOString()} (${certificate.validFrom} .. ${certificate.validTo})`
    const parent = chain[index + 1]
    if (parent === undefined) break
    if (!certificate.checkIssued(parent) || !certificate.verify(parent.publicKey)) return `certificate ${index} of the chain is not signed by the next one`
  }
  const anchors = anchorsOf(chain, roots)
  if (anchors.length === 0) return "the chain leads to no root of the trust bundle"
  if (!anchors.some((root) => validAt(root, at))) return `the root is not valid at ${at.toISOString()}`
  return undefined
}
