// Statistics of an IIP server (iip-protocol.md §10), counted where the server dispatches a request
// (dispatch.ts) and read through the reference's system paths, which answer only peers on the
// configured allow-list:
//
//   /sys/server_count       the server's Count            /sys/path_count     body: a path; its Count
//   /sys/server_measure     the server's Measure          /sys/path_measure   body: a path; its Measure
//   /sys/statis             the text report ({"time_unit":"microsecond|millisecond|second|nanosecond"})
//   /sys/connection_statis  {"<ip:port>":{"Channels":{"<id>":{"ReceiveQueue":n,"Count":{..}}},"WriteQueue":n,"Count":{..}}}
//
// JSON shapes and field names are the reference's. Counting is plain numbers and typed arrays, no
// timers: a 5-minute slot is cleared when it is next written, by the second it belongs to.
//
// The reference's counting bugs, fixed here:
//   - received packets and bytes were never added at server and path level (always 0): counted;
//   - the server total skipped requests for unregistered paths: every request counts in the
//     total (per-path counts stay for registered exact paths, so the table cannot grow unbounded);
//   - a multi-packet request was measured once per packet: once per request;
//   - the 5-minute sums read 300 of the 301 slots: all of them; and the JSON lists the slots oldest
//     first (index 300 is the current second) instead of in ring order nobody could read;
//   - the 5-minute average divided by range counts, the all-time range averages used the 5-minute
//     durations, and range averages came out in ns whatever the unit: each average is its own
//     duration over its own count, in the unit asked for, 0 when there is nothing to divide.
// What the counters see: a request counts as one packet received and its answer as one sent;
// bytes are the packet header and path plus the body (a plain peer's error JSON for failures). The
// continuation packets of a streamed mesh body and the mesh envelope are not counted. ReceiveQueue
// is the requests of the channel being handled and not answered yet; WriteQueue is the bytes
// waiting in the connection's writer (the reference counts queued packets).
//
// A peer not on the allow-list is answered exactly as for a path that does not exist (102 "handle
// error" to a plain peer, `not_found` in mesh mode): it cannot even tell statistics are there.
import * as Data from "effect/Data"
import * as net from "node:net"
import type { Connection } from "../mux/connection.ts"
import { failure, type IncomingRequest, type Outcome } from "../mux/request.ts"
import { Limits } from "../protocol/constants.ts"
import { MeshErrorCode } from "../protocol/mesh.ts"
import { pathByteLength } from "../protocol/packet.ts"
import { handlerFailedBody, noResponseBody, parseJsonObject, unknownPathBody } from "../protocol/systemMessages.ts"
import type { Handler } from "./dispatch.ts"
import type { Router } from "./router.ts"

export class InvalidStatisticsOptions extends Data.TaggedError("InvalidStatisticsOptions")<{ readonly message: string }> {}

export type TimeUnit = "nanosecond" | "microsecond" | "millisecond" | "second"
const nsPer: Record<TimeUnit, number> = { nanosecond: 1, microsecond: 1e3, millisecond: 1e6, second: 1e9 }

export interface StatisticsOptions {
  /** Peers that may read the statistics paths: IP addresses or CIDRs (IPv4 or IPv6). */
  readonly allow: ReadonlyArray<string>
  /** Unit of the duration ranges of handler paths and the server total (default millisecond, as the reference's). The /sys paths use microseconds, as there. */
  readonly timeUnit?: Exclude<TimeUnit, "nanosecond">
}

export const StatisticsPath = {
  serverCount: "/sys/server_count",
  serverMeasure: "/sys/server_measure",
  pathCount: "/sys/path_count",
  pathMeasure: "/sys/path_measure",
  statis: "/sys/statis",
  connectionStatis: "/sys/connection_statis"
} as const

/** What the statistics read of the server: its live connections. */
export interface LiveConnections {
  readonly connectionCount: number
  readonly sessions: Iterable<{ readonly connection: Connection }>
  readonly meshSessions: Iterable<{ readonly connection: Connection }>
}

/** The reference's Count, field names and all. */
export class Count {
  packetsSent = 0
  packetsReceived = 0
  wholeSent = 0
  wholeReceived = 0
  bytesSent = 0
  bytesReceived = 0

  received(bytes: number): void {
    this.packetsReceived++
    this.wholeReceived++
    this.bytesReceived += bytes
  }

  sent(bytes: number): void {
    this.packetsSent++
    this.wholeSent++
    this.bytesSent += bytes
  }

  toJSON() {
    return {
      PacketsSent: this.packetsSent,
      PacketReceived: this.packetsReceived,
      WholePacketSent: this.wholeSent,
      WholePacketReceived: this.wholeReceived,
      BytesSent: this.bytesSent,
      BytesReceived: this.bytesReceived
    }
  }
}

