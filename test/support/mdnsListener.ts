// A bystander mDNS host for test/discovery/mdns-multihost.test.ts: it asks for the mesh's instances
// (a PTR query) `count` times, `everyMs` apart, and counts the answers naming `fqdn` by the address
// they came from, so a test sees which addresses one host's answers carry (a host with two
// interfaces and IPv6 beside IPv4 must answer from one). It runs ONLY inside a network namespace a
// test created: it checks that every IPv4 address it sees starts with one of `allowedPrefixes` first.
//
// argv[2]: JSON { fqdn, count, everyMs, allowedPrefixes }
// stdout: {"type":"heard","origins":{address: answers}} once the last query's interval is over.
import { createRequire } from "node:module"
import { exitUnlessInTestNamespace } from "./testNamespaceGuard.ts"

interface ListenerConfig {
  readonly fqdn: string
  readonly count: number
  readonly everyMs: number
  readonly allowedPrefixes: ReadonlyArray<string>
}

const write = (line: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(line)}\n`)
const config = JSON.parse(process.argv[2] ?? "{}") as ListenerConfig
exitUnlessInTestNamespace(config.allowedPrefixes, write)

type Answer = { readonly name?: unknown; readonly data?: unknown }
type Mdns = NodeJS.EventEmitter & { query: (name: string, type: string) => void; destroy: () => void }
const mdns = (createRequire(import.meta.url)("multicast-dns") as (options: unknown) => Mdns)({})
const type = "_iip-mesh._tcp.local"
const origins: Record<string, number> = {}
mdns.on("response", (packet: { readonly answers?: ReadonlyArray<Answer> }, rinfo: { readonly address: string }) => {
  if (packet.answers?.some((answer) => answer.name === type && answer.data === config.fqdn) === true) origins[rinfo.address] = (origins[rinfo.address] ?? 0) + 1
})
let queries = 0
const timer = setInterval(() => {
  if (queries === config.count) {
    clearInterval(timer)
    write({ type: "heard", origins })
    return
  }
  mdns.query(type, "PTR")
  queries += 1
}, config.everyMs)
process.stdin.resume()
process.stdin.on("end", () => process.exit(0))
