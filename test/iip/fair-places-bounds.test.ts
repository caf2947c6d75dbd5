// Bounds of the places past the IIP server's connection limit (src/iip/server.ts `pastLimit`): a
// handshake given one that times out, fails, or whose client leaves gives it back; and a finished
// handshake takes a connection's place, never another handshake's: once the largest source was
// down to its share, newcomers that had taken over a past-limit handshake's place evicted another
// handshake at accept, and the server held more connections than maxConnections.
import * as net from "node:net"
import * as tls from "node:tls"
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest"
import type { WorkloadCredentials } from "../../src/identity/credentials.ts"
import { spiffeIdOfCertificate } from "../../src/identity/spiffe.ts"
import { MESH_ALPN, type ServerTlsOptions } from "../../src/iip/tls.ts"
import { encodeHello, MeshPath } from "../../src/protocol/mesh.ts"
import { Cleanup, frame, RawParser, waitFor, withTimeout } from "../support/iipRaw.ts"
import { collectLog, helloOf, startServer } from "../support/meshTest.ts"
import { makeTestPki } from "../support/testPki.ts"

const CAP = 4
describe("places past the connection limit", () => {
  let cleanup: Cleanup
  let pki: Awaited<ReturnType<typeof makeTestPki>>
  let serverCreds: WorkloadCredentials
  beforeAll(async () => {
    pki = await makeTestPki("bounds")
    serverCreds = await pki.credentials("spiffe://iip-mesh.local/svc/server")
  })
  beforeEach(() => { cleanup = new Cleanup() })
  afterEach(() => cleanup.run())
  const tlsOptions = (): ServerTlsOptions => ({
    credentials: { key: serverCreds.privateKeyPem, cert: serverCreds.certificateChainPem, ca: serverCreds.trustBundlePem },
    requireClientCertificate: true, acceptPlain: false, handshakeTimeoutMs: 300,
    identifyPeer: (c) => spiffeIdOfCertificate(c)?.text ?? { reason: "peer_identity", message: "no" }
  })
  const hold = async (port: number, localAddress: string, creds: WorkloadCredentials) => {
    const tcp = net.connect({ host: "127.0.0.1", port, localAddress })
    const socket = tls.connect({ socket: tcp, key: creds.privateKeyPem, cert: creds.certificateChainPem, ca: creds.trustBundlePem, ALPNProtocols: [MESH_ALPN], checkServerIdentity: () => undefined })
    cleanup.add(() => socket.destroy())
    socket.on("error", () => {})
    let answered = 0
    const parser = new RawParser()
    socket.on("data", (c: Buffer) => (answered += parser.push(c).length))
    let closed = false
    socket.once("close", () => (closed = true))
    await withTimeout(new Promise<void>((r) => socket.once("secureConnect", () => r())), 5000, "tls")
    socket.write(frame(1, MeshPath.hello, 0, encodeHello(helloOf(), false)))
    await waitFor(() => answered > 0 || closed, 5000, "hello")
    if (answered === 0) throw new Error(`${localAddress}: closed before its hello's answer`)
    return socket
  }
  it("past-limit handshakes that time out, send garbage, or close leave no place behind", async () => {
    const log = collectLog()
    const server = await startServer(cleanup, { maxConnections: CAP, log: log.log, tls: tlsOptions() })
    const hog = await pki.credentials("spiffe://iip-mesh.local/svc/hog")
    for (let i = 0; i < CAP; i++) await hold(server.address.port, "127.0.0.2", hog)
    const s = server as any
    const sockets: Array<net.Socket> = []
    for (let i = 0; i < 6; i++) {
      const socket = net.connect({ host: "127.0.0.1", port: server.address.port, localAddress: `127.0.0.${3 + i}` })
      socket.on("error", () => {})
      cleanup.add(() => socket.destroy())
      await withTimeout(new Promise((r) => socket.once("connect", r)), 5000, "connect")
      sockets.push(socket)
    }
    await waitFor(() => s.handshaking.size === 6, 5000, "the handshakes past the limit")
    sockets[0]!.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])) // stalls in TLS: its timeout
    sockets[1]!.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])) // garbage handshake
    sockets[2]!.destroy() // client gone before a byte
    sockets[3]!.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))
    sockets[3]!.destroy() // gone mid-handshake
    // 4, 5: silent: sniff's timeout
    await waitFor(() => s.handshaking.size === 0, 5000, "handshakes gone")
    expect(s.unproven.size).toBe(0)
    expect(server.connectionCount).toBe(CAP)
  }, 30_000)
  it("16 owed mTLS newcomers at once, then more once none is owed: never more connections than the cap", async () => {
    const log = collectLog()
    const server = await startServer(cleanup, { maxConnections: CAP * 2, log: log.log, tls: { ...tlsOptions(), handshakeTimeoutMs: 10_000 } })
    server.handle("/echo", (r) => r.data)
    const hog = await pki.credentials("spiffe://iip-mesh.local/svc/hog")
    for (let i = 0; i < CAP * 2; i++) await hold(server.address.port, "127.0.0.2", hog)
    let most = 0
    const timer = setInterval(() => (most = Math.max(most, server.connectionCount)), 1)
    cleanup.add(() => clearInterval(timer))
    const honest = await pki.credentials("spiffe://iip-mesh.local/svc/honest")
    const results = await Promise.allSettled(Array.from({ length: 16 }, (_, i) => hold(server.address.port, `127.0.0.${3 + i}`, honest)))
    most = Math.max(most, server.connectionCount)
    const ok = results.filter((r) => r.status === "fulfilled").length
    expect(ok).toBeGreaterThan(0)
    expect(most).toBeLessThanOrEqual(CAP * 2)
  }, 30_000)
  it("a finished handshake at the limit takes the largest source's idle place, not a verified peer's whose hello is on its way", async () => {
    const log = collectLog()
    const server = await startServer(cleanup, { maxConnections: CAP, log: log.log, tls: { ...tlsOptions(), handshakeTimeoutMs: 10_000 } })
    const hog = await pki.credentials("spiffe://iip-mesh.local/svc/hog")
    const hogs: Array<tls.TLSSocket> = []
    for (let i = 0; i < CAP - 1; i++) hogs.push(await hold(server.address.port, "127.0.0.2", hog))
    // Verified, its hello not sent yet: it holds the last place.
    const honest = await pki.credentials("spiffe://iip-mesh.local/svc/honest")
    const quiet = tls.connect({ socket: net.connect({ host: "127.0.0.1", port: server.address.port, localAddress: "127.0.0.3" }), key: honest.privateKeyPem, cert: honest.certificateChainPem, ca: honest.trustBundlePem, ALPNProtocols: [MESH_ALPN], checkServerIdentity: () => undefined })
    cleanup.add(() => quiet.destroy())
    quiet.on("error", () => {})
    let quietClosed = false
    quiet.once("close", () => (quietClosed = true))
    await withTimeout(new Promise((r) => quiet.once("secureConnect", r)), 5000, "the quiet peer's handshake")
    await waitFor(() => server.connectionCount === CAP, 5000, "the quiet peer's connection")
    // Another source's handshake past the limit; once done it takes one of the hog's places.
    await hold(server.address.port, "127.0.0.4", honest)
    await waitFor(() => hogs.filter((h) => h.destroyed).length === 1, 5000, "one of the hog's to make way")
    expect(quietClosed).toBe(false)
    expect(server.connectionCount).toBe(CAP)
  }, 30_000)
})
