// The shapes of single setting values (an address, a service name, a path, a duration, a byte
// count...) that the sidecar's configuration schema (sidecarConfig.ts) is built from; a check's
// message is what a wrong value gets in the loader's problems (loadSidecarConfig.ts).
import * as Schema from "effect/Schema"
import { isIP, isIPv4 } from "node:net"
import { isSubsetLabel } from "../balancer/subsets.ts"
import { parseSpiffeId } from "../identity/spiffe.ts"

const addressPattern = /^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/
const servicePattern = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/
/** "NAMESPACE/NAME" of a Kubernetes Service: two DNS labels. */
export const kubernetesServicePattern = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\/[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\+[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?){0,15}$/

export const Address = Schema.String.pipe(
  Schema.check(
    Schema.makeFilter((text: string) => {
      const match = addressPattern.exec(text)
      if (match === null || Number(match[1]) > 65535) return `Expected HOST:PORT with a port of 0..65535, got ${JSON.stringify(text.slice(0, 200))}`
      // A DNS name is at most 253 characters: a longer one fails every lookup, later.
      return text.length - match[1]!.length - 1 <= 253 ? undefined : `Expected a host of at most 253 characters, got ${JSON.stringify(`${text.slice(0, 80)}...`)}`
    })
  )
)
export const ServiceName = Schema.String.pipe(
  Schema.check(Schema.makeFilter((text: string) => (servicePattern.test(text) ? undefined : `Expected a DNS label (a-z, 0-9, -), got ${JSON.stringify(text)}`)))
)
/** The node names peers accept in a hello or an announcement (src/discovery/types.ts isNodeId): 1-253 characters, no controls. */
export const NodeName = Schema.String.pipe(
  Schema.check(Schema.makeFilter((text: string) => (/^[^\u0000-\u001f\u007f]{1,253}$/.test(text) ? undefined : `Expected a node name (1-253 characters, no controls), got ${JSON.stringify(text.slice(0, 80))}`)))
)
/** What Resolver.setServers takes (it throws on anything else): an IP, IPv4:PORT, [IPv6] or [IPv6]:PORT. */
export const isDnsServer = (text: string): boolean => {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|(\d{1,3}(?:\.\d{1,3}){3}))(?::(\d{1,5}))?$/.exec(text)
  if (match === null) return isIP(text) !== 0
  const port = match[3] === undefined ? 1 : Number(match[3])
  return port >= 1 && port <= 65535 && (match[1] === undefined ? isIPv4(match[2]!) : isIP(match[1]) === 6)
}
/** A file or directory: NUL ends a path in the system call (fs throws on it), and no path is longer than PATH_MAX. */
export const FilePath = Schema.String.pipe(
  Schema.check(Schema.makeFilter((text: string) => (text.length >= 1 && text.length <= 4096 && !text.includes("\u0000") ? undefined : `Expected a path (at most 4096 characters, no NUL), got ${JSON.stringify(text.slice(0, 80))}`)))
)
/** A DNS name (an SRV record's, `_mesh._tcp.shop.prod.svc.cluster.local`). */
export const DnsName = Schema.String.pipe(
  Schema.check(Schema.makeFilter((text: string) => (/^[A-Za-z0-9_.-]{1,253}$/.test(text) ? undefined : `Expected a DNS name (at most 253 of A-Z a-z 0-9 _ . -), got ${JSON.stringify(text.slice(0, 80))}`)))
)
/** Per service (names checked on the whole record: a Record with a checked key type would drop a bad name silently instead of reporting it). */
export const PerService = <S extends Schema.Top>(value: S) =>
  Schema.Record(Schema.String, value).pipe(
    Schema.check(
      Schema.makeFilter((record: Readonly<Record<string, unknown>>) => {
        const bad = Object.keys(record).filter((name) => !servicePattern.test(name))
        return bad.length === 0 ? undefined : `Expected service names that are DNS labels (a-z, 0-9, -), got ${bad.map((b) => JSON.stringify(b.slice(0, 80))).join(", ")}`
      })
    )
  )
export const PositiveMs = Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 3_600_000 })))
export const Count = Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 10_000_000 })))
/** A byte count, 1 KiB .. 64 GiB. */
export const Bytes = Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1024, maximum: 64 * 1024 ** 3 })))
export const Percent = Schema.Number.pipe(Schema.check(Schema.isBetween({ minimum: 0, maximum: 100 })))
/** Where consistent hashing and MethodURIParam find their key: a header, a query parameter, or the client's address. */
export const HashKey = Schema.String.pipe(
  Schema.check(
    Schema.makeFilter((text: string) =>
      /^(?:header:[!#$%&'*+.^_`|~0-9A-Za-z-]+|query:.+|client)$/.test(text) ? undefined : `Expected header:NAME, query:NAME or client, got ${JSON.stringify(text)}`
    )
  )
)

const SpiffeIdText = Schema.String.pipe(
  Schema.check(Schema.makeFilter((text: string) => (parseSpiffeId(text) === undefined ? `Expected a SPIFFE ID (spiffe://TRUST-DOMAIN/PATH), got ${JSON.stringify(text.slice(0, 200))}` : undefined)))
)

/** A version label (the subset routes split over, src/sidecar/routes.ts). */
export const VersionLabel = Schema.String.pipe(
  Schema.check(Schema.makeFilter((text: string) => (isSubsetLabel(text) ? undefined : `Expected a version label (1-63 of A-Z a-z 0-9 . _ -), got ${JSON.stringify(text.slice(0, 80))}`)))
)

/** How an endpoint is reached (src/sidecar/meshTls.ts): mutual TLS, the Go reference's TLS mode, or plain TCP. */
export const endpointSecurities = ["mtls", "tls", "plain"] as const

export const EndpointSpec = Schema.Struct({
  address: Address,
  weight: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 1000 }))),
  /** The SPIFFE ID the endpoint must present over mTLS. */
  identity: Schema.optionalKey(SpiffeIdText),
  /** Unset: as `mtls` says (src/sidecar/meshTls.ts). */
  security: Schema.optionalKey(Schema.Literals(endpointSecurities)),
  /** For security "tls": a PEM file of the CA the server's certificate must chain to; unset, it is not verified (as the reference). */
  ca: Schema.optionalKey(FilePath),
  /** Its version label: the subset routes send traffic to. */
  version: Schema.optionalKey(VersionLabel)
})