const SLOTS = 301
const RANGES = 8
/** Upper bounds of the first seven duration ranges, in the measure's unit; the eighth is the rest. */
const rangeLimits = [100, 200, 300, 500, 700, 1000, 1500]

const rangeOf = (value: number): number => {
  for (let r = 0; r < rangeLimits.length; r++) if (value <= rangeLimits[r]!) return r
  return RANGES - 1
}

/** The ranges of a slot that holds nothing. */
const noRanges = new Float64Array(RANGES * 2)

type RangeCounts = Array<{ readonly Duration: number; readonly Count: number }>

/** The reference's Measure: 301 one-second slots (the last 5 minutes) and all-time totals, durations in ns. */
export class Measure {
  private readonly stamps = new Float64Array(SLOTS).fill(-1)
  private readonly requests = new Float64Array(SLOTS)
  private readonly durations = new Float64Array(SLOTS)
  /** Per slot, per range: duration then count. */
  private readonly ranges = new Float64Array(SLOTS * RANGES * 2)
  private allRequests = 0
  private allDuration = 0
  private readonly allRanges = new Float64Array(RANGES * 2)
  private readonly unitNs: number

  constructor(unit: TimeUnit) {
    this.unitNs = nsPer[unit]
  }

  add(second: number, ns: number): void {
    const slot = second % SLOTS
    if (this.stamps[slot] !== second) {
      this.stamps[slot] = second
      this.requests[slot] = 0
      this.durations[slot] = 0
      this.ranges.fill(0, slot * RANGES * 2, (slot + 1) * RANGES * 2)
    }
    const at = rangeOf(Math.floor(ns / this.unitNs)) * 2
    this.requests[slot]!++
    this.durations[slot]! += ns
    this.ranges[slot * RANGES * 2 + at]! += ns
    this.ranges[slot * RANGES * 2 + at + 1]!++
    this.allRequests++
    this.allDuration += ns
    this.allRanges[at]! += ns
    this.allRanges[at + 1]!++
  }

  /** The slot of `second` if it still holds that second, else -1. */
  private slotOf(second: number): number {
    const slot = second % SLOTS
    return this.stamps[slot] === second ? slot : -1
  }

  private rangesAt(source: Float64Array, offset: number): RangeCounts {
    return Array.from({ length: RANGES }, (_, r) => ({ Duration: source[offset + r * 2]!, Count: source[offset + r * 2 + 1]! }))
  }

  /** The reference's JSON shape; slot i is the second `now - 300 + i`. */
  toJSON(now: number) {
    const requests: Array<number> = []
    const durations: Array<number> = []
    const timecount: Array<{ range_count: RangeCounts }> = []
    for (let i = 0; i < SLOTS; i++) {
      const slot = this.slotOf(now - (SLOTS - 1) + i)
      requests.push(slot === -1 ? 0 : this.requests[slot]!)
      durations.push(slot === -1 ? 0 : this.durations[slot]!)
      timecount.push({ range_count: slot === -1 ? this.rangesAt(noRanges, 0) : this.rangesAt(this.ranges, slot * RANGES * 2) })
    }
    return {
      five_minute_requests: requests,
      five_minute_duration: durations,
      all_requests: this.allRequests,
      all_duration: this.allDuration,
      five_minute_timecount: timecount,
      all_timecount: { range_count: this.rangesAt(this.allRanges, 0) }
    }
  }

  /** The reference's text block, averages in `unit`. */
  report(now: number, unit: TimeUnit): string {
    const per = nsPer[unit]
    const average = (duration: number, count: number) => (count === 0 ? 0 : Math.floor(duration / count / per))
    let requests5 = 0
    let duration5 = 0
    const ranges5 = new Float64Array(RANGES * 2)
    for (let second = now - (SLOTS - 1); second <= now; second++) {
      const slot = this.slotOf(second)
      if (slot === -1) continue
      requests5 += this.requests[slot]!
      duration5 += this.durations[slot]!
      for (let i = 0; i < RANGES * 2; i++) ranges5[i]! += this.ranges[slot * RANGES * 2 + i]!
    }
    const line = (ranges: Float64Array, total: number) =>
      Array.from({ length: RANGES }, (_, r) => {
        const count = ranges[r * 2 + 1]!
        const name = r === RANGES - 1 ? "other" : `range${r + 1}`
        return `${name}(${count},${total === 0 ? 0 : Math.floor((count * 100) / total)}%, average ${average(ranges[r * 2]!, count)})`
      }).join(", ")
    return [
      "",
      `5 minute requests     : ${requests5}, average duration: ${average(duration5, requests5)}`,
      `all requests          : ${this.allRequests}, average duration: ${average(this.allDuration, this.allRequests)}`,
      `5 minute timecount    : ${line(ranges5, requests5)}`,
      `all timecount         : ${line(this.allRanges, this.allRequests)}`,
      ""
    ].join("\n")
  }
}

