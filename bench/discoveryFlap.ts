// Discovery flap bench, pure CPU (no sockets): what one mDNS packet of a flapping instance costs the
// sidecar past the socket, with the service at 10, 100 and 1,000 endpoints. A host on the LAN
// alternates an announce and a goodbye of one instance; each packet, decoded as multicast-dns hands
// it over, goes the source's way (instancesIn, decodeService, MdnsEndpointTable), through Discovery
// and the feed (src/sidecar/discoveryFeed.ts) into the endpoint registry, one packet per event-loop
// turn as from the socket. Two feeds: `every` applies each packet's change to the registry on its
// own (interval 0: the cost of one application, what every packet cost before coalescing), and
// `coalesced` with the default FeedIntervalMs. The figure is process CPU time (user + system) per
// packet, so a loaded machine changes it less than wall time; `pinsAt` is the packet rate that
// would take a whole core: 1 s / the cost per packet, and for `coalesced` after setting aside what
// the worst case of applications costs (one per FeedIntervalMs, each at the `every` row's cost: a
// flood faster than one packet per interval makes that many, however fast it is).
//
//   npm run -s bench -- discoveryFlap            2,000 packets per case
//   npm run -s bench -- discoveryFlap --quick    400 packets per case
// Flags: --packets N.
import { Discovery } from "../src/discovery/discovery.ts"
import { decodeService, instancesIn, MdnsEndpointTable } from "../src/discovery/mdnsSource.ts"
import { FeedIntervalMs, feedRegistry } from "../src/sidecar/discoveryFeed.ts"
import { bareRegistry } from "../test/support/bareRegistry.ts"
import { benchArgs, printSummary } from "./args.ts"

const mesh = "bench"
const fqdn = (i: number): string => `catalog n${i} 7000 ${mesh}._iip-mesh._tcp.local`

/** A response as multicast-dns decodes it: instance `i` announced (PTR, SRV, TXT), or its goodbye (PTR with TTL 0). */
const packet = (i: number, goodbye: boolean) => ({
  answers: [
    { name: "_iip-mesh._tcp.local", type: "PTR", ttl: goodbye ? 0 : 4500, data: fqdn(i) },
    ...(goodbye
      ? []
      : [
          { name: fqdn(i), type: "SRV", ttl: 120, data: { port: 7000, target: `n${i}.local` } },
          { name: fqdn(i), type: "TXT", ttl: 4500, data: [`mesh=${mesh}`, "service=catalog", `addr=10.1.${i >> 8}.${i & 255}`, `node=n${i}`, "weight=1"].map((s) => Buffer.from(s)) }
        ])
  ]
})

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

/** CPU µs per flapping packet with `size` endpoints in the service, feeding with `intervalMs` (undefined: the default). */
const measure = async (size: number, packets: number, intervalMs: number | undefined): Promise<{ readonly cpuUsPerPacket: number; readonly applications: number }> => {
  const discovery = new Discovery({ log: () => {} })
  const registry = bareRegistry()
  let table: MdnsEndpointTable | undefined
  discovery.register({ start: (emit) => ((table = new MdnsEndpointTable(emit, 2500)), () => {}) })
  const stop = feedRegistry(discovery, registry, () => {}, intervalMs === undefined ? {} : { intervalMs })
  let applications = 0
  const set = registry.set.bind(registry)
  registry.set = (service, endpoints) => (applications++, set(service, endpoints))
  const receive = (p: ReturnType<typeof packet>): void => {
    const { goodbyes, seen } = instancesIn(p, { address: "10.1.255.254" })
    for (const name of goodbyes) table!.gone(name, "10.1.255.254", 0)
    for (const service of seen) {
      const decoded = decodeService(service, mesh, "self")
      if (decoded.ok) table!.seen(service.fqdn, decoded.endpoint, 0, "10.1.255.254")
    }
  }
  try {
    for (let i = 0; i < size; i++) receive(packet(i, false))
    await new Promise((resolve) => setTimeout(resolve, (intervalMs ?? 50) + 10))
    if (registry.endpointsOf("catalog").length !== size) throw new Error(`the registry holds ${registry.endpointsOf("catalog").length} of ${size}`)
    const flap = async (count: number): Promise<void> => {
      for (let k = 0; k < count; k++) {
        receive(packet(0, k % 2 === 0))
        await turn()
      }
    }
    await flap(Math.min(400, packets))
    applications = 0
    const before = process.cpuUsage()
    await flap(packets)
    const used = process.cpuUsage(before)
    return { cpuUsPerPacket: (used.user + used.system) / packets, applications }
  } finally {
    stop()
    registry.close()
    discovery.close()
  }
}

export const main = async (args: ReadonlyArray<string>): Promise<void> => {
  const { quick, number } = benchArgs(args)
  const packets = Math.round(number("--packets", quick ? 400 : 2000) / 2) * 2
  const rows: Array<{ size: number; feed: string; cpuUsPerPacket: number; applications: number; pinsAt: number }> = []
  for (const size of [10, 100, 1000]) {
    const every = await measure(size, packets, 0)
    rows.push({ size, feed: "every", cpuUsPerPacket: Math.round(every.cpuUsPerPacket * 10) / 10, applications: every.applications, pinsAt: Math.round(1e6 / every.cpuUsPerPacket) })
    const coalesced = await measure(size, packets, undefined)
    const applicationsCpuUs = (1000 / FeedIntervalMs) * every.cpuUsPerPacket
    rows.push({ size, feed: "coalesced", cpuUsPerPacket: Math.round(coalesced.cpuUsPerPacket * 10) / 10, applications: coalesced.applications, pinsAt: Math.round((1e6 - applicationsCpuUs) / coalesced.cpuUsPerPacket) })
  }
  process.stdout.write(`packets per case: ${packets}\n  size  feed        CPU µs/packet  applications  pins a core at (packets/s)\n`)
  for (const r of rows) process.stdout.write(`${String(r.size).padStart(6)}  ${r.feed.padEnd(10)}  ${String(r.cpuUsPerPacket).padStart(13)}  ${String(r.applications).padStart(12)}  ${String(r.pinsAt).padStart(10)}\n`)
  printSummary({ packets, rows })
}
