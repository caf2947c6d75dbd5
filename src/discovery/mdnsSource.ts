// Discovery by mDNS / DNS-SD (bonjour-service): each sidecar announces its service under the
// service type "_iip-mesh._tcp.local" and browses for the others, with no control plane.
//
// TXT record of an announcement (all values strings; empty ones are left out):
//   service  the mesh service name        weight   relative share of traffic (integer >= 1)
//   version  the app's version (subset) zone     locality (zone, rack...)
//   node     the sidecar's id             mesh     the mesh name: records of another mesh are ignored
//   proto    the IIP mesh protocol version features  comma-separated protocol features
//   addr     the address the sidecar really listens on (the endpoint's host)
//   id       the SPIFFE ID the sidecar presents over mutual TLS (absent without credentials)
//   admin    the port of the sidecar's admin control listener on the same address (federation)
// When `addr` is absent the browser uses the source address of the mDNS answer.
//
// Instance names are "<service> <node> <port> <mesh>" (dots turned into "-", clamped to 63 bytes
// with a hash), unique by construction, so probing is off by default: a new publisher is seen in
// milliseconds instead of about a second.
//
// Browsing reads multicast-dns responses directly (instancesIn), not through bonjour-service's
// browser, whose cost per answer grows with every instance it ever saw: any host on the link can
// announce, so a packet must cost time in proportion to its size only. Liveness: nothing expires by
// itself (a SIGKILLed publisher would stay listed forever). Every `queryIntervalMs` this source sends
// a PTR query (every live publisher answers it) and drops the endpoints nobody re-confirmed within
// `silenceMs`. A goodbye (unpublishAll on stop) removes an endpoint at once. With the defaults (1000 / 2500 ms) a killed
// publisher is dropped 1.5–3.5 s after its death, and a host that comes back is listed again within
// about one interval. A live instance is held by the address its answers come from: goodbyes and
// answers for its name from another address are refused and counted (mdns-spoofed, MdnsEndpointTable).
//
// Time: `timer` ({ now, every }; default performance.now and setInterval) drives the re-query and
// the silence check, so a test can move time by hand (test/support/netnsMdnsChild.ts "tick"). The
// liveness rules themselves live in MdnsEndpointTable, which takes the time as an argument and is
// tested with no network and no timers.
import os from "node:os"
import { createHash } from "node:crypto"
import { createRequire } from "node:module"
import { isIP } from "node:net"
import type Bonjour from "bonjour-service"
import { isSubsetLabel } from "../balancer/subsets.ts"
import { parseSpiffeId } from "../identity/spiffe.ts"
import { isNotUnicastAddress, isThisHostAddress } from "../iip/dialGuard.ts"
import { MeshVersion } from "../protocol/mesh.ts"
import { clampWeight, type DiscoveredEndpoint, type DiscoverySource, type EndpointUpdate, endpointKey, isHost, isNodeId, isServiceName, validPort } from "./types.ts"

export const MdnsServiceType = "iip-mesh"
export const MdnsDefaults = { queryIntervalMs: 1000, silenceMs: 2500 } as const

/**
 * The most instances the source tracks at once; further new ones are refused (and logged) until some
 * expire or say goodbye. Any host on the link can announce instances, and mDNS is for one link, where
 * a few hundred sidecars is already much multicast; 4096 (four services at the per-service cap) is
 * far beyond a real mesh and, with every TXT field checked, bounds the table to a few MB.
 */
export const MaxMdnsInstances = 4096

/** The instances an `mdns-expired` line names (it counts them all). */
const MaxExpiredNamesLogged = 5

/** The most features an announcement lists (the mesh protocol announces one). */
const MaxFeatures = 16
const featurePattern = /^[A-Za-z0-9._/-]{1,63}$/

type Log = (event: string, fields: Record<string, unknown>) => void

/** A clock and a repeating timer; `every` returns its cancel. */
export interface MdnsTimer {
  readonly now: () => number
  readonly every: (ms: number, tick: () => void) => () => void
}