interface PathStatistics {
  readonly count: Count
  readonly measure: Measure
}

interface ChannelStatistics {
  readonly count: Count
  /** Requests received and not answered yet. */
  open: number
}

interface ConnectionStatistics {
  readonly count: Count
  readonly channels: Map<number, ChannelStatistics>
}

const headerBytes = (path: string) => Limits.packetOverhead + pathByteLength(path)

/** Bytes of the packet that answers `outcome` (as a plain peer receives it). */
const answerBytes = (path: string, outcome: Outcome): number => {
  if (outcome instanceof Uint8Array) return headerBytes(path) + (outcome.length > 0 ? outcome.length : noResponseBody.length)
  if (outcome._tag === "Reply") return headerBytes(path) + (outcome.body instanceof Uint8Array ? outcome.body.length : 0)
  const body =
    outcome.code === MeshErrorCode.notFound ? unknownPathBody : outcome.code === MeshErrorCode.noResponse ? noResponseBody : handlerFailedBody(outcome.message)
  return headerBytes(path) + body.length
}

const allowList = (entries: ReadonlyArray<string>): net.BlockList => {
  const list = new net.BlockList()
  for (const entry of entries) {
    const [address, prefix, extra] = entry.trim().split("/")
    const family = net.isIPv4(address ?? "") ? "ipv4" : net.isIPv6(address ?? "") ? "ipv6" : undefined
    const bits = prefix === undefined ? undefined : Number(prefix)
    const maxBits = family === "ipv4" ? 32 : 128
    if (family === undefined || extra !== undefined || (bits !== undefined && !(Number.isInteger(bits) && bits >= 0 && bits <= maxBits))) {
      throw new InvalidStatisticsOptions({ message: `statistics allow-list entry ${JSON.stringify(entry)} is not an IP address or CIDR (like 127.0.0.1 or 10.0.0.0/8)` })
    }
    if (bits === undefined) list.addAddress(address!, family)
    else list.addSubnet(address!, bits, family)
  }
  return list
}

/** The IP of an "ip:port" remote address. */
const ipOf = (remote: string): string => remote.slice(0, remote.lastIndexOf(":"))

const second = (now: number) => Math.floor((performance.timeOrigin + now) / 1000)

export class ServerStatistics {
  readonly total = new Count()
  private readonly measure: Measure
  private readonly paths = new Map<string, PathStatistics>()
  private readonly connections = new Map<string, ConnectionStatistics>()
  private readonly allowed: net.BlockList
  private readonly unit: TimeUnit
  private readonly router: Router<Handler>
  private readonly live: LiveConnections
  /** What a registered path that has seen no request reads as (made on first need). */
  private none: PathStatistics | undefined

  /** Registers the statistics paths on `router`; throws InvalidStatisticsOptions on a bad allow-list. */
  constructor(options: StatisticsOptions, router: Router<Handler>, live: LiveConnections) {
    this.allowed = allowList(options.allow)
    this.unit = options.timeUnit ?? "millisecond"
    this.measure = new Measure(this.unit)
    this.router = router
    this.live = live
    const guarded = (answer: (request: IncomingRequest) => Outcome) => (request: IncomingRequest): Outcome =>
      this.mayRead(request.remoteAddress) ? answer(request) : failure(MeshErrorCode.notFound, `no handler for ${request.path}`, false)
    const json = (value: unknown): Outcome => Buffer.from(JSON.stringify(value), "utf8")
    const ofPath = (read: (stats: PathStatistics) => unknown) => (request: IncomingRequest): Outcome => {
      const path = request.data.toString("utf8")
      if (!router.has(path)) return failure(MeshErrorCode.handlerFailed, `path [${path}] not support`, true)
      return json(read(this.readPath(path)))
    }
    router.add(StatisticsPath.serverCount, guarded(() => json(this.total)))
    router.add(StatisticsPath.serverMeasure, guarded(() => json(this.measure.toJSON(second(performance.now())))))
    router.add(StatisticsPath.pathCount, guarded(ofPath((stats) => stats.count)))
    router.add(StatisticsPath.pathMeasure, guarded(ofPath((stats) => stats.measure.toJSON(second(performance.now())))))
    router.add(StatisticsPath.statis, guarded((request) => Buffer.from(this.report(request.data), "utf8")))
    router.add(StatisticsPath.connectionStatis, guarded(() => json(this.connectionReport())))
  }

