// The listening sockets of this process that its own dials must never reach (a sidecar's inbound,
// outbound and admin listeners), checked by an IIP client's dial (clientDial.ts) as the dial guard
// (dialGuard.ts) is: on the address the connect would use, after name resolution. A discovered
// endpoint naming <one of this host's addresses>:<one of these ports> would make the process call
// itself: its admin API, its own outbound listener, or its own inbound for another service's
// traffic (outbound -> own inbound -> app -> outbound ...: a loop for an app that calls on).
// Another process listening on the same address at another port (a second sidecar on this host:
// host networking, the LAN demo) is a peer, and is dialled.
//
// Which addresses reach a listener, as Linux routes a connect: the address it is bound to; for
// one bound to 0.0.0.0, every IPv4 address of this host (loopback's 127/8, each interface's);
// for `::` (dual-stack, as node binds it), every address of this host, IPv6 and IPv4. A connect to
// the unspecified address (0.0.0.0, `::`) goes to loopback. This host's interface addresses are read
// (os.networkInterfaces(), ~100 µs) at most once a second (less often on a host with thousands of
// addresses: READ_COST_FACTOR), and only when a dial's port is one of the listeners' and a wildcard
// listener has it: an address added since (DHCP, a new pod IP) is seen within a second.
import { BlockList, isIP } from "node:net"
import * as os from "node:os"
import { isThisHostAddress } from "./dialGuard.ts"

export interface ListeningAddress {
  /** The address the listener is bound to, as server.address() gives it (`0.0.0.0` and `::` are wildcards). */
  readonly host: string
  readonly port: number
}

/** What a client's dial asks (ClientOptions.notSelf): whether connecting to `address` (an IP address) at `port` lands on one of the listeners. */
export interface SelfDialCheck {
  readonly reaches: (address: string, port: number) => boolean
}

/** At most this often this host's interface addresses are read again. */
export const INTERFACES_REFRESH_MS = 1000

/**
 * A read is repeated no sooner than this many times what it took: reading is O(addresses) and
 * blocks the event loop (5,000 addresses on lo: ~40 ms for os.networkInterfaces(), ~35 ms for the
 * BlockList), so a host with thousands spends at most 1% of its time on it, seeing a new address later.
 */
const READ_COST_FACTOR = 100

/** One listener: which of this host's addresses reach it. */
interface Listener {
  /** Bound to 0.0.0.0: every IPv4 address of this host; to `::`: every address. Undefined: only `exact`. */
  readonly wildcard: "ipv4" | "any" | undefined
  /** Its own address (a bound one) or, for a wildcard, nothing. */
  readonly exact: BlockList
  /** The listener peers are meant to reach (the inbound one): `exceptServing` lets dials reach it. */
  readonly serving: boolean
}

/** The unspecified addresses: a connect to one goes to loopback. */
const unspecified = new BlockList()
unspecified.addAddress("0.0.0.0", "ipv4")
unspecified.addAddress("::", "ipv6")

/** IPv4-mapped IPv6 (`::ffff:a.b.c.d`): an IPv4 address to a dual-stack socket. */
const mapped = new BlockList()
mapped.addSubnet("::ffff:0:0", 96, "ipv6")

const familyOf = (address: string): "ipv4" | "ipv6" => (isIP(address) === 4 ? "ipv4" : "ipv6")

/** This host's interface addresses (IPv6 link-local without their zone: `%eth0` names no other host). */
const readInterfaces = (): BlockList => {
  const list = new BlockList()
  for (const addresses of Object.values(os.networkInterfaces())) {
    for (const entry of addresses ?? []) {
      const address = entry.address.split("%")[0]!
      if (isIP(address) !== 0) list.addAddress(address, familyOf(address))
    }
  }
  return list
}

export interface OwnListenersOptions {
  /** Monotonic ms (tests drive it); default performance.now. */
  readonly now?: () => number
  /** This host's interface addresses (tests give their own); default os.networkInterfaces(). */
  readonly interfaces?: () => BlockList
}

export class OwnListeners {
  private readonly byPort = new Map<number, Array<Listener>>()
  private readonly now: () => number
  private readonly readAddresses: () => BlockList
  private local: BlockList | undefined
  /** When this host's addresses may be read again. */
  private nextReadAt = 0
  /** Every listener: for a dial nothing of this process is meant to take. */
  readonly all: SelfDialCheck = { reaches: (address, port) => this.reaches(address, port, true) }
  /** Every listener but the serving ones: for a dial to this process's own service (the app calling itself through its own inbound). */
  readonly exceptServing: SelfDialCheck = { reaches: (address, port) => this.reaches(address, port, false) }

  constructor(options: OwnListenersOptions = {}) {
    this.now = options.now ?? (() => performance.now())
    this.readAddresses = options.interfaces ?? readInterfaces
  }

  /** A listener of this process, bound (its address from server.address()); `serving`: the one peers are meant to reach. */
  add(listener: ListeningAddress, serving = false): void {
    const host = listener.host.split("%")[0]!
    if (isIP(host) === 0) return // not bound to an address (a pipe): no dial reaches it
    const exact = new BlockList()
    const wildcard = unspecified.check(host, familyOf(host)) ? (isIP(host) === 4 ? "ipv4" : "any") : undefined
    if (wildcard === undefined) exact.addAddress(host, familyOf(host))
    let listeners = this.byPort.get(listener.port)
    if (listeners === undefined) {
      listeners = []
      this.byPort.set(listener.port, listeners)
    }
    listeners.push({ wildcard, exact, serving })
  }

  private reaches(address: string, port: number, serving: boolean): boolean {
    const listeners = this.byPort.get(port)
    if (listeners === undefined) return false
    let target = address.split("%")[0]!
    if (isIP(target) === 0) return false
    // A connect to the unspecified address goes to loopback (IPv4's to 127.0.0.1, IPv6's to ::1).
    if (unspecified.check(target, familyOf(target))) target = isIP(target) === 4 || mapped.check(target, "ipv6") ? "127.0.0.1" : "::1"
    const family = familyOf(target)
    for (const listener of listeners) {
      if (listener.serving && !serving) continue
      if (listener.wildcard === undefined) {
        if (listener.exact.check(target, family)) return true
        continue
      }
      // A 0.0.0.0 listener takes IPv4 only (an IPv4-mapped address is IPv4 on the wire).
      if (listener.wildcard === "ipv4" && family === "ipv6" && !mapped.check(target, "ipv6")) continue
      if (this.isLocal(target, family)) return true
    }
    return false
  }

  /** Whether `address` is one of this host's: loopback (and 0/8), or an interface's. */
  private isLocal(address: string, family: "ipv4" | "ipv6"): boolean {
    if (isThisHostAddress(address)) return true
    const at = this.now()
    if (this.local === undefined || at >= this.nextReadAt) {
      try {
        this.local = this.readAddresses()
      } catch {
        // os.networkInterfaces() throws where uv_interface_addresses fails (some sandboxes). This
        // runs inside a dial and inside dns.lookup's callback, where a throw would end the dial's
        // fiber or the process: keep the addresses last read (loopback is checked without them) and
        // read again a second later. Refusing every such dial instead would refuse every peer on
        // another host that listens at the same port, as a mesh's sidecars usually do.
        this.local ??= new BlockList()
      }
      this.nextReadAt = at + Math.max(INTERFACES_REFRESH_MS, READ_COST_FACTOR * (this.now() - at))
    }
    return this.local.check(address, family)
  }
}
