// Outbound, what a request is for: the service its Host header or absolute URI names (the first
// step of outbound.ts and outboundUpgrade.ts; an HTTP/2 request whose Host names another origin
// than its :authority is refused), the balancer's view of it (hash key, client, URI), and the
// deadline the app may shorten. Route choice, which needs the options, is outboundRoute.ts.
import { queryValue } from "../balancer/pickers.ts"
import type { OutboundRequest } from "./outboundCall.ts"
import { TIMEOUT_HEADER } from "./headerFilter.ts"
import { grpcTimeoutMs } from "./grpcStatus.ts"
import { ProxyError } from "./proxyError.ts"
import { acceptsEventStream } from "./eventStream.ts"
import { parseAuthority } from "../protocol/authority.ts"

export interface Target {
  readonly service: string
  /** Path and query, as the app sent them. */
  readonly uri: string
  readonly authority: string
}

/** The balancer's view of a request: its hash key, the client's address, the URI. */
export const pickContext = (req: OutboundRequest, uri: string, hashKey: string | undefined) => {
  const clientIp = req.remoteAddress
  if (hashKey === undefined) return { clientIp, uri }
  const key = hashKey === "client"
    ? clientIp
    : hashKey.startsWith("header:")
    ? String(req.headers[hashKey.slice(7).toLowerCase()] ?? "")
    : queryValue(uri, hashKey.slice(6))
  return { key, clientIp, uri }
}

/** The deadline the app asked for (the `iip-timeout` header, ms, or a gRPC call's `grpc-timeout`); 0 for none. */
export const askedTimeoutMs = (req: OutboundRequest): number => {
  const header = req.headers[TIMEOUT_HEADER]
  return typeof header === "string" && /^\d{1,9}$/.test(header) ? Number(header) : grpcTimeoutMs(req.headers["grpc-timeout"] as string | undefined) ?? 0
}

/** The app's own deadline (askedTimeoutMs), if it is shorter than ours. */
export const appTimeoutMs = (req: OutboundRequest, configured: number): number => {
  const asked = askedTimeoutMs(req)
  return asked > 0 ? Math.min(asked, configured) : configured
}

/** An event stream (a GET accepting text/event-stream, as EventSource writes it): its answer lasts as long as it is wanted. */
export const isEventStream = (req: OutboundRequest): boolean => {
  if (req.method !== "GET") return false
  // Several accept lines come joined into one (http1Call.ts's headerRecord, node's http2).
  const accept = req.headers.accept
  return typeof accept === "string" && acceptsEventStream(accept)
}

/** The service an authority names: the host, lower case, `.mesh`, a final dot and the port dropped ("" for none). */
const serviceOf = (authority: string): string => {
  const host = authority.startsWith("[") ? authority.slice(0, authority.indexOf("]") + 1) : authority.split(":")[0]!
  return host.toLowerCase().replace(/\.mesh$/, "").replace(/\.$/, "")
}

/** The longest service name: a DNS name's (a Kubernetes service's full name fits). */
const MAX_SERVICE_NAME = 253

/** The last authority and its service: an app names the same few services request after request (a parse, a split and two regular expressions spared each time). */
let lastAuthority = ""
let lastService = ""

/**
 * An HTTP/2 request's Host and :authority name one origin (RFC 9113 §8.3.1, compared after the
 * scheme-based normalization a proxy owes them: case, and the default port of http). Host is filled
 * from :authority when absent (outboundH2.ts), so agreeing ones are usually equal strings.
 */
const sameOrigin = (host: string, authority: string): boolean => {
  if (host === authority) return true
  const normal = (name: string) => name.toLowerCase().replace(/:80$/, "")
  return normal(host) === normal(authority)
}

/**
 * An absolute-form target (RFC 9112 §3.2.2) as written: `http://`, the authority, then the path and
 * query (a target with a fragment is refused before). The URL parser also reads `\`, `http:x` and `http:/x` as it does `//`
 * and `/`, which RFC 3986 does not: such a target is refused rather than read two ways.
 */
const ABSOLUTE_FORM = /^http:\/\/[^/?\\]*([/?].*)?$/i

/** Which service a request is for: the absolute URI's host, else the Host header; `.mesh` and the port dropped. */
export const targetOf = (req: OutboundRequest): Target => {
  const url = req.url
  let authority = req.headers.host ?? ""
  if (req.httpVersionMajor === 2) {
    // Host winning over :authority routed a request somewhere its caller's HTTP/2 stack (and any proxy reading :authority) did not send it.
    const pseudo = req.headers[":authority"]
    if (typeof pseudo === "string" && !sameOrigin(authority, pseudo)) {
      throw new ProxyError({ status: 400, reason: "bad_target", hop: "outbound", message: "the Host header and :authority name different origins (RFC 9113 §8.3.1)" })
    }
  }
  // A fragment is no part of a request target (RFC 9112 §3.2, RFC 9113 §8.3.1): apps and proxies
  // disagree on `/admin#x` (one strips from `#`, as nginx matches locations, one refuses, one takes it
  // as data), which is how an authorization check is made to read another path than the app serves.
  // Refused rather than cut, over HTTP/1.1 and HTTP/2 alike (`%23` is data and passes).
  if (url.indexOf("#") !== -1) {
    throw new ProxyError({ status: 400, reason: "bad_target", hop: "outbound", message: "a request target holds no fragment (#): RFC 9112 §3.2" })
  }
  let uri = url
  if (!url.startsWith("/")) {
    const absolute = URL.canParse(url) ? new URL(url) : undefined
    const written = ABSOLUTE_FORM.exec(url)
    if (absolute === undefined || absolute.protocol !== "http:" || written === null) {
      throw new ProxyError({ status: 400, reason: "bad_target", hop: "outbound", message: `cannot proxy ${JSON.stringify(url.slice(0, 100))}` })
    }
    authority = absolute.host
    // The path and query as sent, not the parser's (it removes dot segments and percent-encodes
    // bytes such as `"`): a proxy must not modify them (RFC 9110 §7.7), and an origin-form target
    // goes to the app as sent too. An empty path is "/".
    uri = written[1] === undefined || written[1].startsWith("?") ? `/${written[1] ?? ""}` : written[1]
  }
  if (authority !== lastAuthority) {
    // A port outside 1-65535 (`catalog:99999`) or a stray character was routed on its host alone.
    if (parseAuthority(authority) === undefined) {
      throw new ProxyError({ status: 400, reason: "bad_target", hop: "outbound", message: `${JSON.stringify(authority.slice(0, 100))} is no authority: a host, then an optional port of 1 to 65535 (RFC 9112 §3.2)` })
    }
    lastService = serviceOf(authority)
    lastAuthority = authority
  }
  const service = lastService
  if (service === "") throw new ProxyError({ status: 400, reason: "no_target", hop: "outbound", message: "name the service in the Host header or an absolute URI" })
  // No service is named longer than a DNS name; a longer Host would be a metric label, golden
  // series and span name of its own up to the head size limit (50 such Hosts: 22 MB of /metrics).
  if (service.length > MAX_SERVICE_NAME) {
    throw new ProxyError({ status: 400, reason: "bad_target", hop: "outbound", message: `a service name is at most ${MAX_SERVICE_NAME} characters, this one has ${service.length}` })
  }
  return { service, uri, authority }
}
