// The vocabulary of discovery, shared by every part of the flow: sources (static, file, DNS SRV,
// mDNS, Kubernetes) report DiscoveredEndpoints as EndpointUpdates; the Discovery service folds
// them per source (endpointSet.ts), merges the sources and hands merged updates to subscribers
// such as the sidecar's endpoint registry and the admin view.
import { isIP } from "node:net"

/** One instance of a service, as one source reports it. */
export interface DiscoveredEndpoint {
  readonly service: string
  /** An IP address or a host name; IPv6 without brackets. */
  readonly host: string
  readonly port: number
  /** Relative share of the traffic, at least 1. */
  readonly weight: number
  readonly zone?: string
  readonly version?: string
  /** Protocol features the endpoint announces (for example "mesh/1"). */
  readonly features: ReadonlyArray<string>
  /** The kind of source that reported it, optionally with a detail: "static", "static:file", "dns", "mdns", "kubernetes". */
  readonly source: string
  /** The id of the sidecar behind the endpoint, when the source knows it. */
  readonly node?: string
  /** The SPIFFE ID the endpoint must present over mutual TLS, when the source knows it. */
  readonly identity?: string
  /** How it is reached: "mtls", "tls" (the Go reference's TLS mode) or "plain"; unset: as the sidecar's mtls mode says. */
  readonly security?: "mtls" | "tls" | "plain"
  /** For "tls": a PEM file of the CA the server's certificate must chain to. */
  readonly ca?: string
  /** The port of the sidecar's admin control listener on `host`, when it announces one (admin federation). */
  readonly adminPort?: number
}

/**
 * The most endpoints one source reports for one service (the Discovery service keeps the first
 * this-many and logs the rest as left out). Sources fed from the network (an mDNS host, a DNS or API
 * server) could otherwise name millions, and every update costs the merge and the endpoint registry
 * time in proportion to the set. 1000 is Kubernetes' own limit for one Endpoints object (beyond it the
 * controller truncates and marks it over-capacity), so a real Service fits.
 */
export const MaxEndpointsPerService = 1000

/** The largest weight an endpoint takes, as the configuration and the admin weights allow. */
export const MaxWeight = 1000

/** A weight as announced, rounded into 1..MaxWeight (NaN: 1). */
export const clampWeight = (weight: number): number => (Number.isNaN(weight) ? 1 : Math.min(MaxWeight, Math.max(1, Math.round(weight))))

/** A mesh service name: a DNS label (a-z, 0-9, -; at most 63), as the configuration requires. */
export const isServiceName = (text: string): boolean => /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/.test(text)

/**
 * A last label of digits or 0x-hex: no top-level domain is one (RFC 3696 §2), and getaddrinfo, which
 * net.connect looks names up with, reads such a name as inet_aton does (127.1, 2130706433, 0x7f.1,
 * 0177.0.0.1 and 0 dial this host): an IPv4 address that isIP does not see, past every address check.
 */
const numericLastLabel = /(?:^|\.)(?:\d+|0x[0-9a-f]*)\.?$/i

/** An endpoint host: an IP address, or a host name (labels of A-Z a-z 0-9 - _, at most 253 in all, the last not numeric). */
export const isHost = (text: string): boolean =>
  isIP(text) !== 0 ||
  (text.length <= 253 && /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/.test(text) && !numericLastLabel.test(text))

/** A sidecar id as announced: 1-253 characters, none of them a control character (the configuration takes any non-empty id; the default is host name and pid). */
export const isNodeId = (text: string): boolean => text.length <= 253 && /^[^\u0000-\u001f\u007f]+$/.test(text)

/** A port number as announced (a string or a number); undefined unless 1..65535. */
export const validPort = (value: unknown): number | undefined => {
  const port = typeof value === "string" && /^\d{1,5}$/.test(value) ? Number(value) : value
  return typeof port === "number" && Number.isInteger(port) && port >= 1 && port <= 65535 ? port : undefined
}

/**
 * A change to one service's endpoints. `Reset` replaces the whole set (an empty list: none left);
 * `Add` and `Change` set one endpoint; `Remove` drops the endpoint with that key (see endpointKey).
 */
export type EndpointUpdate<E extends DiscoveredEndpoint = DiscoveredEndpoint> =
  | { readonly _tag: "Reset"; readonly service: string; readonly endpoints: ReadonlyArray<E> }
  | { readonly _tag: "Add"; readonly endpoint: E }
  | { readonly _tag: "Remove"; readonly service: string; readonly key: string }
  | { readonly _tag: "Change"; readonly endpoint: E }

/**
 * Anything that finds endpoints. `start` begins reporting through `emit` (it may emit before it
 * returns) and returns the function that stops it; after a stop it emits nothing more.
 */
export interface DiscoverySource {
  start(emit: (update: EndpointUpdate) => void): () => void
}

/** "host:port", or "[v6]:port" for an IPv6 host: the identity of an endpoint within a service. */
export const endpointKey = (endpoint: { readonly host: string; readonly port: number }): string =>
  endpoint.host.includes(":") ? `[${endpoint.host}]:${endpoint.port}` : `${endpoint.host}:${endpoint.port}`
