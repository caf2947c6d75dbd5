// An HTTP authority (a Host header, an HTTP/2 :authority) parsed strictly as RFC 3986 defines one
// without userinfo (RFC 9112 §3.2, RFC 9113 §8.3.1): `[IPv6]` or a reg-name/IPv4, each optionally
// followed by `:port`, 1 to 65535 in at most five digits, and nothing else. Shared by the admin
// listener's loopback check and the outbound listeners' routing, so both read a Host one way: a
// lenient reading took `[::1]evil` for [::1], and routed `catalog:99999` to catalog, port ignored. Pure.

export interface Authority {
  /** The host as written: a reg-name or IPv4 literal, or the IPv6 address inside the brackets. */
  readonly host: string
  readonly bracketed: boolean
}

/** A reg-name (unreserved, pct-encoded, sub-delims) or an IPv4 literal, then an optional port. */
const NAME_AUTHORITY = /^((?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)(?::(\d{1,5}))?$/
/** `[` IPv6 `]`, then an optional port; a zone (`%25lo`) or an IPvFuture does not match. */
const BRACKET_AUTHORITY = /^\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?$/

/** Port 0 names no listener: a request cannot have reached one through it. */
const portValid = (port: string | undefined): boolean => {
  if (port === undefined) return true
  const n = Number(port)
  return n >= 1 && n <= 65_535
}

/** The authority's host, or undefined when `text` is no authority (a bad port, userinfo, a stray character). */
export const parseAuthority = (text: string): Authority | undefined => {
  const bracketed = BRACKET_AUTHORITY.exec(text)
  if (bracketed !== null) return portValid(bracketed[2]) ? { host: bracketed[1]!, bracketed: true } : undefined
  const named = NAME_AUTHORITY.exec(text)
  return named !== null && portValid(named[2]) ? { host: named[1]!, bracketed: false } : undefined
}
