// A hostile mDNS host for test/discovery/mdns-multihost.test.ts: it speaks for ANOTHER host's
// instance. It sends, unasked, `count` packets `everyMs` apart, each either a goodbye (PTR with
// TTL 0) for `fqdn`, or an announcement of `fqdn` with this host's own address and `port` (the
// instance's name taken over). It runs ONLY inside a network namespace a test created: it checks
// that every IPv4 address it sees starts with one of `allowedPrefixes` before sending anything.
//
// argv[2]: JSON { fqdn, kind: "goodbye" | "takeover", count, everyMs, mesh, service, port?, address?, allowedPrefixes }
// stdout: {"type":"ready"}, then {"type":"sent","packets":N} once every packet is out.
import { createRequire } from "node:module"
import { exitUnlessInTestNamespace } from "./testNamespaceGuard.ts"

interface SpooferConfig {
  readonly fqdn: string
  readonly kind: "goodbye" | "takeover"
  readonly count: number
  readonly everyMs: number
  readonly mesh: string
  readonly service: string
  readonly port?: number
  readonly address?: string
  readonly allowedPrefixes: ReadonlyArray<string>
}

const write = (line: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(line)}\n`)
const config = JSON.parse(process.argv[2] ?? "{}") as SpooferConfig
exitUnlessInTestNamespace(config.allowedPrefixes, write)

type Mdns = { respond: (packet: unknown, callback: (error: unknown) => void) => void; destroy: () => void }
const mdns = (createRequire(import.meta.url)("multicast-dns") as (options: unknown) => Mdns)(
  config.address === undefined ? {} : { interface: config.address, bind: "0.0.0.0" }
)
const type = "_iip-mesh._tcp.local"
const packet = () =>
  config.kind === "goodbye"
    ? { answers: [{ name: type, type: "PTR", ttl: 0, data: config.fqdn }] }
    : {
        answers: [
          { name: type, type: "PTR", ttl: 4500, data: config.fqdn },
          { name: config.fqdn, type: "SRV", ttl: 120, data: { priority: 0, weight: 0, port: config.port ?? 7000, target: "spoofer.local" } },
          { name: config.fqdn, type: "TXT", ttl: 4500, data: [`service=${config.service}`, `mesh=${config.mesh}`, `addr=${config.address}`].map((s) => Buffer.from(s)) }
        ]
      }

write({ type: "ready" })
let packets = 0
const send = (): void => {
  if (packets >= config.count) {
    write({ type: "sent", packets })
    return
  }
  mdns.respond(packet(), () => {
    packets += 1
    setTimeout(send, config.everyMs)
  })
}
send()
process.stdin.resume()
process.stdin.on("end", () => process.exit(0))
