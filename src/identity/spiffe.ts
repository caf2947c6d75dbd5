// SPIFFE IDs: the names workloads carry in their certificates (the URI SAN of an X.509-SVID) and
// in discovery (the identity an endpoint is expected to present). Everything that checks a peer
// or writes an identity into a certificate, a header or a log goes through parse and format here.
import { X509Certificate } from "node:crypto"

export const defaultTrustDomain = "iip-mesh.local"

/** A parsed SPIFFE ID: `spiffe://<trustDomain><path>`, path empty or `/seg/seg`. */
export interface SpiffeId {
  readonly trustDomain: string
  readonly path: string
  readonly text: string
}

// The SPIFFE ID spec: trust domain of lowercase letters, digits, dots, dashes and underscores; path
// segments of letters, digits, dots, dashes and underscores, none empty, "." or ".."; 2048 bytes at most.
const maxIdLength = 2048
const trustDomainPattern = /^[a-z0-9._-]+$/
const segmentPattern = /^[A-Za-z0-9._-]+$/

export const parseSpiffeId = (text: string): SpiffeId | undefined => {
  if (text.length > maxIdLength || !text.startsWith("spiffe://")) return undefined
  const rest = text.slice("spiffe://".length)
  const slash = rest.indexOf("/")
  const trustDomain = slash === -1 ? rest : rest.slice(0, slash)
  const path = slash === -1 ? "" : rest.slice(slash)
  if (trustDomain.length === 0 || trustDomain.length > 255 || !trustDomainPattern.test(trustDomain)) return undefined
  if (path !== "") {
    for (const segment of path.slice(1).split("/")) {
      if (!segmentPattern.test(segment) || segment === "." || segment === "..") return undefined
    }
  }
  return { trustDomain, path, text }
}

const checked = (text: string): string => {
  if (parseSpiffeId(text) === undefined) throw new TypeError(`not a valid SPIFFE ID: ${JSON.stringify(text.slice(0, 200))}`)
  return text
}

/** `spiffe://<td>/ns/<namespace>/sa/<service-account>`: a workload in Kubernetes. */
export const kubernetesSpiffeId = (trustDomain: string, namespace: string, serviceAccount: string): string =>
  checked(`spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`)

/** `spiffe://<td>/svc/<service>`: a workload outside Kubernetes (LAN, demo). */
export const serviceSpiffeId = (trustDomain: string, service: string): string =>
  checked(`spiffe://${trustDomain}/svc/${service}`)

/** `spiffe://<td>/issuer`: the identity issuer's own TLS leaf; sidecars check the issuer by it. */
export const issuerSpiffeId = (trustDomain: string): string => checked(`spiffe://${trustDomain}/issuer`)

/**
 * Whether an identity matches a policy pattern: the exact ID, or a pattern with `*` standing for
 * any run of characters inside one path segment (`spiffe://td/ns/shop/sa/*`) and a trailing `/**`
 * for any number of segments below (`spiffe://td/ns/shop/**`). A lone `*` matches every identity.
 */
export const matchesIdentityPattern = (pattern: string, id: string): boolean => {
  if (pattern === "*") return true
  if (pattern.endsWith("/**")) {
    const prefix = pattern.slice(0, -2)
    return id.startsWith(prefix) && id.length > prefix.length
  }
  if (!pattern.includes("*")) return pattern === id
  const source = pattern.split("*").map((part) => part.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join("[^/]*")
  return new RegExp(`^${source}$`).test(id)
}

/**
 * The SPIFFE ID a certificate names: its one `URI:spiffe://` subject alternative name. An
 * X.509-SVID carries exactly one URI SAN; a certificate with none, several, or an invalid one
 * names no identity (undefined), and callers refuse it.
 */
export const spiffeIdOfCertificate = (certificate: X509Certificate | Buffer | string): SpiffeId | undefined => {
  const parsed = certificate instanceof X509Certificate ? certificate : new X509Certificate(certificate)
  const names = parsed.subjectAltName
  if (names === undefined) return undefined
  const uris = names.split(", ").filter((name) => name.startsWith("URI:")).map((name) => name.slice(4))
  return uris.length === 1 ? parseSpiffeId(uris[0]!) : undefined
}
