// Runs inside a network namespace a test made (`unshare -rn`, test/identity/issuerSources.test.ts)
// whose loopback holds the test's IPv6 addresses: identity issuers (src/identity/issuer.ts) on
// [::]:0, each on a TestClock of its own that nobody moves (no handshake token refills while the
// test looks), and TLS clients bound to the addresses the test names. Before anything it checks
// that every address it can see is loopback or under the test's prefix, and exits otherwise.
//
// argv[2]: the prefix (for example "fd00:77:1a2b:"). stdout, JSON lines:
//   {"type":"ready"}
//   {"type":"started","id":N,"port":P}
//   {"type":"connection","id":N,"outcome":"secured"|"closed"}   a secured connection is held until "release"
//   {"type":"answer","id":N,"status":S,"body":B}
//   {"type":"events","id":N,"events":[{event,fields}...]}
//   {"type":"released","id":N}
//   {"type":"error","id":N,"message":M}  /  {"type":"fatal","reason":R}
// stdin, JSON lines:
//   {"op":"start","id":N,"options":{...}}  an issuer with these IssuerOptions over the defaults
//   {"op":"connect","id":N,"issuer":I,"from":A}  a TLS connection from address A to [A]:port of issuer I (its start's id)
//   {"op":"request","id":N,"issuer":I,"from":A,"method":M,"path":P,"body":B}  an HTTPS request from A to [A]:port
//   {"op":"events","id":N,"issuer":I}  /  {"op":"release","id":N}
// Exits when stdin closes.
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import * as https from "node:https"
import * as net from "node:net"
import os from "node:os"
import * as tls from "node:tls"
import * as Issuer from "../../src/identity/issuer.ts"
import { makeIssuingCa, trustDomain } from "./identityTest.ts"
import { collectLog } from "./meshTest.ts"
import { readJsonLines } from "./netnsProcess.ts"

const out = (data: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(data)}\n`)

const prefix = process.argv[2] ?? ""
const foreign = Object.values(os.networkInterfaces())
  .flatMap((addresses) => addresses ?? [])
  .filter((a) => a.address !== "127.0.0.1" && a.address !== "::1" && !a.address.startsWith(prefix))
if (!/^fd[0-9a-f]{2}:/.test(prefix) || foreign.length > 0) {
  out({ type: "fatal", reason: `not inside the test's namespace (prefix ${JSON.stringify(prefix)}): ${foreign.map((a) => a.address).join(", ")}` })
  process.exit(3)
}

const ca = await makeIssuingCa()

interface RunningIssuer {
  readonly issuer: Issuer.Issuer
  readonly events: ReturnType<typeof collectLog>["events"]
  readonly scope: Scope.Closeable
}

/** An issuer on [::]:0 with `options` over the defaults, on a TestClock of its own built into its scope (nobody moves it). */
const startIssuer = async (options: Partial<Issuer.IssuerOptions>): Promise<RunningIssuer> => {
  const { events, log } = collectLog()
  const scope = await Effect.runPromise(Scope.make())
  const issuer = await Effect.runPromise(
    Effect.gen(function*() {
      const clock = yield* Layer.build(TestClock.layer())
      return yield* Issuer.make({
        ca,
        trustDomain,
        host: "::",
        port: 0,
        ...Issuer.issuerDefaults,
        // Held connections stay held while the test looks, however loaded the machine.
        requestTimeoutMs: 60_000,
        tokenReview: undefined,
        joinTokens: () => [],
        log,
        ...options
      }).pipe(Effect.provide(clock))
    }).pipe(Scope.provide(scope))
  )
  return { issuer, events, scope }
}

const issuers = new Map<number, RunningIssuer>()
const held = new Set<tls.TLSSocket>()
/** Bounds every wait of a command: nothing the test asks for hangs. */
const commandTimeoutMs = 10_000

/** A TLS connection from `from` to `[from]:port`: secured (held), or closed by the issuer before that. */
const connect = (port: number, from: string) =>
  new Promise<"secured" | "closed">((resolve, reject) => {
    const tcp = net.connect({ host: from, port, localAddress: from })
    tcp.on("error", () => {})
    const socket = tls.connect({ socket: tcp, ca: ca.trustBundlePem, checkServerIdentity: () => undefined })
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`no outcome within ${commandTimeoutMs} ms`))
    }, commandTimeoutMs)
    socket.once("secureConnect", () => {
      clearTimeout(timer)
      held.add(socket)
      resolve("secured")
    })
    socket.on("error", () => {})
    tcp.once("close", () => {
      clearTimeout(timer)
      held.delete(socket)
      socket.destroy()
      resolve("closed")
    })
  })

/** One HTTPS request from `from` (its own connection): the status and body. */
const request = (port: number, from: string, method: string, path: string, body: string) =>
  new Promise<{ status: number; body: string }>((resolve, reject) => {
    const sent = https.request({ host: from, port, localAddress: from, method, path, ca: ca.trustBundlePem, checkServerIdentity: () => undefined, agent: false, timeout: commandTimeoutMs }, (response) => {
      let text = ""
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => (text += chunk))
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body: text }))
    })
    sent.on("timeout", () => sent.destroy(new Error(`no answer within ${commandTimeoutMs} ms`)))
    sent.on("error", reject)
    sent.end(body)
  })

const issuerOf = (id: unknown): RunningIssuer => {
  const running = issuers.get(Number(id))
  if (running === undefined) throw new Error(`no issuer ${String(id)}`)
  return running
}

const run = async (command: Record<string, unknown>): Promise<Record<string, unknown>> => {
  const id = command.id
  switch (command.op) {
    case "start": {
      const running = await startIssuer(command.options as Partial<Issuer.IssuerOptions>)
      issuers.set(Number(id), running)
      return { type: "started", id, port: running.issuer.port }
    }
    case "connect":
      return { type: "connection", id, outcome: await connect(issuerOf(command.issuer).issuer.port, String(command.from)) }
    case "request":
      return { type: "answer", id, ...(await request(issuerOf(command.issuer).issuer.port, String(command.from), String(command.method), String(command.path), String(command.body ?? ""))) }
    case "events":
      return { type: "events", id, events: issuerOf(command.issuer).events }
    case "release":
      for (const socket of held) socket.destroy()
      return { type: "released", id }
    default:
      throw new Error(`unknown op ${JSON.stringify(command.op)}`)
  }
}

readJsonLines(process.stdin, (command) => {
  if (command.type === "text") return out({ type: "error", message: `not JSON: ${String(command.text).slice(0, 200)}` })
  run(command).then(out, (error: unknown) => out({ type: "error", id: command.id, message: error instanceof Error ? error.message : String(error) }))
})
process.stdin.once("end", () => {
  for (const socket of held) socket.destroy()
  void Promise.all([...issuers.values()].map((running) => Effect.runPromise(Scope.close(running.scope, Exit.void)))).then(() => process.exit(0))
})
out({ type: "ready" })
