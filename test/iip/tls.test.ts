// IIP inside TLS (PROTOCOL.md §19), at the library level: a client and a server with mutual TLS 1.3
// carry mesh requests and the handler sees the client's proven identity; refusals name their
// reason before any request reaches a handler; and the Go reference's TLS mode both ways: our
// client against a node:tls server speaking raw reference bytes, our server (no client
// certificate) against a client that does not verify, the IIP inside byte-identical to the
// captured vectors of iip-protocol.md §12.
import { X509Certificate } from "node:crypto"
import * as net from "node:net"
import type { AddressInfo } from "node:net"
import * as tls from "node:tls"
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest"
import { spiffeIdOfCertificate } from "../../src/identity/spiffe.ts"
import { IipClient } from "../../src/iip/client.ts"
import { IipServer } from "../../src/iip/server.ts"
import { type ClientTlsOptions, MESH_ALPN, type ServerTlsOptions, type TlsRefusal } from "../../src/iip/tls.ts"
import { ConnectFailed } from "../../src/mux/errors.ts"
import { Cleanup, frame, packetHex, type RawPacket, RawParser, waitFor, withTimeout } from "../support/iipRaw.ts"
import { expiredCredentials, makeTestPki, type TestPki } from "../support/testPki.ts"
import type { WorkloadCredentials } from "../../src/identity/credentials.ts"

/** Bytes from iip-protocol.md §12, as captured from the reference. */
const V = {
  newChannelRequest: "012f7379732f6e65775f6368616e6e656c0000000000000000027b7d",
  newChannel1: "052f7379732f6e65775f6368616e6e656c0000000000000000197b22636f6465223a302c226368616e6e656c5f6964223a317d",
  echoHelloRequest: "012f6563686f00000000010000000568656c6c6f",
  echoHelloAnswer: "052f6563686f00000000010000000568656c6c6f"
} as const

const A = "spiffe://iip-mesh.local/svc/a"
const B = "spiffe://iip-mesh.local/svc/b"

let pki: TestPki
let foreign: TestPki
let serverCredentials: WorkloadCredentials
beforeAll(async () => {
  pki = await makeTestPki("mesh")
  foreign = await makeTestPki("foreign")
  serverCredentials = await pki.credentials(B)
})

const serverTls = (credentials: WorkloadCredentials, refusals: Array<TlsRefusal>): ServerTlsOptions => ({
  credentials: { key: credentials.privateKeyPem, cert: credentials.certificateChainPem, ca: credentials.trustBundlePem },
  requireClientCertificate: true,
  identifyPeer: (certificate) => spiffeIdOfCertificate(certificate)?.text ?? { reason: "peer_identity", message: "no SPIFFE ID" },
  onRefused: (refusal) => void refusals.push(refusal)
})

const clientTls = (credentials: WorkloadCredentials | undefined, expected: string, refusals: Array<TlsRefusal> = []): ClientTlsOptions => {
  const context = tls.createSecureContext(
    credentials === undefined
      ? { ca: pki.root.certificatePem }
      : { key: credentials.privateKeyPem, cert: credentials.certificateChainPem, ca: credentials.trustBundlePem }
  )
  return {
    secureContext: () => context,
    requireAlpn: true,
    checkPeer: (certificate) => {
      const id = spiffeIdOfCertificate(certificate)?.text
      return id === expected ? undefined : { reason: "peer_identity", message: `peer is ${id}, expected ${expected}` }
    },
    onRefused: (refusal) => void refusals.push(refusal)
  }
}

describe("mutual TLS under IIP", () => {
  let cleanup: Cleanup
  let server: IipServer
  let seen: Array<string | undefined>
  let serverRefusals: Array<TlsRefusal>

  const start = async (credentials: WorkloadCredentials = serverCredentials) => {
    server = new IipServer({ port: 0, log: () => {}, tls: serverTls(credentials, serverRefusals) })
    server.handle("/who", (request) => {
      seen.push(request.context.peerIdentity)
      return request.context.peerIdentity ?? "anonymous"
    })
    await server.listen()
    cleanup.add(() => server.close())
  }

  const client = (options: ClientTlsOptions) => {
    const c = new IipClient({ host: "127.0.0.1", port: server.address.port, tls: options, waitForReconnect: false, connectTimeoutMs: 3000, log: () => {} })
    cleanup.add(() => c.close())
    return c
  }

  const refusedWith = async (options: ClientTlsOptions) => {
    const error = await client(options).call("/who", "", { timeoutMs: 3000 }).then(() => undefined, (e: unknown) => e)
    expect(error).toBeInstanceOf(ConnectFailed)
    return error as ConnectFailed
  }

  beforeEach(() => {
    cleanup = new Cleanup()
    seen = []
    serverRefusals = []
  })
  afterEach(() => cleanup.run())

  it("carries mesh requests, the handler sees the client's SPIFFE ID, ALPN is iip-mesh/1", async () => {
    await start()
    const c = client(clientTls(await pki.credentials(A), B))
    expect(String(await c.call("/who", "", { timeoutMs: 3000 }))).toBe(A)
    expect(await c.mode()).toBe("mesh")
    expect(seen).toStrictEqual([A])
    const socket = c.meshSessions[0]!.connection.socket as tls.TLSSocket
    expect(socket.alpnProtocol).toBe(MESH_ALPN)
    expect(socket.getProtocol()).toBe("TLSv1.3")
  })

  it("a server with a foreign, expired or wrongly named certificate is refused by the client before any request", async () => {
    for (const [credentials, reason] of [
      [await foreign.credentials(B), "peer_untrusted"],
      [await expiredCredentials(pki, B), "peer_expired"],
      [await pki.credentials("spiffe://iip-mesh.local/svc/impostor"), "peer_identity"]
    ] as const) {
      await start({ ...credentials, trustBundlePem: pki.root.certificatePem })
      const refusals: Array<TlsRefusal> = []
      const error = await refusedWith(clientTls(await pki.credentials(A), B, refusals))
      expect(error.tls, error.message).toBe(reason)
      expect(refusals.map((r) => r.reason)).toStrictEqual([reason])
      expect(seen).toStrictEqual([])
      await server.close()
    }
  })

  it("a client with a foreign, expired or no certificate is refused by the server before any request", async () => {
    await start()
    for (const [credentials, why] of [
      [await foreign.credentials(A, { bundle: pki.root.certificatePem }), "peer_untrusted"],
      [await expiredCredentials(pki, A), "peer_expired"],
      [undefined, "peer_no_certificate"]
    ] as const) {
      const error = await refusedWith(clientTls(credentials, B))
      expect(error.tls, error.message).toBe("tls_refused")
      expect(error.message).toContain(`peer refused the connection: ${why}`)
    }
    expect(seen).toStrictEqual([])
    expect(serverRefusals.map((r) => r.reason)).toStrictEqual(["peer_untrusted", "peer_expired", "peer_no_certificate"])
  })
})

