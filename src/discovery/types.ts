// The vocabulary of discovery, shared by every part of the flow: sources (static, file, DNS SRV,
// mDNS, Kubernetes) report DiscoveredEndpoints as EndpointUpdates; the Discovery service folds
// them per source (endpointSet.ts), merges the sources and hands merged updates to subscribers
// such as the sidecar's endpoint registry and the admin view.

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
