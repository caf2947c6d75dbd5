// The HTTP request and response as they cross IIP (PROTOCOL.md §17). In mesh mode the head
// travels in the envelope's metadata and the body as the (streamed) IIP body; towards a plain IIP
// service (a Go IIP server) the request uses the reference HTTP adapter's convention: path = the
// request URI plus `__http_hdr__`, data = the body or `{}`. Pure.
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http"
import type { Meta } from "../protocol/mesh.ts"

/** The header an app may set to shorten a request's deadline, and that carries what is left to the next app (ms). */
export const TIMEOUT_HEADER = "iip-timeout"

export const HttpMeta = {
  method: ":method",
  authority: ":authority",
  status: ":status",
  /** JSON array of [name, value] pairs, in order, names lower case. */
  headers: "http-headers"
} as const

/**
 * Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus what the proxy sets
 * itself: the host, and the remaining deadline (it crosses IIP in the envelope; inbound.ts writes
 * it afresh for the far app).
 */
const hopByHop = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
  TIMEOUT_HEADER
])

export type HeaderPairs = ReadonlyArray<readonly [string, string]>

/** The end-to-end headers of a message, in order, hop-by-hop ones (and those named in Connection) removed. */
export const endToEndHeaders = (rawHeaders: ReadonlyArray<string>): Array<[string, string]> => {
  const named = new Set<string>()
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.toLowerCase() === "connection") {
      for (const token of rawHeaders[i + 1]!.split(",")) named.add(token.trim().toLowerCase())
    }
  }
  const out: Array<[string, string]> = []
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase()
    if (!hopByHop.has(name) && !named.has(name)) out.push([name, rawHeaders[i + 1]!])
  }
  return out
}

/** Adds x-forwarded-for/-proto/-host for a request that entered at `clientAddress` for `host`. */
export const withForwarded = (headers: Array<[string, string]>, clientAddress: string, host: string): Array<[string, string]> => {
  const prior = headers.find(([name]) => name === "x-forwarded-for")
  const rest = headers.filter(([name]) => name !== "x-forwarded-for" && name !== "x-forwarded-proto" && name !== "x-forwarded-host")
  rest.push(["x-forwarded-for", prior === undefined ? clientAddress : `${prior[1]}, ${clientAddress}`])
  rest.push(["x-forwarded-proto", "http"])
  rest.push(["x-forwarded-host", host])
  return rest
}

export const requestMeta = (method: string, authority: string, headers: HeaderPairs): Map<string, string> =>
  new Map([
    [HttpMeta.method, method],
    [HttpMeta.authority, authority],
    [HttpMeta.headers, JSON.stringify(headers)]
  ])

export const responseMeta = (status: number, headers: HeaderPairs): Map<string, string> =>
  new Map([
    [HttpMeta.status, String(status)],
    [HttpMeta.headers, JSON.stringify(headers)]
  ])

/** Reads header pairs back from metadata; malformed or missing gives none. */
export const headersOf = (meta: Meta): Array<[string, string]> => {
  const text = meta.get(HttpMeta.headers)
  if (text === undefined) return []
  try {
    const value: unknown = JSON.parse(text)
    if (!Array.isArray(value)) return []
    return value.filter((p): p is [string, string] => Array.isArray(p) && p.length === 2 && typeof p[0] === "string" && typeof p[1] === "string")
  } catch {
    return []
  }
}

/** Header pairs as Node's outgoing headers (repeated names become arrays). */
export const toOutgoing = (pairs: HeaderPairs): OutgoingHttpHeaders => {
  const out: Record<string, string | Array<string>> = {}
  for (const [name, value] of pairs) {
    const prior = out[name]
    out[name] = prior === undefined ? value : Array.isArray(prior) ? [...prior, value] : [prior, value]
  }
  return out
}

/** Go's textproto.CanonicalMIMEHeaderKey: "content-type" -> "Content-Type". */
const canonicalKey = (name: string): string => name.toLowerCase().replace(/(^|-)([a-z])/g, (_m, dash: string, c: string) => dash + c.toUpperCase())

/**
 * The reference HTTP adapter's request path: the URI plus `__http_hdr__`, the headers as Go's
 * http.Header JSON (canonical names, value lists), base64url with padding, appended unescaped.
 */
export const plainRequestPath = (uri: string, headers: HeaderPairs): string => {
  const header: Record<string, Array<string>> = {}
  for (const [name, value] of headers) (header[canonicalKey(name)] ??= []).push(value)
  const sorted = Object.fromEntries(Object.entries(header).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
  const encoded = Buffer.from(JSON.stringify(sorted), "utf8").toString("base64").replace(/\+/g, "-").replace(/\//g, "_")
  return `${uri}${uri.includes("?") ? "&" : "?"}__http_hdr__=${encoded}`
}

/** Reads `__http_hdr__` back as header pairs (what a Go IIP server's IIPArgToHttpHeader gives). */
export const headersFromPlainQuery = (value: string): Array<[string, string]> => {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(value.replace(/-/g, "+").replace(/_/g, "/"), "base64").toString("utf8"))
    if (typeof parsed !== "object" || parsed === null) return []
    return Object.entries(parsed as Record<string, unknown>).flatMap(([name, values]) =>
      Array.isArray(values) ? values.filter((v): v is string => typeof v === "string").map((v) => [name.toLowerCase(), v] as [string, string]) : []
    )
  } catch {
    return []
  }
}

/** Node's incoming headers as pairs (for tests and adapters that have no rawHeaders). */
export const pairsOf = (headers: IncomingHttpHeaders): Array<[string, string]> =>
  Object.entries(headers).flatMap(([name, value]) =>
    value === undefined ? [] : Array.isArray(value) ? value.map((v) => [name, v] as [string, string]) : [[name, value] as [string, string]]
  )