export const systemTimer: MdnsTimer = {
  now: () => performance.now(),
  every: (ms, tick) => {
    const handle = setInterval(tick, ms)
    handle.unref()
    return () => clearInterval(handle)
  }
}

/** One service this sidecar announces. */
export interface MdnsAnnouncement {
  readonly service: string
  readonly port: number
  /** The address the sidecar listens on for this service; a wildcard (0.0.0.0, ::) is not announced. */
  readonly address?: string
  readonly weight?: number
  readonly zone?: string
  readonly version?: string
  /** The SPIFFE ID this sidecar presents over mutual TLS (TXT "id"). */
  readonly identity?: string
  /** Defaults to ["mesh/<protocol version>"]. */
  readonly features?: ReadonlyArray<string>
  /** The port of this sidecar's admin control listener (TXT "admin"). */
  readonly adminPort?: number
}

export interface MdnsSourceOptions {
  /** Keeps meshes on one LAN apart: only records with this mesh name are reported. */
  readonly mesh: string
  /** This sidecar's id (TXT "node"); its own records are not reported unless `includeSelf`. */
  readonly node: string
  readonly announce?: ReadonlyArray<MdnsAnnouncement>
  /** Browse for others (default true); false only announces. */
  readonly browse?: boolean
  readonly includeSelf?: boolean
  /** IPv4 address of the interface to send and join multicast on (default: all interfaces). */
  readonly interface?: string
  /** SRV target host name (default: the machine's host name). */
  readonly host?: string
  /** Probe for name conflicts before announcing (about 1 s); default false. */
  readonly probe?: boolean
  readonly queryIntervalMs?: number
  readonly silenceMs?: number
  /** The most instances tracked at once (default MaxMdnsInstances). */
  readonly maxInstances?: number
  readonly timer?: MdnsTimer
  readonly log?: Log
}

/**
 * This host's own name, as an announced host: /etc/hosts maps it to loopback (127.0.1.1 on Debian,
 * 127.0.0.1 in many containers), and it is no secret (a sidecar's default node id and SRV target
 * carry it). Read when a name is announced: a host name may change while the sidecar runs.
 */
const isOwnHostName = (host: string): boolean => {
  const name = host.endsWith(".") ? host.slice(0, -1) : host
  return name.length > 0 && name.toLowerCase() === os.hostname().toLowerCase()
}

/**
 * A host that names the host dialing it, whoever announced it: a loopback or "this host" address,
 * localhost, or this host's own name. (Any other name may resolve to loopback too: a name is
 * checked as it is announced, not as the resolver answers when the sidecar dials it.)
 */
const isOnThisHost = (host: string): boolean =>
  isIP(host) !== 0 ? isThisHostAddress(host) : /^(?:[^.]+\.)*localhost\.?$/i.test(host) || isOwnHostName(host)

const isWildcard = (address: string | undefined): boolean =>
  address === undefined || address === "" || address === "0.0.0.0" || address === "::" || address === "[::]"

/** "<service> <node> <port> <mesh>" as a DNS label: no dots, at most 63 bytes (clamped with a hash). */
export const instanceName = (mesh: string, node: string, announcement: MdnsAnnouncement): string => {
  const full = `${announcement.service} ${node} ${announcement.port} ${mesh}`.replaceAll(".", "-")
  if (Buffer.byteLength(full) <= 63) return full
  const hash = createHash("sha256").update(full).digest("hex").slice(0, 10)
  let head = full.slice(0, 52)
  while (Buffer.byteLength(head) > 52) head = head.slice(0, -1)
  return `${head}~${hash}`
}

/** The TXT record announcing `announcement`. */
export const encodeTxt = (options: MdnsSourceOptions, announcement: MdnsAnnouncement): Record<string, string> => {
  const txt: Record<string, string> = {
    service: announcement.service,
    weight: String(Math.max(1, Math.round(announcement.weight ?? 1))),
    node: options.node,
    mesh: options.mesh,
    proto: String(MeshVersion),
    features: (announcement.features ?? [`mesh/${MeshVersion}`]).join(",")
  }
  if (announcement.version !== undefined && announcement.version !== "") txt.version = announcement.version
  if (announcement.zone !== undefined && announcement.zone !== "") txt.zone = announcement.zone
  if (announcement.identity !== undefined && announcement.identity !== "") txt.id = announcement.identity
  if (announcement.adminPort !== undefined) txt.admin = String(announcement.adminPort)
  const address = isWildcard(announcement.address) ? options.interface : announcement.address
  if (!isWildcard(address)) txt.addr = address!
  return txt
}

