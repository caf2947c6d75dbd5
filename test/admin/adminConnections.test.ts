// Connection-level attacks on both admin listeners, over raw sockets: a slowloris head (bytes
// trickled, the head never finished), a body that never comes, a connection that sends nothing,
// and many idle connections from one address. The read-only listener is on the pod address: without
// a deadline on each request and a cap on connections, anyone who reaches it holds file descriptors
// and memory of the sidecar's process for as long as they like (the data plane's accepts and
// connects fail with EMFILE once the process's descriptors are gone).
import { execFile } from "node:child_process"
import * as http from "node:http"
import * as net from "node:net"
import { resolve } from "node:path"
import { promisify } from "node:util"
import { describe, expect } from "vitest"
import { ADMIN_LIMITS, capConnections, limitPipelining, serverOptions } from "../../src/admin/listenerLimits.ts"
import { CHILD_START_MS } from "../support/childStart.ts"
import { it } from "../support/cleanupTest.ts"
import { type Cleanup, withTimeout } from "../support/iipRaw.ts"
import { probeLoopbackNamespace } from "../support/netnsLo.ts"
import { gate } from "../support/netnsProcess.ts"
import { call, sidecarConfig, startAdminListeners, startSidecar } from "../support/sidecarHarness.ts"

interface Held {
  readonly socket: net.Socket
  /** What the server sent, as latin1. */
  readonly received: () => string
  /** Resolves when the server (or the test) closed it. */
  readonly closed: Promise<void>
}

/** A raw connection from `localAddress`, `bytes` written once connected; the test closes it at the end. */
const hold = (cleanup: Cleanup, port: number, bytes = "", localAddress = "127.0.0.1"): Promise<Held> =>
  new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: "127.0.0.1", localAddress })
    let received = ""
    socket.setEncoding("latin1")
    socket.on("data", (chunk: string) => (received += chunk))
    socket.on("error", () => {})
    const closed = new Promise<void>((done) => socket.once("close", () => done()))
    cleanup.add(() => socket.destroy())
    socket.once("connect", () => {
      socket.off("error", reject)
      if (bytes !== "") socket.write(bytes)
      resolve({ socket, received: () => received, closed })
    })
    socket.once("error", reject)
  })

const portOf = (url: string) => Number(new URL(url).port)

/** Both listeners' ports, in front of a sidecar with one endpoint to override. */
const listeners = async (cleanup: Cleanup) => {
  const running = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: "127.0.0.1:1", weight: 1 }] } }))
  const { readOnly, control } = await startAdminListeners(cleanup, running)
  return [["read-only", portOf(readOnly)], ["control", portOf(control)]] as const
}

// The server checks its deadlines every connectionsCheckIntervalMs: a request is cut at most that long after its deadline.
const CUT_WITHIN_MS = ADMIN_LIMITS.requestTimeoutMs + ADMIN_LIMITS.connectionsCheckIntervalMs + 2_000

