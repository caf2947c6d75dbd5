// One sidecar's mDNS discovery in a child process, for the tests in test/discovery/mdns*.test.ts.
// It runs ONLY inside a network namespace a test created: before touching the network it checks
// that every IPv4 address it can see starts with one of `allowedPrefixes`, and exits otherwise.
//
// argv[2]: JSON { options: MdnsSourceOptions (no timer/log), allowedPrefixes: string[] }
// stdout, one JSON object per line:
//   {"type":"ready","pid":N,"hostname":"..."}          the source has started
//   {"type":"update","update":EndpointUpdate}           each update the source emits
//   {"type":"log","event":"...","fields":{...}}         the source's log (mdns-published, mdns-ignored, ...)
//   {"type":"stopped"}                                  after "stop": goodbye sent, socket closed
//   {"type":"ticked","now":N}                           after "tick" (manual clock only)
// stdin: "stop\n" stops the source (goodbye) and exits; with `manualClock`, "tick <ms>\n" moves the
// clock on by <ms> and runs the source's timer once; end of stdin (the parent is gone) exits at once.
import os from "node:os"
import { createInterface } from "node:readline"
import { MdnsSource, type MdnsSourceOptions, type MdnsTimer } from "../../src/discovery/mdnsSource.ts"
import { exitUnlessInTestNamespace } from "./testNamespaceGuard.ts"

interface ChildConfig {
  readonly options: MdnsSourceOptions
  readonly allowedPrefixes: ReadonlyArray<string>
  /** Drive the source's re-query and expiry by "tick" commands instead of real time. */
  readonly manualClock?: boolean
}

const write = (line: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(line)}\n`)

const config = JSON.parse(process.argv[2] ?? "{}") as ChildConfig
exitUnlessInTestNamespace(config.allowedPrefixes, write)

let clock = 0
const ticks: Array<() => void> = []
const manual: MdnsTimer = {
  now: () => clock,
  every: (_ms, tick) => {
    ticks.push(tick)
    return () => {
      if (ticks.includes(tick)) ticks.splice(ticks.indexOf(tick), 1)
    }
  }
}
const source = new MdnsSource({
  ...config.options,
  ...(config.manualClock === true ? { timer: manual } : {}),
  log: (event, fields) => write({ type: "log", event, fields })
})
const stop = source.start((update) => write({ type: "update", update }))
write({ type: "ready", pid: process.pid, hostname: os.hostname() })

const input = createInterface({ input: process.stdin })
input.on("line", (line) => {
  const [command, argument] = line.trim().split(/\s+/)
  if (command === "tick") {
    clock += Number(argument ?? "0")
    for (const tick of [...ticks]) tick()
    write({ type: "ticked", now: clock })
    return
  }
  if (command !== "stop") return
  stop()
  void source.shutdown().then(() => {
    write({ type: "stopped" })
    process.exit(0)
  })
})
input.on("close", () => process.exit(0))