/** What a browser reports about one instance (the parts of bonjour's Service this source reads). */
export interface SeenService {
  readonly fqdn: string
  readonly port: number
  readonly host: string
  readonly txt?: Record<string, unknown>
  readonly referer?: { readonly address: string }
  readonly addresses?: ReadonlyArray<string>
}

export type Decoded =
  | { readonly ok: true; readonly endpoint: DiscoveredEndpoint }
  | { readonly ok: false; readonly reason: "mesh" | "self" | "malformed" | "local-address" }

const text = (txt: Record<string, unknown>, key: string): string | undefined => {
  const value = txt[key]
  return typeof value === "string" && value !== "" ? value : undefined
}

/**
 * The endpoint an answer describes, or why it is not reported. Any host on the link can answer, so
 * each field is checked: a service that is not a DNS label, or a host (TXT addr, else the answer's
 * source) that is not an IP address or host name, or is multicast, makes the record malformed; a
 * host on the receiving host (loopback, 0.0.0.0, ::, localhost, its host name) is refused unless the answer came from
 * this host too (from loopback, or from an address `isOwnAddress` says is this host's; reason
 * "local-address"); the weight is clamped
 * to 1..MaxWeight; a zone, node, version or id that is not of its kind is left out, as are features
 * that are not short labels (at most MaxFeatures kept).
 */
export const decodeService = (seen: SeenService, mesh: string, self: string | undefined, isOwnAddress: (address: string) => boolean = () => false): Decoded => {
  const txt = seen.txt ?? {}
  if (text(txt, "mesh") !== mesh) return { ok: false, reason: "mesh" }
  const announcedNode = text(txt, "node")
  if (self !== undefined && announcedNode === self) return { ok: false, reason: "self" }
  const node = announcedNode !== undefined && isNodeId(announcedNode) ? announcedNode : undefined
  const service = text(txt, "service")
  const port = seen.port
  if (service === undefined || !isServiceName(service) || !Number.isInteger(port) || port <= 0 || port > 65535) return { ok: false, reason: "malformed" }
  const host = text(txt, "addr") ?? seen.referer?.address ?? seen.addresses?.find((a) => !a.includes(":")) ?? seen.host
  if (typeof host !== "string" || !isHost(host) || isNotUnicastAddress(host)) return { ok: false, reason: "malformed" }
  // Announced by another host, a loopback addr would aim this sidecar's mesh traffic at its own app or admin.
  const fromThisHost = seen.referer !== undefined && (isOnThisHost(seen.referer.address) || isOwnAddress(seen.referer.address))
  if (isOnThisHost(host) && !fromThisHost) return { ok: false, reason: "local-address" }
  const weight = clampWeight(Number(text(txt, "weight") ?? "1"))
  const features = (text(txt, "features") ?? "").split(",", MaxFeatures * 4).filter((f) => featurePattern.test(f)).slice(0, MaxFeatures)
  const proto = text(txt, "proto")
  if (proto !== undefined && /^\d{1,5}$/.test(proto) && !features.some((f) => f.startsWith("mesh/"))) features.unshift(`mesh/${proto}`)
  // A version that is not a label is left out: the endpoint then belongs to no subset.
  const announcedVersion = text(txt, "version")
  const version = announcedVersion !== undefined && isSubsetLabel(announcedVersion) ? announcedVersion : undefined
  // A zone is a label value as Kubernetes' topology labels have it (the subset label's alphabet).
  const announcedZone = text(txt, "zone")
  const zone = announcedZone !== undefined && isSubsetLabel(announcedZone) ? announcedZone : undefined
  // An id that is not a SPIFFE ID is left out: the endpoint then needs any identity of the trust domain.
  const identity = text(txt, "id")
  const validIdentity = identity !== undefined && parseSpiffeId(identity) !== undefined ? identity : undefined
  const adminPort = validPort(text(txt, "admin"))
  return {
    ok: true,
    endpoint: {
      service,
      host,
      port,
      weight,
      features: features.slice(0, MaxFeatures),
      source: "mdns",
      // Any other name can resolve to loopback too: from another host, the dial checks the address it gets.
      ...(fromThisHost ? {} : { offHost: true as const }),
      ...(version !== undefined ? { version } : {}),
      ...(zone !== undefined ? { zone } : {}),
      ...(node !== undefined ? { node } : {}),
      ...(validIdentity !== undefined ? { identity: validIdentity } : {}),
      ...(adminPort !== undefined ? { adminPort } : {})
    }
  }
}