// Concurrent: two of these wait out the admin's fixed 5 s deadlines; each test has its own sidecar
// and listeners (the caps are per listener), so side by side the waits overlap.
describe.concurrent("admin listeners under connection attacks", () => {
  it("a connection that sends nothing, a head trickled and never finished, and a weight body that never comes are each cut within the request deadline", async ({ cleanup }) => {
    // Both listeners at once: each case waits out the 5 s deadline, the two servers are apart.
    await Promise.all((await listeners(cleanup)).map(async ([name, port]) => {
      const silent = await hold(cleanup, port)
      const trickled = await hold(cleanup, port, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: ")
      const body = await hold(cleanup, port, "PUT /mesh/catalog/127.0.0.1:1/weight HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"wei")
      // The trickle keeps going, a byte a second, while the server waits.
      const drip = setInterval(() => trickled.socket.write("a"), 1000)
      cleanup.add(() => clearInterval(drip))
      await withTimeout(Promise.all([silent.closed, trickled.closed, body.closed]), CUT_WITHIN_MS, `${name}: the server to cut all three`)
      clearInterval(drip)
      for (const held of [silent, trickled]) expect(held.received(), name).toMatch(/^HTTP\/1\.1 408 /)
      // The read-only listener has no weights: it answers 404 at once, and still cuts the body that never ends.
      expect(body.received(), name).toMatch(name === "control" ? /^HTTP\/1\.1 408 / : /^HTTP\/1\.1 404 /)
    }))
  }, 2 * CUT_WITHIN_MS)

  it(`an address at its cap of ${ADMIN_LIMITS.connectionsPerAddress} connections: a new one evicts that address's connection idle longest; another address still gets /health`, async ({ cleanup }) => {
    for (const [name, port] of await listeners(cleanup)) {
      // The first is accepted alone, so it is the one that has waited longest.
      const oldest = await hold(cleanup, port)
      const held = [oldest, ...(await Promise.all(Array.from({ length: ADMIN_LIMITS.connectionsPerAddress - 1 }, () => hold(cleanup, port))))]
      const extra = await hold(cleanup, port, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
      await withTimeout(extra.closed, 5_000, `${name}: /health on the connection over the address's cap`)
      expect(extra.received(), name).toMatch(/^HTTP\/1\.1 200 /)
      await withTimeout(oldest.closed, 5_000, `${name}: the address's oldest idle connection to be evicted`)
      expect(held.filter((h) => h.socket.destroyed || h.socket.readableEnded).length, name).toBe(1)
      const other = await hold(cleanup, port, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", "127.0.0.2")
      await withTimeout(other.closed, 5_000, `${name}: /health from 127.0.0.2`)
      expect(other.received(), name).toMatch(/^HTTP\/1\.1 200 /)
      for (const h of held) h.socket.destroy()
    }
  })

  it(`a listener at its cap of ${ADMIN_LIMITS.maxConnections} idle connections from several addresses: a probe from another address evicts the one idle longest and gets /health`, async ({ cleanup }) => {
    // 8 addresses x 32 idle connections, renewed every 5 s, used to keep the listener full: the
    // kubelet's probes were reset and the pod restarted.
    for (const [name, port] of await listeners(cleanup)) {
      const perAddress = ADMIN_LIMITS.connectionsPerAddress
      const addresses = Math.ceil(ADMIN_LIMITS.maxConnections / perAddress)
      const oldest = await hold(cleanup, port, "", "127.0.1.1")
      const held: Array<Held> = [oldest]
      for (let a = 0; a < addresses; a++) {
        held.push(...(await Promise.all(Array.from({ length: Math.min(perAddress - (a === 0 ? 1 : 0), ADMIN_LIMITS.maxConnections - held.length) }, () => hold(cleanup, port, "", `127.0.1.${a + 1}`)))))
      }
      expect(held.length).toBe(ADMIN_LIMITS.maxConnections)
      for (const path of ["/health", "/ready"]) {
        const probe = await hold(cleanup, port, `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`, "127.0.2.1")
        await withTimeout(probe.closed, 5_000, `${name}: ${path} from 127.0.2.1 at the listener's cap`)
        expect(probe.received(), `${name} ${path}`).toMatch(/^HTTP\/1\.1 (200|503) /)
        expect(probe.received(), `${name} ${path}`).not.toMatch(/too_many_connections/)
      }
      await withTimeout(oldest.closed, 5_000, `${name}: the connection idle longest to be evicted`)
      for (const h of held) h.socket.destroy()
    }
  })

  it(`when every connection an address holds has a request in progress, a new one from it is answered 503 with connection: close`, async ({ cleanup }) => {
    // The control listener's weight PUT waits for its body: a request in progress, cut by the 5 s
    // deadline. `Expect: 100-continue` has the server say when it began the request.
    const port = (await listeners(cleanup))[1][1]
    const busy = await Promise.all(Array.from({ length: ADMIN_LIMITS.connectionsPerAddress }, async () => {
      const held = await hold(cleanup, port, "PUT /mesh/catalog/127.0.0.1:1/weight HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n", "127.0.0.3")
      await withTimeout(new Promise((begun) => held.socket.once("data", begun)), 5_000, "100 Continue")
      expect(held.received()).toMatch(/^HTTP\/1\.1 100 /)
      held.socket.write("{\"wei")
      return held
    }))
    const extra = await hold(cleanup, port, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "127.0.0.3")
    await withTimeout(extra.closed, 5_000, "the connection over the address's cap to be closed")
    expect(extra.received()).toMatch(/^HTTP\/1\.1 503 [^]*connection: close[^]*too_many_connections/i)
    expect(busy.filter((h) => h.socket.destroyed || h.socket.readableEnded || !/^HTTP\/1\.1 100 Continue\r\n\r\n$/.test(h.received())).length).toBe(0)
    const other = await withTimeout(call(port, { path: "/health", headers: { host: "127.0.0.1" } }), 5_000, "/health from 127.0.0.1")
    expect(other.status).toBe(200)
  })

  it(`when all ${ADMIN_LIMITS.maxConnections} connections of a listener have a request in progress, a newcomer gets a 503; past ${ADMIN_LIMITS.connectionsPerAddress} such answers still open, a reset`, async ({ cleanup }) => {
    const port = (await listeners(cleanup))[1][1]
    const perAddress = ADMIN_LIMITS.connectionsPerAddress
    const busy: Array<Held> = []
    for (let a = 0; busy.length < ADMIN_LIMITS.maxConnections; a++) {
      busy.push(...(await Promise.all(Array.from({ length: Math.min(perAddress, ADMIN_LIMITS.maxConnections - busy.length) }, async () => {
        const held = await hold(cleanup, port, "PUT /mesh/catalog/127.0.0.1:1/weight HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n", `127.0.3.${a + 1}`)
        await withTimeout(new Promise((begun) => held.socket.once("data", begun)), 5_000, "100 Continue")
        return held
      }))))
    }
    // Newcomers that keep their side open (allowHalfOpen) hold their 503 answers open until the server's linger ends.
    const newcomers = await Promise.all(Array.from({ length: 2 * perAddress }, (_, i) => new Promise<{ received: () => string; over: Promise<void> }>((resolve, reject) => {
      const socket = net.connect({ port, host: "127.0.0.1", localAddress: `127.0.4.${1 + (i % 8)}`, allowHalfOpen: true })
      cleanup.add(() => socket.destroy())
      let received = ""
      socket.setEncoding("latin1")
      socket.on("data", (chunk: string) => (received += chunk))
      socket.on("error", () => {})
      // The server's end (after a 503) or its reset.
      const over = new Promise<void>((done) => {
        socket.once("end", () => done())
        socket.once("close", () => done())
      })
      socket.once("connect", () => resolve({ received: () => received, over }))
      socket.once("error", reject)
    })))
    await withTimeout(Promise.all(newcomers.map((n) => n.over)), 5_000, "every newcomer to be closed")
    const answered = newcomers.filter((n) => /^HTTP\/1\.1 503 [^]*connection: close[^]*too_many_connections/i.test(n.received())).length
    expect(answered).toBeGreaterThan(0)
    expect(answered).toBeLessThanOrEqual(perAddress)
    expect(newcomers.filter((n) => n.received() === "").length).toBe(newcomers.length - answered)
    expect(busy.filter((h) => h.socket.destroyed || h.socket.readableEnded || !/^HTTP\/1\.1 100 Continue\r\n\r\n$/.test(h.received())).length).toBe(0)
  })

  it(`a client pipelining past ${ADMIN_LIMITS.maxPipelined} gets the first ${ADMIN_LIMITS.maxPipelined} answers, then a 503 and the close, and retries the rest`, async ({ cleanup }) => {
    // HTTP/1.1 lets a client pipeline and lets the server close; a client then retries what was not
    // answered (RFC 9112 9.3.1). Requests the server handled must have their answers: a PUT applied
    // and its answer destroyed leaves the client not knowing.
    for (const [name, port] of await listeners(cleanup)) {
      const sent = ADMIN_LIMITS.maxPipelined + 2
      const held = await hold(cleanup, port, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(sent))
      await withTimeout(held.closed, 10_000, `${name}: the server to close the pipelining connection`)
      const statuses = [...held.received().matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1])
      expect(statuses, name).toEqual([...Array.from({ length: ADMIN_LIMITS.maxPipelined }, () => "200"), "503"])
      expect(held.received(), name).toMatch(/too_many_pipelined/)
      const retried = await hold(cleanup, port, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(sent - ADMIN_LIMITS.maxPipelined - 1) + "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
      await withTimeout(retried.closed, 10_000, `${name}: the retried requests' answers`)
      expect([...retried.received().matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1]), name).toEqual(Array.from({ length: sent - ADMIN_LIMITS.maxPipelined }, () => "200"))
    }
  })

  it(`requests pipelined past ${ADMIN_LIMITS.maxPipelined} unanswered close the connection (each was an answer held in memory)`, async ({ cleanup }) => {
    // 8 connections of 20,000 pipelined GET /metrics that read nothing held +279 MB of the process.
    for (const [name, port] of await listeners(cleanup)) {
      const socket = net.connect(port, "127.0.0.1")
      cleanup.add(() => socket.destroy())
      let received = ""
      socket.setEncoding("latin1")
      socket.on("data", (chunk: string) => (received += chunk))
      socket.on("error", () => {})
      const closed = new Promise<void>((done) => socket.once("close", () => done()))
      socket.write("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(2_000))
      await withTimeout(closed, 10_000, `${name}: the server to close the pipelining connection`)
      const answers = received.match(/HTTP\/1\.1 200 /g)?.length ?? 0
      expect(answers, name).toBeLessThanOrEqual(ADMIN_LIMITS.maxPipelined)
    }
  })

  it(`an answer its client does not take is abandoned ${ADMIN_LIMITS.answerTimeoutMs} ms after it was written: its connection holds no place (probes get in)`, async ({ cleanup }) => {
    // A client that asks and never reads keeps its answer unfinished: without a bound its connection
    // counted as busy for good (no request deadline covers writing), and 32 such from one address
    // got that address 503s forever (8 addresses: the listener). The loopback's socket buffers take a
    // few MB, more than /metrics, so the answer here is a bare handler's 8 MB.
    const big = Buffer.alloc(8 * 1024 * 1024, 120)
    const server = http.createServer(serverOptions)
    server.on("request", limitPipelining(capConnections(server), (req, res) => {
      if (req.url === "/big") res.writeHead(200, { "content-length": big.length }).end(big)
      else res.writeHead(200, { "content-length": 2 }).end("ok")
    }))
    // The clients do not read, so they would not see the close: the server's side of each is watched.
    const serverClosed: Array<Promise<void>> = []
    server.on("connection", (socket: net.Socket) => serverClosed.push(new Promise((done) => socket.once("close", () => done()))))
    await new Promise<void>((listening) => server.listen(0, "127.0.0.1", listening))
    cleanup.add(() => (server.close(), server.closeAllConnections()))
    const port = (server.address() as net.AddressInfo).port
    await Promise.all(Array.from({ length: ADMIN_LIMITS.connectionsPerAddress }, async () => {
      const held = await hold(cleanup, port, "GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "127.0.0.4")
      held.socket.pause()
    }))
    await withTimeout(Promise.all(serverClosed), ADMIN_LIMITS.answerTimeoutMs + 3_000, "the server to drop the answers nobody takes")
    const probe = await hold(cleanup, port, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", "127.0.0.4")
    await withTimeout(probe.closed, 5_000, "the probe's answer")
    expect(probe.received()).toMatch(/^HTTP\/1\.1 200 /)
  }, 20_000)
})

describe("admin listeners' per-address cap and IPv6", () => {
  // The machine's own loopback holds ::1 alone (adding addresses there would change the shared
  // machine): the sockets run in a loopback namespace of the test's own, given three addresses.
  // Each run is a node start, then its connections (a few seconds at most).
  const RUN_MS = CHILD_START_MS + 10_000
  const setup = "ip link set lo up && ip -6 addr add 2001:db8:0:1::a/64 dev lo nodad && ip -6 addr add 2001:db8:0:1::b/64 dev lo nodad && ip -6 addr add 2001:db8:0:2::a/64 dev lo nodad"
  const ipv6 = gate(
    `real sockets: ${ADMIN_LIMITS.connectionsPerAddress} idle connections from one address of a /64 fill it, one from another address of it evicts the one idle longest; another /64, or IPv4 next to ::1, evicts nothing`,
    probeLoopbackNamespace()
  )
  it.skipIf(ipv6.skip)(ipv6.title, async () => {
    // Before, the cap counted full addresses: the /64's second address was a client of its own and evicted nothing.
    const child = resolve(import.meta.dirname, "../support/ipv6ClientChild.ts")
    const { stdout } = await promisify(execFile)("unshare", ["-rn", "sh", "-c", `${setup} && exec "$0" "$@"`, process.execPath, child], { timeout: RUN_MS })
    expect(JSON.parse(stdout.trim().split("\n").at(-1)!)).toEqual({
      fromSameBlock: "200",
      sameBlockEvicted: 1,
      firstEvicted: true,
      fromOtherBlock: "200",
      otherBlockEvicted: 0,
      fromIpv4: "200",
      ipv4Evicted: 0
    })
  }, RUN_MS + 5000)
  it.skipIf(ipv6.skip)("real sockets, --ipv6-source-prefix 128: the /64's second address is a client of its own and evicts nothing", async () => {
    // Before, the admin listeners counted by /64 whatever the flag said (the issuer and the inbound limiter followed it).
    const child = resolve(import.meta.dirname, "../support/ipv6ClientChild.ts")
    const { stdout } = await promisify(execFile)("unshare", ["-rn", "sh", "-c", `${setup} && exec "$0" "$@"`, process.execPath, child], {
      timeout: RUN_MS,
      env: { ...process.env, IPV6_SOURCE_PREFIX: "128" }
    })
    expect(JSON.parse(stdout.trim().split("\n").at(-1)!)).toMatchObject({ fromSameBlock: "200", sameBlockEvicted: 0, firstEvicted: false })
  }, RUN_MS + 5000)
})
