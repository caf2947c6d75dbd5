// `Expect: 100-continue` at its edges on A's outbound HTTP/1.1 listener, from a raw caller that
// speaks bytes (node:net): a keep-alive caller that sends its body without waiting for the 100
// (curl does after 1 s), with a request pipelined behind it; and a retry of a gathered body to a
// second endpoint after the first refused the connection. The 100 goes at most once per request
// and never after a final answer's head; a refused request's body is never read as the next
// request's head; a routed one's reaches the service and the request behind it is answered.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import * as net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import type { IncomingRequest } from "../../src/iip/server.ts"
import { startServer } from "../support/meshTest.ts"
import { type PlainUpload, plainUploadSuite, startPlainUpload } from "../support/plainUpload.ts"
import { captureAccessLog, LOOPBACK, type RunningSidecar, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

interface RawCaller {
  readonly socket: net.Socket
  /** Everything read so far, as Latin-1. */
  readonly read: () => string
  /** Resolves once what was read matches `pattern`. */
  readonly until: (pattern: RegExp, what: string) => Promise<void>
  /** Resolves with everything read once the sidecar closed the connection. */
  readonly closed: Promise<string>
}

const rawCaller = (cleanup: Cleanup, port: number): RawCaller => {
  const socket = net.connect(port, LOOPBACK)
  cleanup.add(() => socket.destroy())
  let text = ""
  const waiters: Array<() => void> = []
  socket.on("data", (data: Buffer) => {
    text += data.toString("latin1")
    for (const wake of waiters.splice(0)) wake()
  })
  socket.on("error", () => {})
  const closed = new Promise<string>((resolve) =>
    socket.on("close", () => {
      resolve(text)
      for (const wake of waiters.splice(0)) wake()
    }))
  const until = async (pattern: RegExp, what: string): Promise<void> => {
    const ready = async (): Promise<void> => {
      while (!pattern.test(text)) {
        if (socket.destroyed) throw new Error(`the connection closed before ${what}: ${JSON.stringify(text)}`)
        await new Promise<void>((resolve) => waiters.push(resolve))
      }
    }
    await withTimeout(ready(), 5_000, what)
  }
  return { socket, read: () => text, until, closed }
}

const count = (text: string, pattern: RegExp): number => text.match(new RegExp(pattern.source, "gm"))?.length ?? 0

const expectHead = (host: string, length: number): string =>
  `POST /upload HTTP/1.1\r\nhost: ${host}\r\ncontent-length: ${length}\r\nexpect: 100-continue\r\n\r\n`
const GET_BEHIND = "GET /upload HTTP/1.1\r\nhost: legacy\r\n\r\n"

describe("Expect: 100-continue from a caller that does not wait for the 100", () => {
  const upload = plainUploadSuite({ "/upload": (length) => `got ${length}` })
  const { cleanup } = upload

  it("refused (no endpoint): one 503 with the close, then its body and a request behind it are dropped, not read as a head", async () => {
    upload.received.length = 0
    const caller = rawCaller(cleanup, upload.a.outboundPort)
    caller.socket.write(expectHead("nowhere", 1000))
    await caller.until(/^HTTP\/1\.1 503 /m, "the 503")
    // The body it sends anyway (as curl after 1 s), and a request behind it on the same connection.
    caller.socket.write(Buffer.concat([Buffer.alloc(1000, 0x41), Buffer.from(GET_BEHIND, "latin1")]))
    const text = await withTimeout(caller.closed, 5_000, "the close")
    expect(count(text, /HTTP\/1\.1 \d{3} /)).toBe(1)
    expect(text).not.toMatch(/HTTP\/1\.1 100 /)
    expect(text).toMatch(/^connection: close\r$/m)
    expect(upload.received).toEqual([])
  })

  it("routed: the body sent with no wait reaches the service once, with at most one 100, and the request behind it is answered", async () => {
    upload.received.length = 0
    const caller = rawCaller(cleanup, upload.a.outboundPort)
    caller.socket.write(expectHead("legacy", 1000))
    caller.socket.write(Buffer.concat([Buffer.alloc(1000, 0x41), Buffer.from(GET_BEHIND, "latin1")]))
    await caller.until(/got 1000[\s\S]*got 2$/, "both answers")
    const text = caller.read()
    expect(count(text, /HTTP\/1\.1 100 /)).toBeLessThanOrEqual(1)
    expect(count(text, /HTTP\/1\.1 200 /)).toBe(2)
    // A 100 goes before the final answer or not at all.
    expect(text).not.toMatch(/HTTP\/1\.1 200 [\s\S]*HTTP\/1\.1 100 /)
    // The GET goes to the plain service with "{}", its empty body.
    expect(upload.received).toEqual([1000, 2])
  })
})

describe("Expect: 100-continue with a retry of the gathered body", () => {
  const cleanup = new Cleanup()
  const received: Array<number> = []
  let a: RunningSidecar
  let access: Array<{ status: number; attempts: number }>
  beforeAll(async () => {
    // An endpoint whose port refuses connections (a port the system gave, closed again), picked
    // first by its weight: the try fails unprocessed and the held body goes to the live one.
    const dead = net.createServer()
    await new Promise<void>((resolve) => dead.listen(0, LOOPBACK, resolve))
    const deadPort = (dead.address() as net.AddressInfo).port
    await new Promise<void>((resolve) => dead.close(() => resolve()))
    const server = await startServer(cleanup, { mesh: false })
    server.handle("/upload", (request: IncomingRequest) => {
      received.push(request.data.length)
      return `got ${request.data.length}`
    })
    access = captureAccessLog(cleanup, (line) => JSON.parse(line) as { status: number; attempts: number })
    const endpoints = [{ address: `${LOOPBACK}:${deadPort}`, weight: 1000 }, { address: `${LOOPBACK}:${server.address.port}`, weight: 1 }]
    a = await startSidecar(cleanup, sidecarConfig({ service: "store", accessLog: true, tracing: false, endpoints: { legacy: endpoints } }))
  })
  afterAll(() => cleanup.run())

  it("a body gathered after the 100 goes again to the second endpoint with no second 100", async () => {
    const caller = rawCaller(cleanup, a.outboundPort)
    caller.socket.write(expectHead("legacy", 1000))
    await caller.until(/^HTTP\/1\.1 100 Continue\r\n\r\n/m, "the 100")
    caller.socket.write(Buffer.alloc(1000, 0x41))
    await caller.until(/got 1000$/, "the answer")
    const text = caller.read()
    expect(count(text, /HTTP\/1\.1 100 /)).toBe(1)
    expect(text).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /)
    expect(received).toEqual([1000])
    await waitFor(() => access.length > 0, 5_000, "the access record")
    expect(access[0]).toMatchObject({ status: 200, attempts: 2 })
  })
})