const sameEndpoint = (a: DiscoveredEndpoint, b: DiscoveredEndpoint): boolean =>
  a.service === b.service && a.host === b.host && a.port === b.port && a.weight === b.weight && a.zone === b.zone &&
  a.version === b.version && a.node === b.node && a.source === b.source && a.features.join(",") === b.features.join(",") &&
  a.adminPort === b.adminPort && a.offHost === b.offHost

/**
 * The endpoints currently listed, by mDNS instance (fqdn), with the time each was last confirmed and
 * the address its answers come from (its origin). Pure state: `seen` on every answer, `gone` on a
 * goodbye, `sweep` on every tick.
 *
 * mDNS has no authentication: any host on the link can send a goodbye for, or announce, any name.
 * An instance is held by its origin while it is live: another address's goodbye, or its answer for
 * the same name (a name taken over at the sender's address), is refused ("spoofed") until the
 * instance goes silent for `silenceMs`. Otherwise one host sending goodbyes for every other
 * instance would keep them all out of the mesh (they are back only at their next answer, each
 * interval), and one announcing their names would flap them to itself. An instance whose host
 * really moved is taken at its new address once its old one has expired (1.5-3.5 s with the defaults).
 * A host has one origin: the browse socket is IPv4 only (multicast-dns's udp4) and the kernel sends a
 * host's multicast from one address, two interfaces and IPv6 beside IPv4 or not (mdns-multihost.test.ts);
 * browsing over IPv6 as well would give a dual-stack host two, and its own answers would be refused.
 */
export class MdnsEndpointTable {
  private readonly entries = new Map<string, { endpoint: DiscoveredEndpoint; lastSeen: number; origin: string }>()
  private readonly emit: (update: EndpointUpdate) => void
  private readonly silenceMs: number
  private readonly maxInstances: number

  constructor(emit: (update: EndpointUpdate) => void, silenceMs: number, maxInstances = MaxMdnsInstances) {
    this.emit = emit
    this.silenceMs = silenceMs
    this.maxInstances = maxInstances
  }

  get size(): number {
    return this.entries.size
  }

  endpoints(): Array<DiscoveredEndpoint> {
    return [...this.entries.values()].map((entry) => entry.endpoint)
  }

  /**
   * An answer for `fqdn` from `origin` arrived at `now`: "full" when it is new and the table is full
   * (it is not tracked), "spoofed" when another origin holds the instance and it is live (refused).
   */
  seen(fqdn: string, endpoint: DiscoveredEndpoint, now: number, origin: string): "ok" | "full" | "spoofed" {
    const key = fqdn.toLowerCase()
    const entry = this.entries.get(key)
    if (entry === undefined && this.entries.size >= this.maxInstances) return "full"
    if (entry !== undefined && entry.origin !== origin && now - entry.lastSeen <= this.silenceMs) return "spoofed"
    this.entries.set(key, { endpoint, lastSeen: now, origin })
    if (entry === undefined) {
      this.emit({ _tag: "Add", endpoint })
      return "ok"
    }
    const old = entry.endpoint
    if (old.service !== endpoint.service || endpointKey(old) !== endpointKey(endpoint)) {
      this.emit({ _tag: "Remove", service: old.service, key: endpointKey(old) })
      this.emit({ _tag: "Add", endpoint })
    } else if (!sameEndpoint(old, endpoint)) {
      this.emit({ _tag: "Change", endpoint })
    }
    return "ok"
  }