describe("the Go reference's TLS mode", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("our client against a reference-style TLS server: byte-identical IIP inside, the server verified with the given CA", async () => {
    // The server's certificate: a leaf of the test PKI (it has no DNS name: the client is told to check none).
    const received: Array<RawPacket> = []
    const server = tls.createServer({ key: serverCredentials.privateKeyPem, cert: serverCredentials.certificateChainPem }, (socket) => {
      const parser = new RawParser()
      socket.on("data", (chunk: Buffer) => {
        for (const packet of parser.push(chunk)) {
          received.push(packet)
          // As the reference: an unknown path (our hello) gets error 102; new_channel and /echo as captured.
          if (packet.path === "/sys/hello") socket.write(frame(5, "/sys/hello", 0, `{"code":102,"message":"handle error"}`))
          else if (packet.path === "/sys/new_channel") socket.write(Buffer.from(V.newChannel1, "hex"))
          else if (packet.path === "/echo") socket.write(frame(5, "/echo", packet.channelId, packet.data))
        }
      })
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const context = tls.createSecureContext({ ca: pki.root.certificatePem, minVersion: "TLSv1.2" })
    const client = new IipClient({
      host: "127.0.0.1",
      port: (server.address() as AddressInfo).port,
      tls: { secureContext: () => context, alpn: [], checkPeer: (certificate) => (certificate.checkIssued(new X509Certificate(pki.intermediate.certificatePem)) ? undefined : { reason: "peer_untrusted", message: "not ours" }) },
      log: () => {}
    })
    cleanup.add(() => client.close())
    expect(String(await withTimeout(client.call("/echo", "hello"), 5000, "echo over TLS"))).toBe("hello")
    expect(await client.mode()).toBe("plain")
    const [hello, newChannel, echo] = received.map(packetHex)
    expect(received[0]!.path).toBe("/sys/hello")
    expect(hello!.slice(0, 2)).toBe("01")
    expect([newChannel, echo]).toStrictEqual([V.newChannelRequest, V.echoHelloRequest])
  })

  it("our server in TLS mode without client certificates against a client that does not verify: byte-identical answers", async () => {
    const server = new IipServer({
      port: 0,
      log: () => {},
      tls: { credentials: { key: serverCredentials.privateKeyPem, cert: serverCredentials.certificateChainPem }, requireClientCertificate: false, minVersion: "TLSv1.2" }
    })
    server.handle("/echo", (request) => request.data)
    await server.listen()
    cleanup.add(() => server.close())
    const socket = tls.connect({ host: "127.0.0.1", port: server.address.port, rejectUnauthorized: false })
    cleanup.add(() => socket.destroy())
    await withTimeout(new Promise((resolve) => socket.once("secureConnect", resolve)), 5000, "handshake")
    const parser = new RawParser()
    const answers: Array<RawPacket> = []
    socket.on("data", (chunk: Buffer) => answers.push(...parser.push(chunk)))
    socket.write(Buffer.from(V.newChannelRequest, "hex"))
    await waitFor(() => answers.length >= 1, 5000, "new_channel answer")
    socket.write(Buffer.from(V.echoHelloRequest, "hex"))
    await waitFor(() => answers.length >= 2, 5000, "echo answer")
    expect(answers.map(packetHex)).toStrictEqual([V.newChannel1, V.echoHelloAnswer])
  })
})

describe("handshake timeouts", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("a connection that sends nothing, or starts a handshake and stalls, is closed at the handshake timeout", async () => {
    const refusals: Array<TlsRefusal> = []
    const server = new IipServer({ port: 0, log: () => {}, tls: { ...serverTls(serverCredentials, refusals), handshakeTimeoutMs: 300 } })
    server.handle("/who", () => "never")
    await server.listen()
    cleanup.add(() => server.close())
    for (const first of [Buffer.alloc(0), Buffer.from([0x16, 0x03, 0x01])]) {
      const socket = net.connect(server.address.port, "127.0.0.1")
      cleanup.add(() => socket.destroy())
      const started = performance.now()
      socket.on("connect", () => socket.write(first))
      socket.on("error", () => {})
      await withTimeout(new Promise((resolve) => socket.once("close", resolve)), 5000, "the close")
      expect(performance.now() - started).toBeLessThan(3000)
    }
    await waitFor(() => refusals.length === 2, 2000, "both refusals")
    expect(refusals.map((r) => r.reason)).toStrictEqual(["tls_handshake", "tls_handshake"])
  })
})
