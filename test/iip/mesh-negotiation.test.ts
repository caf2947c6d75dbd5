// Mesh negotiation over real TCP on 127.0.0.1 (PROTOCOL.md §10). A server with `mesh: false`
// answers /sys/hello exactly as the Go reference answers an unknown path (checked byte for byte
// on a raw socket), and an IipClient that offers mesh mode falls back to plain mode against it and
// still works. Two iip-mesh peers agree on mesh mode; the features both sides use are the
// intersection of the two hellos (checked from both ends with a hand-played peer), as are the
// smaller metadata limit and each side's node name. A client closed while its hello is on its way
// closes the connection when the answer comes instead of pooling it.
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { ConnectFailed } from "../../src/mux/errors.ts"
import { decodeHello, encodeHello, MeshFeatures, MeshPath } from "../../src/protocol/mesh.ts"
import { Cleanup, deferred, frame, hex, packetHex, RawClient, RawParser, startRawServer, withTimeout } from "../support/iipRaw.ts"
import { helloOf, settle, startClient, startRawMeshPeer, startServer } from "../support/meshTest.ts"

describe("mesh negotiation", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  it("a mesh:false server answers /sys/hello with exactly {\"code\":102,\"message\":\"handle error\"} and stays plain", async () => {
    const server = await startServer(cleanup, { mesh: false })
    const raw = await RawClient.connect(server.address.port, cleanup)
    raw.write(frame(1, MeshPath.hello, 0, encodeHello(helloOf({ node: "raw-dialer" }), false)))
    const answer = await raw.next()
    // The whole packet as it crossed the socket: status 5, the path, channel 0, the reference's body.
    expect(packetHex(answer)).toBe(hex(frame(5, MeshPath.hello, 0, '{"code":102,"message":"handle error"}')))
    expect(answer.data.toString("utf8")).toBe('{"code":102,"message":"handle error"}')
    // The connection is still plain IIP: the reference's channel handshake works on it.
    const opened = await raw.newChannel()
    expect(opened.data.toString("utf8")).toBe('{"code":0,"channel_id":1}')
    expect(server.meshSessions.size).toBe(0)
  })

  it("an IipClient offering mesh ends in plain mode against a mesh:false server and its calls work", async () => {
    const server = await startServer(cleanup, { mesh: false })
    server.handle("/echo", (request) => request.data)
    const client = startClient(cleanup, server.address.port, { maxConnections: 1 })
    expect((await client.call("/echo", "hello plain", { timeoutMs: 5000 })).toString()).toBe("hello plain")
    expect(client.stats.mesh).toBe(0)
    expect(client.stats.connections).toBe(1)
    expect(client.sessions.length).toBe(1)
    expect(client.meshSessions.length).toBe(0)
    const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => client.call("/echo", `plain-${i}`, { timeoutMs: 5000 })))
    expect(answers.map((a) => a.toString())).toEqual(Array.from({ length: 10 }, (_, i) => `plain-${i}`))
    expect(server.meshSessions.size).toBe(0)
    expect(server.sessions.size).toBe(1)
  })

  it("two iip-mesh peers agree on mesh mode: stats.mesh === 1, both sessions share all features and know each other's node", async () => {
    const server = await startServer(cleanup, { node: "server-b" })
    server.handle("/echo", (request) => request.data)
    const client = startClient(cleanup, server.address.port, { node: "client-a", maxConnections: 1 })
    expect((await client.call("/echo", "hello mesh", { timeoutMs: 5000 })).toString()).toBe("hello mesh")
    expect(client.stats.mesh).toBe(1)
    expect(client.stats.connections).toBe(1)
    expect(server.meshSessions.size).toBe(1)
    expect(server.sessions.size).toBe(0)
    const serverSide = [...server.meshSessions][0]!
    const clientSide = client.meshSessions[0]!
    expect([...serverSide.agreed.features]).toEqual([...MeshFeatures])
    expect([...clientSide.agreed.features]).toEqual([...MeshFeatures])
    expect(serverSide.remoteNode).toBe("client-a")
    expect(clientSide.remoteNode).toBe("server-b")
  })

  it("the server agrees on the intersection of features and the smaller metadata limit with a dialer that offers fewer", async () => {
    const server = await startServer(cleanup, { node: "server-b" })
    const raw = await RawClient.connect(server.address.port, cleanup)
    raw.write(frame(1, MeshPath.hello, 0, encodeHello(helloOf({ node: "picky", features: ["cancel", "teleport", "ping"], maxMetaBytes: 1024 }), false)))
    const answer = await raw.next()
    expect(answer.status).toBe(5)
    expect(answer.path).toBe(MeshPath.hello)
    expect(answer.channelId).toBe(0)
    expect(JSON.parse(answer.data.toString("utf8")).code).toBe(0)
    const theirs = decodeHello(answer.data)
    expect(theirs).toBeDefined()
    expect(theirs!.node).toBe("server-b")
    expect(theirs!.features).toEqual(["ping", "cancel"])
    expect(server.meshSessions.size).toBe(1)
    const session = [...server.meshSessions][0]!
    expect([...session.agreed.features]).toEqual(["ping", "cancel"])
    expect(session.agreed.maxMetaBytes).toBe(1024)
    expect(session.remoteNode).toBe("picky")
  })

  it("the client agrees on the intersection of features with an acceptor that offers fewer", async () => {
    const peer = await startRawMeshPeer(cleanup, helloOf({ node: "small-acceptor", features: ["push", "bogus", "stream"], maxMetaBytes: 2048 }))
    const client = startClient(cleanup, peer.port, { maxConnections: 1 })
    // Any call makes the client dial; the hand-played peer never answers it.
    const pending = settle(client.call("/never-answered", "x", { timeoutMs: 0 }))
    const request = await peer.take((p) => p.path === "/never-answered", 5000, "the request on the mesh connection")
    expect(request.status).toBe(1)
    expect(request.channelId).toBe(1) // mesh mode: the dialer's first channel, opened without /sys/new_channel
    expect(peer.packets.some((p) => p.path === "/sys/new_channel")).toBe(false)
    expect(client.stats.mesh).toBe(1)
    const session = client.meshSessions[0]!
    expect([...session.agreed.features]).toEqual(["stream", "push"])
    expect(session.agreed.maxMetaBytes).toBe(2048)
    expect(session.remoteNode).toBe("small-acceptor")
    client.close()
    expect((await pending).ok).toBe(false)
  })

  it("mode(timeoutMs) fails with ConnectFailed when a peer takes the TCP connection but never answers the hello", async () => {
    const silent = net.createServer((socket) => socket.on("data", () => {}))
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => silent.close(() => resolve())))
    const accepted: Array<net.Socket> = []
    silent.on("connection", (socket) => accepted.push(socket))
    cleanup.add(() => accepted.forEach((socket) => socket.destroy()))
    const client = startClient(cleanup, (silent.address() as net.AddressInfo).port, { maxConnections: 1, connectTimeoutMs: 10_000 })
    const started = performance.now()
    const error = await client.mode(150).then(() => undefined, (e: unknown) => e)
    expect(error).toBeInstanceOf(ConnectFailed)
    expect((error as ConnectFailed).message).toContain("within 150 ms")
    expect(performance.now() - started).toBeLessThan(2000)
  })

  it("mode() waits for a connection attempt under way instead of failing with the previous attempt's error", async () => {
    const server = await startServer(cleanup)
    // A relay in front of the server: the first connection is cut at once (a failed attempt); the
    // second is held until the test opens the gate (a slow attempt, as on a lossy network).
    const secondArrived = deferred()
    const gate = deferred()
    const relayed: Array<net.Socket> = []
    let connections = 0
    const relay = net.createServer((socket) => {
      relayed.push(socket)
      if (++connections === 1) return socket.destroy()
      secondArrived.resolve()
      void gate.promise.then(() => {
        const upstream = net.connect(server.address.port, "127.0.0.1")
        relayed.push(upstream)
        socket.pipe(upstream).pipe(socket)
      })
    })
    await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => relay.close(() => resolve())))
    cleanup.add(() => relayed.forEach((socket) => socket.destroy()))
    const client = startClient(cleanup, (relay.address() as net.AddressInfo).port, { maxConnections: 1, connectTimeoutMs: 10_000 })
    // A queued call keeps the client redialling after the first attempt fails.
    const queued = settle(client.call("/echo", "x", { timeoutMs: 10_000 }))
    await withTimeout(secondArrived.promise, 5000, "the second attempt")
    const mode = settle(client.mode(5000))
    gate.resolve()
    expect(await withTimeout(mode, 5000, "mode")).toMatchObject({ ok: true, value: "mesh" })
    await withTimeout(queued, 5000, "the queued call")
  })

  it("a client closed while its hello waits for the answer does not take the connection when the answer comes: it closes it", async () => {
    // A hand-played mesh peer that holds its answer to the hello until the test lets it go.
    const helloCame = deferred()
    let answer = () => {}
    let socketClosed: Promise<void> | undefined
    const { port } = await startRawServer(cleanup, (socket) => {
      socketClosed = new Promise((resolve) => socket.once("close", () => resolve()))
      const parser = new RawParser()
      socket.on("data", (chunk: Buffer) => {
        for (const packet of parser.push(chunk)) {
          if (packet.path !== MeshPath.hello) continue
          answer = () => socket.write(frame(5, MeshPath.hello, 0, encodeHello(helloOf({ node: "late-acceptor" }), true)))
          helloCame.resolve()
        }
      })
    })
    const client = startClient(cleanup, port, { maxConnections: 1, connectTimeoutMs: 10_000 })
    const mode = settle(client.mode(10_000))
    await withTimeout(helloCame.promise, 5000, "the client's hello")
    client.close()
    expect(await mode).toMatchObject({ ok: false })
    answer()
    // Before: the late answer made it a pooled mesh connection of the closed client, open for good.
    await withTimeout(socketClosed!, 5000, "the closed client to close the connection its hello was answered on")
    expect(client.stats.connections).toBe(0)
  })
})
