// The Host check of the admin control listener without a token (adminServer.ts asks it before any
// route): a request must name a loopback host, so a DNS-rebinding page (a browser on this machine
// made to call the listener as that page's own origin) cannot drive it. Host is parsed strictly as an
// RFC 3986 authority without userinfo (RFC 9112 3.2): `[IPv6]` or a reg-name/IPv4, each optionally
// followed by `:port` (digits, at most 65535) and nothing else. A lenient parse took `[::1]evil` for
// [::1]: whatever a browser or a proxy makes of such a Host, it is not a loopback name.

/** Why a request's Host is refused: `malformed` (400) is no authority at all or more than one Host; `not-loopback` (403) is a well-formed other host. */
export type HostRefusal = "malformed" | "not-loopback"

const IPV6_LOOPBACK = "::1"
/** A reg-name (unreserved, pct-encoded, sub-delims) or an IPv4 literal, then an optional port. */
const NAME_AUTHORITY = /^((?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)(?::(\d{1,5}))?$/
/** `[` IPv6 `]`, then an optional port; a zone (`%25lo`) or an IPvFuture is refused by the IPv6 check below. */
const BRACKET_AUTHORITY = /^\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?$/
const IPV4_LOOPBACK = /^127\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/

const portValid = (port: string | undefined): boolean => port === undefined || Number(port) <= 65_535

/**
 * Undefined when `hosts` (every Host header of the request, as node gives them in
 * `headersDistinct.host`) is exactly one authority naming loopback (127.0.0.0/8, localhost, [::1]);
 * otherwise why not.
 */
export const hostRefusal = (hosts: ReadonlyArray<string> | undefined): HostRefusal | undefined => {
  if (hosts === undefined || hosts.length !== 1) return "malformed"
  const host = hosts[0]!
  const bracketed = BRACKET_AUTHORITY.exec(host)
  if (bracketed !== null) {
    if (!portValid(bracketed[2])) return "malformed"
    return bracketed[1] === IPV6_LOOPBACK ? undefined : "not-loopback"
  }
  const named = NAME_AUTHORITY.exec(host)
  if (named === null || !portValid(named[2])) return "malformed"
  const name = named[1]!
  return name.toLowerCase() === "localhost" || IPV4_LOOPBACK.test(name) ? undefined : "not-loopback"
}
