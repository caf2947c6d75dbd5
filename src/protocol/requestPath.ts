// How a server reads a request path (PROTOCOL.md §6.2): the reference parses it with Go's
// url.Parse, routes on the percent-decoded path and answers with that parsed path, query removed.
// This module reproduces the parts of url.Parse that decide those two results. Pure.

export interface ParsedRequestPath {
  /** The decoded path used for routing and carried by the answer ("/echo" for "/ec%68o?x=1"). */
  readonly path: string
  /** The raw query, without "?" ("" when none). */
  readonly rawQuery: string
}

const isHex = (c: number) => (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66)
const hexValue = (c: number) => (c <= 0x39 ? c - 0x30 : (c | 0x20) - 0x57)
const isAlpha = (c: number) => (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a)

/** Percent-decodes like Go's url unescape; undefined on a malformed escape. `plusIsSpace` for queries. */
export const unescape = (s: string, plusIsSpace: boolean): string | undefined => {
  if (s.indexOf("%") === -1 && !(plusIsSpace && s.indexOf("+") !== -1)) return s
  const bytes = Buffer.from(s, "utf8")
  const out = Buffer.allocUnsafe(bytes.length)
  let n = 0
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i]!
    if (c === 0x25) {
      if (i + 2 >= bytes.length || !isHex(bytes[i + 1]!) || !isHex(bytes[i + 2]!)) return undefined
      out[n++] = (hexValue(bytes[i + 1]!) << 4) | hexValue(bytes[i + 2]!)
      i += 2
    } else if (c === 0x2b && plusIsSpace) {
      out[n++] = 0x20
    } else {
      out[n++] = c
    }
  }
  return out.toString("utf8", 0, n)
}

const hasControlByte = (s: string) => {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x20 || c === 0x7f) return true
  }
  return false
}

/** Go's getScheme: the scheme's length (0 when there is none), or -1 for a leading ":". */
const schemeLength = (s: string): number => {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (isAlpha(c)) continue
    if ((c >= 0x30 && c <= 0x39) || c === 0x2b || c === 0x2d || c === 0x2e) {
      if (i === 0) return 0
      continue
    }
    if (c === 0x3a) return i === 0 ? -1 : i
    return 0
  }
  return 0
}

const isDigit = (c: number) => c >= 0x30 && c <= 0x39
/** Go's validOptionalPort. */
const validOptionalPort = (port: string): boolean => {
  if (port === "") return true
  if (port.charCodeAt(0) !== 0x3a) return false
  for (let i = 1; i < port.length; i++) if (!isDigit(port.charCodeAt(i))) return false
  return true
}
/** Go's unescape(s, encodeHost) succeeds: %XX only with XX >= 0x80 or "%25"; ASCII must be a host byte. */
const validHostChars = (s: string): boolean => {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c === 0x25) {
      if (i + 2 >= s.length || !isHex(s.charCodeAt(i + 1)) || !isHex(s.charCodeAt(i + 2))) return false
      if (hexValue(s.charCodeAt(i + 1)) < 8 && s.slice(i, i + 3) !== "%25") return false
      i += 2
    } else if (c < 0x80 && !(isAlpha(c) || isDigit(c) || "-_.~!$&'()*+,;=:[]<>\"".includes(s[i]!))) {
      return false
    }
  }
  return true
}
/** Go's parseAuthority succeeds (userinfo and host checks; IPv6 zones are not special-cased). */
const validAuthority = (authority: string): boolean => {
  const at = authority.lastIndexOf("@")
  const host = at === -1 ? authority : authority.slice(at + 1)
  if (host.startsWith("[")) {
    const close = host.lastIndexOf("]")
    if (close === -1 || !validOptionalPort(host.slice(close + 1))) return false
  } else {
    const colon = host.lastIndexOf(":")
    if (colon !== -1 && !validOptionalPort(host.slice(colon))) return false
  }
  if (!validHostChars(host)) return false
  if (at === -1) return true
  const userinfo = authority.slice(0, at)
  for (let i = 0; i < userinfo.length; i++) {
    const c = userinfo.charCodeAt(i)
    if (!(isAlpha(c) || isDigit(c) || "-._:~!$&'()*+,;=%@".includes(userinfo[i]!))) return false
  }
  const colon = userinfo.indexOf(":")
  const parts = colon === -1 ? [userinfo] : [userinfo.slice(0, colon), userinfo.slice(colon + 1)]
  return parts.every((part) => unescape(part, false) !== undefined)
}