describe("Expect: 100-continue refused by a route's injected abort", () => {
  const cleanup = new Cleanup()
  const received: Array<number> = []
  let a: RunningSidecar
  beforeAll(async () => {
    const server = await startServer(cleanup, { mesh: false })
    server.handle("/upload", (request: IncomingRequest) => {
      received.push(request.data.length)
      return `got ${request.data.length}`
    })
    const dir = mkdtempSync(join(tmpdir(), "iip-mesh-expect-abort-"))
    cleanup.add(() => rmSync(dir, { recursive: true, force: true }))
    const routes = join(dir, "routes.json")
    writeFileSync(routes, JSON.stringify({ routes: [{ name: "chaos", service: "legacy", split: [{ subset: "v1", weight: 1 }], fault: { abort: { status: 503, percent: 100 } } }] }))
    const endpoints = [{ address: `${LOOPBACK}:${server.address.port}`, weight: 1, version: "v1" }]
    a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, routes, routesPollMs: 60_000, endpoints: { legacy: endpoints } }))
  })
  afterAll(() => cleanup.run())

  // The abort is the route's, decided whatever the body: a small body (one gathered whole) was
  // invited with the 100 and read, only to be dropped, where a streamed one got the 503 without it.
  it("a small body gets the 503 fault_injected without the 100, and the close", async () => {
    const caller = rawCaller(cleanup, a.outboundPort)
    caller.socket.write(expectHead("legacy", 1000))
    // The first head it reads: a 100 (the body invited) or the final answer's.
    await caller.until(/^HTTP\/1\.1 \d{3} [^\r]*\r\n(?:[^\r]+\r\n)*\r\n/, "a head")
    const text = caller.read()
    expect(text).toMatch(/^HTTP\/1\.1 503 /)
    expect(text).toMatch(/^x-iip-mesh-error: outbound; reason=fault_injected\r$/m)
    expect(text).toMatch(/^connection: close\r$/m)
    expect(received).toEqual([])
  })
})

describe("Expect: 100-continue when discovery changes between the check and the pick", () => {
  const cleanup = new Cleanup()
  let upload: PlainUpload
  beforeAll(async () => {
    upload = await startPlainUpload(cleanup, { "/upload": (length) => `got ${length}` })
  })
  afterAll(() => cleanup.run())

  // The body was invited (an endpoint was there) and came whole: the connection is in step, the 503 keeps it.
  it("the endpoint gone after the 100: 503 no_endpoint with the body read whole, the connection kept for the next request", async () => {
    const caller = rawCaller(cleanup, upload.a.outboundPort)
    caller.socket.write(expectHead("legacy", 1000))
    await caller.until(/^HTTP\/1\.1 100 Continue\r\n\r\n/, "the 100")
    const endpoints = upload.a.sidecar.registry.endpointsOf("legacy")
    upload.a.sidecar.registry.set("legacy", [])
    caller.socket.write(Buffer.alloc(1000, 0x41))
    await caller.until(/reason=no_endpoint[\s\S]*\r\n\r\n[\s\S]*\}$/, "the 503")
    expect(caller.read()).toMatch(/^connection: keep-alive\r$/m)
    upload.a.sidecar.registry.set("legacy", endpoints)
    caller.socket.write(GET_BEHIND)
    await caller.until(/got 2$/, "the next answer on the same connection")
    expect(count(caller.read(), /HTTP\/1\.1 100 /)).toBe(1)
    expect(upload.received).toEqual([2])
  })
})
