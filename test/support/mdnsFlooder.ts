// A hostile mDNS host for test/discovery/mdns-flood.test.ts: it sends, unasked, answers announcing
// `count` instances of the mesh's service type (PTR, SRV, TXT and A records, `perPacket` instances
// to a packet), then waits. It runs ONLY inside a loopback-only namespace a test created (the
// supervisor checks that; this checks every IPv4 address is 127.x before sending anything).
//
// argv[2]: JSON { count, perPacket, mesh, service, garbage? }: with `garbage`, that many datagrams
// that do not decode as DNS are sent to the mDNS group first.
// stdout: {"type":"ready"}, then {"type":"sent","packets":N} once every packet is out.
import { createSocket } from "node:dgram"
import os from "node:os"
import { createRequire } from "node:module"

const write = (line: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(line)}\n`)
const foreign = Object.values(os.networkInterfaces()).flatMap((a) => a ?? []).filter((a) => a.family === "IPv4" && !a.address.startsWith("127."))
if (foreign.length > 0) {
  write({ type: "fatal", reason: `not inside a test namespace: ${foreign.map((a) => a.address).join(", ")}` })
  process.exit(3)
}

const { count, perPacket, mesh, service, garbage = 0 } = JSON.parse(process.argv[2] ?? "{}") as { count: number; perPacket: number; mesh: string; service: string; garbage?: number }
type Mdns = { respond: (packet: unknown, callback: (error: unknown) => void) => void; destroy: () => void }
const mdns = (createRequire(import.meta.url)("multicast-dns") as () => Mdns)()
const type = "_iip-mesh._tcp.local"
const txt = (i: number) => [`service=${service}`, `mesh=${mesh}`, `node=flood-${i}`, "weight=1", `addr=127.1.${i >> 8}.${i & 255}`].map((s) => Buffer.from(s))

const records = (i: number) => {
  const fqdn = `${service} flood-${i} 7000 ${mesh}.${type}`
  return [
    { name: type, type: "PTR", ttl: 4500, data: fqdn },
    { name: fqdn, type: "SRV", ttl: 120, data: { priority: 0, weight: 0, port: 7000, target: "flood.local" } },
    { name: fqdn, type: "TXT", ttl: 4500, data: txt(i) }
  ]
}

write({ type: "ready" })
let packets = 0
const sendGarbage = (left: number, done: () => void): void => {
  if (left === 0) return done()
  // A DNS header claiming 65,535 questions, then nothing: multicast-dns cannot decode it.
  socket.send(Buffer.from([0, 0, 0x84, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0]), 5353, "224.0.0.251", () => sendGarbage(left - 1, done))
}
const socket = createSocket({ type: "udp4", reuseAddr: true })
const send = (from: number): void => {
  if (from >= count) {
    write({ type: "sent", packets })
    return
  }
  const answers = []
  for (let i = from; i < Math.min(count, from + perPacket); i++) answers.push(...records(i))
  answers.push({ name: "flood.local", type: "A", ttl: 120, data: "127.0.0.1" })
  mdns.respond({ answers }, () => {
    packets += 1
    // Paced (5 ms a packet) so the receiver's socket buffer, not the flood's size, is not what drops them.
    setTimeout(() => send(from + perPacket), 5)
  })
}
sendGarbage(garbage, () => send(0))
process.stdin.resume()
process.stdin.on("end", () => process.exit(0))
