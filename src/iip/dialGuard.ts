// The check an IIP client's dial (clientDial.ts) makes, when asked to, on the address it is about to
// connect to, after name resolution: an endpoint learned from another host (mDNS, DNS SRV,
// Kubernetes) must never make this host dial itself. A name can resolve to loopback whatever the
// discovery source checked about its text (an attacker's `evil.example` -> 127.0.0.1, a spoofed SRV
// answer), so the check runs on what the connect would use: an IP literal as given, a name through
// net.connect's `lookup` hook, before any socket is opened. The same hook refuses this process's own
// listeners for any endpoint (ownListeners.ts).
import * as dns from "node:dns"
import { BlockList, isIP, type LookupFunction } from "node:net"
import type { SelfDialCheck } from "./ownListeners.ts"

/** Addresses that name whichever host dials them: loopback and "this network" / unspecified (0.0.0.0/8, ::). */
const thisHost = new BlockList()
thisHost.addSubnet("127.0.0.0", 8, "ipv4")
thisHost.addSubnet("0.0.0.0", 8, "ipv4")
thisHost.addAddress("::1", "ipv6")
thisHost.addAddress("::", "ipv6")

/** Addresses no TCP connection goes to: multicast and the limited broadcast. */
const notUnicast = new BlockList()
notUnicast.addSubnet("224.0.0.0", 4, "ipv4")
notUnicast.addAddress("255.255.255.255", "ipv4")
notUnicast.addSubnet("ff00::", 8, "ipv6")

/**
 * The cloud metadata service (AWS, GCP, Azure: 169.254.169.254; AWS over IPv6: fd00:ec2::254). The
 * rest of link-local stays allowed: zeroconf peers on a link without DHCP live in 169.254.0.0/16.
 */
const metadata = new BlockList()
metadata.addAddress("169.254.169.254", "ipv4")
metadata.addAddress("fd00:ec2::254", "ipv6")

/** Whether `address` is an IP address in `list` (BlockList reads IPv4-mapped IPv6 as its IPv4). */
const inList = (list: BlockList, address: string): boolean => {
  const family = isIP(address)
  return family !== 0 && list.check(address, family === 4 ? "ipv4" : "ipv6")
}

/** Whether `address` (an IP address) is this host's, whoever dials it (mDNS's announced-host check too). */
export const isThisHostAddress = (address: string): boolean => inList(thisHost, address)

/** Whether `address` (an IP address) is multicast or broadcast: no peer's. */
export const isNotUnicastAddress = (address: string): boolean => inList(notUnicast, address)

/** Whether `address` (an IP address) is one an endpoint from another host must not be dialled at: this host's, not unicast, or the metadata service. */
export const isNotPeerAddress = (address: string): boolean =>
  isThisHostAddress(address) || isNotUnicastAddress(address) || inList(metadata, address)

/**
 * The host of `url` (a ws:// URL) as the URL parser reads it, which is what the WebSocket client
 * connects to: the parser rewrites IPv4 in forms no IP check reads as one (127.1, 2130706433,
 * 0x7f000001, a trailing dot) to dotted form, then dialled as a literal, with no lookup. Undefined
 * for a URL that does not parse (the WebSocket client fails on it too: nothing is dialled).
 */
export const urlHost = (url: string): string | undefined => {
  let hostname: string
  try {
    hostname = new URL(url).hostname
  } catch {
    return undefined
  }
  return hostname.startsWith("[") ? hostname.slice(1, -1) : hostname
}

/** Whether the host of `url` (a ws:// URL), as the URL parser reads it, is not a peer's address. */
export const isNotPeerUrl = (url: string): boolean => {
  const host = urlHost(url)
  return host !== undefined && isNotPeerAddress(host)
}

/**
 * Why a dial was refused: `not-peer`, an endpoint from another host at an address of this host (or
 * the metadata service); `own-listener`, an address and port where this process itself listens
 * (ownListeners.ts), from any source.
 */
export type DialRefusal = "not-peer" | "own-listener"

/** The error code of a lookup this guard refused (the dial's ConnectFailed says `notPeer`). */
const NotPeerCode = "ENOTPEER"

/** A refusal as node:net reports lookup errors: an Error with a code. */
const notPeerError = (address: string, why: DialRefusal): NodeJS.ErrnoException =>
  Object.assign(new Error(`resolves to ${address}, ${why === "not-peer" ? "not a peer's address" : "where this process itself listens"}`), { code: NotPeerCode })

/**
 * dns.lookup, refusing a name when `refuse` refuses any address it resolves to (`onRefused` is told
 * why first): one such address marks the name as hostile (a mixed answer is a way to win a race), so
 * none of them is tried.
 */
export const guardedLookup = (refuse: (address: string) => DialRefusal | undefined, onRefused: (why: DialRefusal) => void): LookupFunction => (hostname, options, callback) => {
  dns.lookup(hostname, options, (error: NodeJS.ErrnoException | null, address: string | ReadonlyArray<dns.LookupAddress>, family?: number) => {
    if (error !== null) return callback(error, "", 0)
    const list = typeof address === "string" ? [{ address }] : address
    for (const entry of list) {
      const why = refuse(entry.address)
      if (why === undefined) continue
      onRefused(why)
      return callback(notPeerError(entry.address, why), "", 0)
    }
    // The shape asked for: net.connect asks for all addresses (autoSelectFamily) or for one.
    if (typeof address === "string") callback(null, address, family)
    else (callback as unknown as (error: null, addresses: ReadonlyArray<dns.LookupAddress>) => void)(null, address)
  })
}

/** What a dial is guarded by: `peersOnly`, a server from another host; `notSelf`, this process's own listeners. */
export interface DialGuarding {
  readonly peersOnly?: boolean | undefined
  readonly notSelf?: SelfDialCheck | undefined
}

/**
 * Why `guarding` refuses connecting to `address` (an IP address) at `port`: this process's own
 * listener there, or, for a server from another host, an address of this host or the metadata
 * service. Undefined: it may be dialled.
 */
export const dialRefusal = (guarding: DialGuarding, address: string, port: number): DialRefusal | undefined => {
  if (guarding.notSelf?.reaches(address, port) === true) return "own-listener"
  return guarding.peersOnly === true && isNotPeerAddress(address) ? "not-peer" : undefined
}