/**
 * Parses a request path as the reference does. When Go's url.Parse would fail, the reference keeps
 * the raw path and an empty query; so do we.
 */
export const parseRequestPath = (raw: string): ParsedRequestPath => {
  // The same path as the last request's (usually the same string: the decoder reuses it): the same answer.
  if (raw === lastRaw) return lastParsed
  const parsed = parse(raw)
  lastRaw = raw
  lastParsed = parsed
  return parsed
}

/** The last path parsed and what it gave (immutable, so shared). */
let lastRaw: string | undefined = undefined
let lastParsed: ParsedRequestPath = { path: "", rawQuery: "" }

const parse = (raw: string): ParsedRequestPath => {
  // Fast path: a plain absolute path without escapes, query or fragment.
  const q = raw.indexOf("?")
  if (raw.charCodeAt(0) === 0x2f && raw.charCodeAt(1) !== 0x2f && raw.indexOf("%") === -1 && raw.indexOf("#") === -1) {
    if (!hasControlByte(raw)) {
      return q === -1 ? { path: raw, rawQuery: "" } : { path: raw.slice(0, q), rawQuery: raw.slice(q + 1) }
    }
  }
  const failed = { path: raw, rawQuery: "" }
  let rest = raw
  const hash = rest.indexOf("#")
  if (hash !== -1) {
    if (unescape(rest.slice(hash + 1), false) === undefined) return failed
    rest = rest.slice(0, hash)
  }
  // Go checks control bytes only before the "#" (url.Parse cuts the fragment off first).
  if (hasControlByte(rest)) return failed
  if (rest === "*") return { path: "*", rawQuery: "" }
  const scheme = schemeLength(rest)
  if (scheme === -1) return failed
  const hasScheme = scheme > 0
  if (hasScheme) rest = rest.slice(scheme + 1)
  let rawQuery = ""
  const qm = rest.indexOf("?")
  if (qm !== -1) {
    rawQuery = rest.slice(qm + 1)
    rest = rest.slice(0, qm)
  }
  if (!rest.startsWith("/")) {
    if (hasScheme) return { path: "", rawQuery } // opaque URL: Go leaves Path empty
    const slash = rest.indexOf("/")
    const firstSegment = slash === -1 ? rest : rest.slice(0, slash)
    if (firstSegment.includes(":")) return failed
  }
  if ((hasScheme || !rest.startsWith("///")) && rest.startsWith("//")) {
    const slash = rest.indexOf("/", 2)
    if (!validAuthority(slash === -1 ? rest.slice(2) : rest.slice(2, slash))) return failed
    rest = slash === -1 ? "" : rest.slice(slash)
  }
  const path = unescape(rest, false)
  return path === undefined ? failed : { path, rawQuery }
}

/** Go's url.ParseQuery with errors ignored (what `URL.Query()` gives a handler). */
export const parseQuery = (rawQuery: string): Map<string, Array<string>> => {
  const values = new Map<string, Array<string>>()
  if (rawQuery === "") return values
  for (const part of rawQuery.split("&")) {
    if (part === "" || part.includes(";")) continue
    const eq = part.indexOf("=")
    const key = unescape(eq === -1 ? part : part.slice(0, eq), true)
    const value = unescape(eq === -1 ? "" : part.slice(eq + 1), true)
    if (key === undefined || value === undefined) continue
    const list = values.get(key)
    if (list === undefined) values.set(key, [value])
    else list.push(value)
  }
  return values
}
