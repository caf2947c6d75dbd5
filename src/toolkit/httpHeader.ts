// The reference HTTP adapter's way of carrying HTTP headers to a plain IIP server (iip-protocol.md
// §9): the headers as Go's http.Header JSON (canonical names, value lists, keys sorted, HTML-safe
// escapes), base64url with `=` padding, appended unescaped to the request URI as `__http_hdr__`.
// The server side reads them back from that query value (the reference's IIPArgToHttpHeader).
// The HTTP adapter (httpAdapter.ts) writes it; IIP handlers read it. Pure.
import { goJsonString } from "../protocol/systemMessages.ts"

export const HttpHeaderParam = "__http_hdr__"

/** Go's textproto.CanonicalMIMEHeaderKey for ordinary names: "content-type" -> "Content-Type". */
const canonicalName = (name: string): string => name.toLowerCase().replace(/(^|-)([a-z])/g, (_m, dash: string, c: string) => dash + c.toUpperCase())

/** Headers Go's server keeps out of `Request.Header`: Host moves to `Request.Host`, Transfer-Encoding is consumed. */
const notInHeader = new Set(["host", "transfer-encoding"])

/** The `__http_hdr__` value for Node's raw header list (name, value, name, value ...). */
export const encodeHttpHeader = (rawHeaders: ReadonlyArray<string>): string => {
  const header = new Map<string, Array<string>>()
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!
    if (notInHeader.has(name.toLowerCase())) continue
    const key = canonicalName(name)
    const values = header.get(key)
    if (values === undefined) header.set(key, [rawHeaders[i + 1]!])
    else values.push(rawHeaders[i + 1]!)
  }
  const keys = [...header.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
  const json = `{${keys.map((key) => `${goJsonString(key)}:[${header.get(key)!.map(goJsonString).join(",")}]`).join(",")}}`
  return Buffer.from(json, "utf8").toString("base64").replace(/\+/g, "-").replace(/\//g, "_")
}

/** `uri` with the headers appended as `__http_hdr__` (`&` when it has a query, else `?`). */
export const withHttpHeader = (uri: string, rawHeaders: ReadonlyArray<string>): string =>
  `${uri}${uri.includes("?") ? "&" : "?"}${HttpHeaderParam}=${encodeHttpHeader(rawHeaders)}`

/** Reads a `__http_hdr__` value back as Go's http.Header (canonical name to values); malformed gives {}. */
export const decodeHttpHeader = (value: string): Record<string, Array<string>> => {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(value.replace(/-/g, "+").replace(/_/g, "/"), "base64").toString("utf8"))
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return {}
    const header: Record<string, Array<string>> = {}
    for (const [name, values] of Object.entries(parsed as Record<string, unknown>)) {
      if (Array.isArray(values)) header[name] = values.filter((v): v is string => typeof v === "string")
    }
    return header
  } catch {
    return {}
  }
}
