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
 * Whether `text[start, end)` (one segment, no `/`) matches a segment pattern split at its `*`s:
 * the first part at the start, the last at the end, the ones between found leftmost in turn (for
 * `*` alone that is never wrong). No regex: `[^/]*` repeated backtracks in time to the power of the stars.
 */
const partsMatch = (parts: ReadonlyArray<string>, text: string, start: number, end: number): boolean => {
  const first = parts[0]!
  if (parts.length === 1) return end - start === first.length && text.startsWith(first, start)
  const last = parts[parts.length - 1]!
  const limit = end - last.length
  if (limit - start < first.length || !text.startsWith(first, start) || !text.startsWith(last, limit)) return false
  let at = start + first.length
  for (let k = 1; k < parts.length - 1; k++) {
    const part = parts[k]!
    const found = text.indexOf(part, at)
    if (found === -1 || found + part.length > limit) return false
    at = found + part.length
  }
  return true
}

/**
 * A pattern with `*` as any run of characters inside one path segment (never a `/`), compiled once
 * into its segments' literal parts; the matcher allocates nothing. The identity it is given is the
 * caller's, so hostile: its cost is bounded by the pattern's length times the identity's.
 */
export const starPatternMatcher = (pattern: string): ((id: string) => boolean) => {
  const all = pattern.split("/")
  // The segments before the first `*` (the trust domain's at least) are one literal prefix.
  const fixed = Math.max(0, all.findIndex((segment) => segment.includes("*")))
  const prefix = fixed === 0 ? "" : `${all.slice(0, fixed).join("/")}/`
  const segments = all.slice(fixed).map((segment) => segment.split("*"))
  return (id) => {
    if (!id.startsWith(prefix)) return false
    let at = prefix.length
    for (let i = 0; i < segments.length; i++) {
      const slash = id.indexOf("/", at)
      const last = i === segments.length - 1
      if (last ? slash !== -1 : slash === -1) return false
      const end = last ? id.length : slash
      if (!partsMatch(segments[i]!, id, at, end)) return false
      at = end + 1
    }
    return true
  }
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
