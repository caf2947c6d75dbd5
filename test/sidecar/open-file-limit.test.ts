// A sidecar whose process may open few files (`ulimit -n 256`) against a client that opens
// connections to its inbound (mesh) port until none are left, sending nothing. Each connection is a
// file descriptor; the inbound listener's cap (1,000) and its eviction of connections that proved
// nothing never came into play under such a limit: accept failed with EMFILE first (libuv closes
// the connections it cannot take), so an honest peer's connection, the kubelet's /health probe and
// the app's own calls were all dropped until the attacker let go. The sidecar now fits its listeners'
// caps into the limit at start (fileLimit.ts): the inbound cap bites first, newcomers evict the
// idle connections, and the other listeners and the dials keep descriptors of their own.
import * as http from "node:http"
import * as net from "node:net"
import type { AddressInfo } from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { holdsStarts } from "../support/childStart.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { call } from "../support/sidecarHarness.ts"
import { killIfRunning, portOf, type SidecarProcess, spawnSidecarProcess } from "../support/sidecarProcess.ts"

const FILE_LIMIT = 256
const ATTACKER_CONNECTIONS = 400

/** Asks until an answer is 200 (each try at most 1 s), for at most `withinMs`; the last status or error. */
const untilOk = async (port: number, options: Parameters<typeof call>[1], withinMs: number): Promise<number | string> => {
  const until = Date.now() + withinMs
  let last: number | string = "never asked"
  while (Date.now() < until) {
    last = await call(port, { ...options, timeoutMs: 1000 }).then((answer) => answer.status, (error: NodeJS.ErrnoException) => error.code ?? error.message)
    if (last === 200) return last
  }
  return last
}

describe("a sidecar under a low open-file limit", () => {
  let cleanup = new Cleanup()
  const children: Array<SidecarProcess> = []
  afterEach(async () => {
    for (const child of children.splice(0)) killIfRunning(child.proc)
    await cleanup.run()
    cleanup = new Cleanup()
  })

  it("keeps serving peers and probes while a client holds as many idle inbound connections as it can", async () => {
    const app = http.createServer((_req, res) => res.end("served"))
    await new Promise<void>((listening) => app.listen(0, "127.0.0.1", listening))
    cleanup.add(() => new Promise<void>((closed) => app.close(() => closed())))
    const appPort = (app.address() as AddressInfo).port
    // The first-packet timeout is long so the idle connections outlast the test (an attacker reconnects anyway).
    const limited = spawnSidecarProcess(["--service", "catalog", "--app", `127.0.0.1:${appPort}`, "--outbound", "127.0.0.1:0", "--inbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--first-packet-timeout", "60s"], [], undefined, {}, FILE_LIMIT)
    children.push(limited)
    const line = await limited.ready
    const caller = spawnSidecarProcess(["--service", "store", "--endpoint", `catalog=${line.inbound}`, "--outbound", "127.0.0.1:0", "--inbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
    children.push(caller)
    const callerLine = await caller.ready

    const attacker: Array<net.Socket> = []
    cleanup.add(() => { for (const socket of attacker) socket.destroy() })
    let connected = 0
    let closed = 0
    for (let i = 0; i < ATTACKER_CONNECTIONS; i++) {
      const socket = net.connect(portOf(line.inbound), "127.0.0.1")
      socket.on("error", () => {})
      socket.once("connect", () => connected++)
      socket.once("close", () => closed++)
      attacker.push(socket)
    }
    // The kernel completes every connect (the listen backlog); the sidecar accepts what it can.
    await waitFor(() => connected + closed === ATTACKER_CONNECTIONS, 10_000, "every attacker connect done")

    const health = await untilOk(portOf(line.admin), { path: "/health", headers: { host: "127.0.0.1" } }, 5000)
    const peer = await untilOk(portOf(callerLine.outbound), { path: "/hello", headers: { host: "catalog" } }, 5000)
    expect({ health, peer }).toStrictEqual({ health: 200, peer: 200 })
    expect(limited.proc.exitCode, limited.stderr()).toBeNull()
    // It says at start that it fitted its caps to the limit, and what they are.
    const fitted = limited.stderr().split("\n").filter((text) => text.includes("\"open-file-limit\"")).map((text) => JSON.parse(text) as Record<string, unknown>)
    expect(fitted).toHaveLength(1)
    expect(fitted[0]).toMatchObject({ limit: FILE_LIMIT })
  }, holdsStarts(2, 30_000))
})
