// The Host check of the admin control listener without a token (adminServer.ts asks it before any
// route): a request must name a loopback host, so a DNS-rebinding page (a browser on this machine
// made to call the listener as that page's own origin) cannot drive it. Host is parsed strictly
// (protocol/authority.ts): whatever a browser or a proxy makes of `[::1]evil`, it is not a loopback name.
import { parseAuthority } from "../protocol/authority.ts"

/** Why a request's Host is refused: `malformed` (400) is no authority at all or more than one Host; `not-loopback` (403) is a well-formed other host. */
export type HostRefusal = "malformed" | "not-loopback"

const IPV6_LOOPBACK = "::1"
const IPV4_LOOPBACK = /^127\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/

/**
 * Undefined when `hosts` (every Host header of the request, as node gives them in
 * `headersDistinct.host`) is exactly one authority naming loopback (127.0.0.0/8, localhost, [::1]);
 * otherwise why not.
 */
export const hostRefusal = (hosts: ReadonlyArray<string> | undefined): HostRefusal | undefined => {
  if (hosts === undefined || hosts.length !== 1) return "malformed"
  const authority = parseAuthority(hosts[0]!)
  if (authority === undefined) return "malformed"
  const { host, bracketed } = authority
  if (bracketed) return host === IPV6_LOOPBACK ? undefined : "not-loopback"
  return host.toLowerCase() === "localhost" || IPV4_LOOPBACK.test(host) ? undefined : "not-loopback"
}