  /**
   * A goodbye (or a record that no longer qualifies) for `fqdn` from `origin`: false, and nothing
   * removed, when another origin holds the instance and it is live (spoofed).
   */
  gone(fqdn: string, origin: string, now: number): boolean {
    const entry = this.entries.get(fqdn.toLowerCase())
    if (entry === undefined) return true
    if (entry.origin !== origin && now - entry.lastSeen <= this.silenceMs) return false
    this.drop(fqdn.toLowerCase())
    return true
  }

  /** Drops every entry not confirmed for more than `silenceMs`; returns the dropped fqdns. */
  sweep(now: number): Array<string> {
    const dropped: Array<string> = []
    for (const [fqdn, entry] of this.entries) if (now - entry.lastSeen > this.silenceMs) dropped.push(fqdn)
    for (const fqdn of dropped) this.drop(fqdn)
    return dropped
  }

  private drop(key: string): void {
    const entry = this.entries.get(key)
    if (entry === undefined) return
    this.entries.delete(key)
    this.emit({ _tag: "Remove", service: entry.endpoint.service, key: endpointKey(entry.endpoint) })
  }
}

/** A resource record as multicast-dns decodes it; from the network, so every field is checked before use. */
interface AnswerRecord {
  readonly name?: unknown
  readonly type?: unknown
  readonly ttl?: unknown
  readonly data?: unknown
}

/** The PTR name every instance of the mesh is listed under. */
const browsedName = `_${MdnsServiceType}._tcp.local`

/** A TXT record's strings as key=value pairs (the last of a key wins); other entries are left out. */
const decodeTxtStrings = (data: unknown): Record<string, string> => {
  const txt: Record<string, string> = Object.create(null) as Record<string, string>
  if (!Array.isArray(data)) return txt
  for (const item of data) {
    if (!Buffer.isBuffer(item) || item.length < 2) continue
    const text = item.toString("utf8")
    const equals = text.indexOf("=")
    if (equals > 0) txt[text.slice(0, equals)] = text.slice(equals + 1)
  }
  return txt
}

/**
 * The instances of the mesh one mDNS response names: goodbyes (PTR with TTL 0) and instances with
 * their SRV (port, target), TXT and the target's addresses from the same packet, as bonjour-service's
 * browser reads them, but with the packet's records indexed by name, so a packet costs time in
 * proportion to its size, never to how many instances are known (bonjour-service's browser looks each
 * answer up in the list of every instance it ever saw: a flood of 8,192 instances pinned a core and
 * its socket dropped most of them).
 */
export const instancesIn = (
  packet: { readonly answers?: unknown; readonly additionals?: unknown },
  referer: { readonly address: string }
): { readonly goodbyes: Array<string>; readonly seen: Array<SeenService> } => {
  const records: Array<AnswerRecord> = []
  for (const list of [packet.answers, packet.additionals]) {
    if (Array.isArray(list)) for (const record of list) if (typeof record === "object" && record !== null && typeof record.name === "string") records.push(record as AnswerRecord)
  }
  const byName = new Map<string, Array<AnswerRecord>>()
  for (const record of records) {
    const key = (record.name as string).toLowerCase()
    const list = byName.get(key)
    if (list === undefined) byName.set(key, [record])
    else list.push(record)
  }
  const goodbyes: Array<string> = []
  const seen = new Map<string, SeenService>()
  // Each instance and each target is read once: many instances on one target of many addresses (or
  // one instance named by many PTRs) would otherwise cost their product (770 x 2,000 in a 64 KB packet: 370 ms).
  const addressesOf = new Map<string, Array<string>>()
  for (const ptr of byName.get(browsedName) ?? []) {
    if (ptr.type !== "PTR" || typeof ptr.data !== "string" || typeof ptr.ttl !== "number") continue
    const fqdn = ptr.data
    if (ptr.ttl === 0) {
      goodbyes.push(fqdn)
      continue
    }
    if (seen.has(fqdn.toLowerCase())) continue
    const own = byName.get(fqdn.toLowerCase()) ?? []
    const srv = own.find((record) => record.type === "SRV" && typeof record.ttl === "number" && record.ttl > 0)?.data as { readonly port?: unknown; readonly target?: unknown } | undefined
    if (typeof srv !== "object" || srv === null || typeof srv.port !== "number" || typeof srv.target !== "string") continue
    const target = srv.target.toLowerCase()
    let addresses = addressesOf.get(target)
    if (addresses === undefined) {
      addresses = (byName.get(target) ?? []).flatMap((record) => ((record.type === "A" || record.type === "AAAA") && typeof record.data === "string" ? [record.data] : []))
      addressesOf.set(target, addresses)
    }
    const txt = own.find((record) => record.type === "TXT")
    seen.set(fqdn.toLowerCase(), { fqdn, port: srv.port, host: srv.target, txt: decodeTxtStrings(txt?.data), referer, addresses })
  }
  return { goodbyes, seen: [...seen.values()] }
}

