// Log lines a peer can have written again and again at will are bounded (src/iip/log.ts
// LogThrottle): a `protocol-violation` per connection (a stranger that opens connections in a loop
// and sends one bad byte on each), a `tls-refused` per failed handshake (no onRefused given), and a
// `handler-crashed` per request whose handler dies (a peer that found an input its handler dies
// on, sent over and over), a `push-failed` per push of a mesh peer that fails. On main each was one line per attempt, unbounded: 400 connections made
// 400 lines, and a crashing handler's line carried the whole request path.
import * as net from "node:net"
import * as tls from "node:tls"
import * as Effect from "effect/Effect"
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest"
import { IipClient } from "../../src/iip/client.ts"
import { IipServer } from "../../src/iip/server.ts"
import { Cleanup, RawClient, waitFor } from "../support/iipRaw.ts"
import { makeTestPki, type TestPki } from "../support/testPki.ts"

/** At most this many lines of one event in a window of a minute (the server's accept lines' bound). */
const bound = 20
const attempts = 400

interface Line {
  readonly event: string
  readonly fields: Record<string, unknown>
}

let pki: TestPki
beforeAll(async () => {
  pki = await makeTestPki("mesh")
})

describe("lines a peer can repeat at will are bounded", () => {
  let cleanup: Cleanup
  let lines: Array<Line>
  const of = (event: string) => lines.filter((line) => line.event === event)

  beforeEach(() => {
    cleanup = new Cleanup()
    lines = []
  })
  afterEach(() => cleanup.run())

  const serve = async (options: Partial<ConstructorParameters<typeof IipServer>[0]> = {}): Promise<IipServer> => {
    const server = new IipServer({ port: 0, ...options, log: (event, fields) => void lines.push({ event, fields }) })
    server.handle("/echo", (request) => request.data)
    await server.listen()
    cleanup.add(() => server.close())
    return server
  }

  it(`protocol-violation: ${attempts} connections each sending status 9 give at most ${bound} lines, and the server serves on`, async () => {
    const server = await serve()
    let closed = 0
    for (let i = 0; i < attempts; i += 50) {
      await Promise.all(Array.from({ length: 50 }, async () => {
        const raw = await RawClient.connect(server.address.port, cleanup)
        raw.write(Buffer.of(9))
        await raw.waitClose(5000)
        closed++
      }))
    }
    expect(closed).toBe(attempts)
    const violations = of("protocol-violation")
    expect(violations.length).toBeGreaterThan(0)
    expect(violations.length).toBeLessThanOrEqual(bound)
    expect(violations[0]!.fields.rule).toBe("invalid-status")
    // The server still serves.
    const client = new IipClient({ host: "127.0.0.1", port: server.address.port, log: () => {} })
    cleanup.add(() => client.close())
    expect((await client.call("/echo", "still here", { timeoutMs: 2000 })).toString()).toBe("still here")
  }, 60_000)

  it(`tls-refused (no onRefused): ${attempts / 4} TLS strangers without a client certificate give at most ${bound} lines`, async () => {
    const credentials = await pki.credentials("spiffe://iip-mesh.local/svc/b")
    const server = await serve({
      tls: {
        credentials: { key: credentials.privateKeyPem, cert: credentials.certificateChainPem, ca: credentials.trustBundlePem },
        requireClientCertificate: true,
        identifyPeer: () => "peer"
      }
    })
    // A TLS client with no certificate: the handshake is refused for it, each time.
    let ended = 0
    for (let i = 0; i < attempts / 4; i += 25) {
      await Promise.all(Array.from({ length: 25 }, () =>
        new Promise<void>((resolve) => {
          const socket = tls.connect({ host: "127.0.0.1", port: server.address.port, rejectUnauthorized: false, ALPNProtocols: ["iip-mesh"] })
          cleanup.add(() => socket.destroy())
          socket.on("error", () => {})
          socket.once("secureConnect", () => socket.write(Buffer.of(1)))
          socket.once("close", () => {
            ended++
            resolve()
          })
        })))
    }
    expect(ended).toBe(attempts / 4)
    await waitFor(() => of("tls-refused").length > 0, 5000, "a tls-refused line")
    expect(of("tls-refused").length).toBeLessThanOrEqual(bound)
  }, 60_000)

  it(`handler-crashed: ${attempts} requests to a handler that dies give at most ${bound} lines, each path and cause cut`, async () => {
    const server = await serve()
    // The cause quotes the peer's data, as a parser's error may: the line keeps about 4,000 characters of it.
    server.handlePrefix("/crash/", (request) => Effect.die(new Error(`cannot parse ${request.data.toString()}`)))
    const client = new IipClient({ host: "127.0.0.1", port: server.address.port, log: () => {} })
    cleanup.add(() => client.close())
    const path = `/crash/${"x".repeat(2000)}`
    const failures = await Promise.all(Array.from({ length: attempts }, () => client.call(path, "d".repeat(10_000), { timeoutMs: 10_000 }).then(() => "answered", (error: unknown) => String(error))))
    expect(failures.every((text) => text !== "answered")).toBe(true)
    const crashed = of("handler-crashed")
    expect(crashed.length).toBeGreaterThan(0)
    expect(crashed.length).toBeLessThanOrEqual(bound)
    for (const line of crashed) {
      expect(String(line.fields.path).length).toBeLessThan(300)
      expect(String(line.fields.cause).length).toBeLessThan(4100)
    }
  }, 60_000)

  it(`push-failed: ${attempts} pushes of a mesh peer whose handler fails give at most ${bound} lines, each path cut`, async () => {
    const server = await serve()
    let pushes = 0
    server.handlePrefix("/refuse/", () => {
      pushes++
      throw new Error("refused")
    })
    const client = new IipClient({ host: "127.0.0.1", port: server.address.port, log: () => {} })
    cleanup.add(() => client.close())
    expect((await client.call("/echo", "mesh", { timeoutMs: 2000 })).toString()).toBe("mesh")
    // A long path the peer chose: each line shows it cut (main wrote all 2,008 characters).
    for (let i = 0; i < attempts; i++) client.push(`/refuse/${"x".repeat(2000)}`, "x")
    await waitFor(() => pushes === attempts, 10_000, "every push handled")
    // The lines go out as the handlers' outcomes settle: one more round trip lets them.
    expect((await client.call("/echo", "after", { timeoutMs: 2000 })).toString()).toBe("after")
    const failed = of("push-failed")
    expect(failed.length).toBeGreaterThan(0)
    expect(failed.length).toBeLessThanOrEqual(bound)
    for (const line of failed) expect(String(line.fields.path).length).toBeLessThan(300)
  }, 60_000)

  it("no-first-packet: 60 connections that send nothing give 20 lines in the minute", async () => {
    const server = await serve({ firstPacketTimeoutMs: 200 })
    const silent = () => new Promise<void>((resolve) => {
      const socket = net.connect({ host: "127.0.0.1", port: server.address.port })
      cleanup.add(() => socket.destroy())
      socket.on("error", () => {})
      socket.once("close", () => resolve())
    })
    await Promise.all(Array.from({ length: 60 }, silent))
    const timedOut = of("no-first-packet")
    expect(timedOut.length).toBe(bound)
  }, 30_000)

  it("the plain net peer that connects and sends nothing is still closed by the first-packet timeout (held)", async () => {
    const server = await serve({ firstPacketTimeoutMs: 300 })
    const socket = net.connect({ host: "127.0.0.1", port: server.address.port })
    cleanup.add(() => socket.destroy())
    socket.on("error", () => {})
    const started = performance.now()
    await new Promise<void>((resolve) => socket.once("close", () => resolve()))
    expect(performance.now() - started).toBeLessThan(3000)
  })
})