  /** Whether the peer at `remote` ("ip:port") may read the statistics. */
  mayRead(remote: string): boolean {
    const ip = ipOf(remote)
    return this.allowed.check(ip, net.isIPv6(ip) ? "ipv6" : "ipv4")
  }

  /** A request arrives; returns the time to hand to `end`. */
  begin(request: IncomingRequest): number {
    const bytes = headerBytes(request.rawPath) + request.data.length
    this.total.received(bytes)
    if (this.router.has(request.path)) this.pathStatistics(request.path).count.received(bytes)
    const channel = this.channelStatistics(request)
    channel.count.received(bytes)
    channel.open++
    return performance.now()
  }

  /** A request is answered with `outcome` (nothing is sent for a push); gives the outcome back. */
  end(request: IncomingRequest, started: number, outcome: Outcome): Outcome {
    const now = performance.now()
    const ns = Math.round((now - started) * 1e6)
    const at = second(now)
    const bytes = request.context.oneway ? 0 : answerBytes(request.path, outcome)
    this.measure.add(at, ns)
    if (bytes > 0) this.total.sent(bytes)
    if (this.router.has(request.path)) {
      const path = this.pathStatistics(request.path)
      path.measure.add(at, ns)
      if (bytes > 0) path.count.sent(bytes)
    }
    const channel = this.channelStatistics(request)
    channel.open--
    if (bytes > 0) channel.count.sent(bytes)
    return outcome
  }

  private pathStatistics(path: string): PathStatistics {
    let stats = this.paths.get(path)
    if (stats === undefined) {
      const system = path.startsWith("/sys/")
      stats = { count: new Count(), measure: new Measure(system ? "microsecond" : this.unit) }
      this.paths.set(path, stats)
    }
    return stats
  }

  private readPath(path: string): PathStatistics {
    return this.paths.get(path) ?? (this.none ??= { count: new Count(), measure: new Measure(this.unit) })
  }

  private channelStatistics(request: IncomingRequest): ChannelStatistics {
    const remote = request.remoteAddress
    let connection = this.connections.get(remote)
    if (connection === undefined) {
      if (this.connections.size > 2 * this.live.connectionCount + 16) this.forgetClosed()
      connection = { count: new Count(), channels: new Map() }
      this.connections.set(remote, connection)
    }
    let channel = connection.channels.get(request.channelId)
    if (channel === undefined) {
      channel = { count: new Count(), open: 0 }
      connection.channels.set(request.channelId, channel)
    }
    return channel
  }

  private liveConnections(): Array<Connection> {
    return [...this.live.sessions, ...this.live.meshSessions].map((session) => session.connection)
  }

  /** Drops the counts of connections that are gone. */
  private forgetClosed(): void {
    const open = new Set(this.liveConnections().map((connection) => connection.remoteAddress))
    for (const remote of this.connections.keys()) if (!open.has(remote)) this.connections.delete(remote)
  }

  private connectionReport() {
    this.forgetClosed()
    const report: Record<string, unknown> = {}
    for (const connection of this.liveConnections()) {
      const stats = this.connections.get(connection.remoteAddress)
      const total = new Count()
      const channels: Record<string, unknown> = {}
      for (const [id, channel] of stats?.channels ?? []) {
        channels[id] = { ReceiveQueue: channel.open, Count: channel.count }
        for (const key of ["packetsSent", "packetsReceived", "wholeSent", "wholeReceived", "bytesSent", "bytesReceived"] as const) total[key] += channel.count[key]
      }
      report[connection.remoteAddress] = { Channels: channels, WriteQueue: connection.writer.pendingBytes, Count: total }
    }
    return report
  }

  /** The `/sys/statis` text: totals, then each registered path (sorted), averages in the unit asked for. */
  private report(body: Buffer): string {
    const asked = parseJsonObject(body)?.time_unit
    const unit: TimeUnit = typeof asked === "string" && asked in nsPer ? (asked as TimeUnit) : "microsecond"
    const now = second(performance.now())
    let text = `total count: ${JSON.stringify(this.total)}\n`
    text += `total measure: \n${this.measure.report(now, unit)}\n-----------------------------------\n`
    for (const path of this.router.paths.filter((p) => this.router.has(p)).sort()) {
      const stats = this.readPath(path)
      text += `${path} count: ${JSON.stringify(stats.count)}\n`
      text += `${path} measure: \n${stats.measure.report(now, unit)}\n\n`
    }
    return text
  }
}