type BonjourInstance = InstanceType<typeof Bonjour>

/** The parts of multicast-dns (under bonjour-service) the browse uses. */
interface MulticastDns extends NodeJS.EventEmitter {
  query(name: string, type: string): void
}

/** Announces this sidecar's services and reports the mesh's others, as a DiscoverySource. */
export class MdnsSource implements DiscoverySource {
  private readonly options: MdnsSourceOptions
  private readonly timer: MdnsTimer
  private readonly log: Log
  private bonjour: BonjourInstance | undefined
  private closing: Promise<void> | undefined

  constructor(options: MdnsSourceOptions) {
    this.options = options
    this.timer = options.timer ?? systemTimer
    this.log = options.log ?? (() => {})
  }

  start(emit: (update: EndpointUpdate) => void): () => void {
    if (this.bonjour !== undefined || this.closing !== undefined) throw new Error("MdnsSource: start called twice")
    const { options, log, timer } = this
    // multicast-dns options (bonjour-service types them wrongly): send and join on `interface`, but
    // bind the wildcard address, or the socket would not receive multicast.
    const mdnsOptions = options.interface !== undefined ? { interface: options.interface, bind: "0.0.0.0" } : {}
    // bonjour-service (and multicast-dns under it) is loaded here, so only a sidecar with mDNS on loads it.
    const BonjourClass = createRequire(import.meta.url)("bonjour-service") as typeof Bonjour
    const bonjour = new BonjourClass(mdnsOptions as unknown as ConstructorParameters<typeof Bonjour>[0], (error: unknown) => log("mdns-error", { error: String(error) }))
    this.bonjour = bonjour
    // bonjour-service does not listen to its socket's errors; an unhandled "error" would crash the process.
    const mdns = (bonjour as unknown as { server: { mdns: MulticastDns } }).server.mdns
    mdns.on("error", (error: unknown) => log("mdns-error", { error: String(error) }))
    // A warning is a packet that did not decode; any host can send those at line rate, so the log
    // gets the first of each re-query interval and the count of the rest at its end.
    let warnings = 0
    mdns.on("warning", (error: unknown) => {
      if (warnings === 0) log("mdns-warning", { error: String(error).slice(0, 200) })
      warnings += 1
    })

    for (const announcement of options.announce ?? []) {
      const name = instanceName(options.mesh, options.node, announcement)
      const service = bonjour.publish({
        name,
        type: MdnsServiceType,
        protocol: "tcp",
        port: announcement.port,
        host: options.host ?? os.hostname(),
        txt: encodeTxt(options, announcement),
        probe: options.probe ?? false,
        disableIPv6: true
      })
      service.on("up", () => log("mdns-published", { name, service: announcement.service, port: announcement.port }))
      service.on("error", (error: unknown) => log("mdns-error", { name, error: String(error) }))
    }

    if (options.browse === false) return () => void this.shutdown()

    let stopped = false
    const maxInstances = options.maxInstances ?? MaxMdnsInstances
    const table = new MdnsEndpointTable((update) => {
      if (!stopped) emit(update)
    }, options.silenceMs ?? MdnsDefaults.silenceMs, maxInstances)
    // Instances logged as ignored (once each), at most maxInstances of them: a host announcing
    // endless names of another mesh must not grow this set or the log without end.
    const ignored = new Set<string>()
    let full = false
    const self = options.includeSelf === true ? undefined : options.node
    // This host's interface addresses, read again each re-query interval (only a loopback addr asks).
    let ownAddresses: ReadonlySet<string> | undefined
    const isOwnAddress = (address: string): boolean => {
      ownAddresses ??= new Set(Object.values(os.networkInterfaces()).flatMap((list) => (list ?? []).map((entry) => entry.address)))
      return ownAddresses.has(address)
    }
    // Answers and goodbyes for an instance another host holds (MdnsEndpointTable): counted, and
    // logged once per re-query interval (any host can send them at line rate).
    let spoofed = 0
    const onService = (seen: SeenService, origin: string) => {
      // DNS names are at most 255 bytes; what a hostile packet holds beyond that is not logged.
      const fqdn = seen.fqdn.slice(0, 255)
      const decoded = decodeService(seen, options.mesh, self, isOwnAddress)
      if (decoded.ok) {
        const taken = table.seen(seen.fqdn, decoded.endpoint, timer.now(), origin)
        // Logged once per episode: until the table has room again.
        if (taken === "full") {
          if (!full) log("mdns-table-full", { fqdn, limit: maxInstances })
          full = true
        } else if (taken === "spoofed") {
          spoofed += 1
        } else if (table.size < maxInstances) {
          full = false
        }
        return
      }
      if (!table.gone(seen.fqdn, origin, timer.now())) spoofed += 1
      if (decoded.reason !== "self" && !ignored.has(seen.fqdn) && ignored.size < maxInstances) {
        ignored.add(seen.fqdn)
        log("mdns-ignored", { fqdn, reason: decoded.reason })
      }
    }
    // Every response on the link is read: first answers, re-confirmations (every live publisher
    // answers the PTR query sent each interval), updates and goodbyes alike.
    const onResponse = (packet: { readonly answers?: unknown; readonly additionals?: unknown }, rinfo: { readonly address: string }) => {
      const { goodbyes, seen } = instancesIn(packet, { address: rinfo.address })
      for (const fqdn of goodbyes) if (!table.gone(fqdn, rinfo.address, timer.now())) spoofed += 1
      for (const service of seen) onService(service, rinfo.address)
    }
    mdns.on("response", onResponse)
    const query = () => mdns.query(browsedName, "PTR")
    query()
    const cancel = timer.every(options.queryIntervalMs ?? MdnsDefaults.queryIntervalMs, () => {
      ownAddresses = undefined
      query()
      // One line per interval, as the other counts here: a host announcing thousands of instances
      // and falling silent, again and again, made a line per instance (2,000 at once).
      const expired = table.sweep(timer.now())
      if (expired.length > 0) log("mdns-expired", { count: expired.length, fqdns: expired.slice(0, MaxExpiredNamesLogged).map((fqdn) => fqdn.slice(0, 255)) })
      if (warnings > 1) log("mdns-warnings", { count: warnings - 1 })
      warnings = 0
      if (spoofed > 0) log("mdns-spoofed", { count: spoofed })
      spoofed = 0
    })
    return () => {
      stopped = true
      cancel()
      mdns.removeListener("response", onResponse)
      void this.shutdown()
    }
  }

  /**
   * Sends the goodbye for every announced service, then closes the socket. Resolves when done (at
   * most `timeoutMs` later); the function `start` returns calls it without waiting.
   */
  shutdown(timeoutMs = 1000): Promise<void> {
    if (this.closing !== undefined) return this.closing
    const bonjour = this.bonjour
    this.closing = new Promise<void>((resolve) => {
      if (bonjour === undefined) return resolve()
      let done = false
      const finish = () => {
        if (done) return
        done = true
        clearTimeout(fallback)
        bonjour.destroy(() => resolve())
      }
      const fallback = setTimeout(finish, timeoutMs)
      bonjour.unpublishAll(finish)
    })
    return this.closing
  }
}
