// IIP over WebSocket (PROTOCOL.md §18), real sockets on 127.0.0.1: an IipServer attached to a
// node:http server on /iip, IipClients with `transport: "websocket"`.
// - Calls in mesh mode (bodies from 1 byte to 200 KiB, typed errors) and in plain mode (a 1 MiB
//   body: one packet cut into many messages), next to the same server's TCP listener.
// - Streams: 8 MiB up and echoed back as it arrives, byte-identical.
// - Calls in both directions: the server calls a handler the client registered, and pushes to it.
// - Connection loss (the server's TCP sockets cut): every pending request fails at once with
//   ConnectionClosed (sent: true), long before its timeout; the client redials and works again.
// - Drain: go-away over WebSocket, the running request finishes, then the endpoint stops upgrading.
import * as Effect from "effect/Effect"
import { createHash } from "node:crypto"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { failure, reply } from "../../src/iip/server.ts"
import { ConnectFailed, ConnectionClosed } from "../../src/mux/errors.ts"
import { type MeshCallError, type MeshReply, type MeshSession, RemoteError } from "../../src/mux/meshSession.ts"
import { AcceptorChannelBase } from "../../src/protocol/mesh.ts"
import { prng } from "../helpers/prng.ts"
import { Cleanup, deferred, withTimeout } from "../support/iipRaw.ts"
import { rejection, startClient } from "../support/meshTest.ts"
import { startWebSocketClient, startWebSocketServer, type WebSocketHarness } from "./webSocketSupport.ts"

const KiB = 1024
const MiB = 1024 * KiB

describe("IIP over WebSocket", () => {
  let cleanup: Cleanup
  let harness: WebSocketHarness

  beforeEach(async () => {
    cleanup = new Cleanup()
    harness = await startWebSocketServer(cleanup, {}, { node: "ws-server" })
    // A body above one chunk (64 KiB) arrives as a stream in mesh mode.
    harness.server.handle("/echo", (request) => reply(request.context.stream ?? request.data))
    harness.server.handle("/fail", () => failure("overloaded", "busy", false))
  })

  afterEach(() => cleanup.run())

  it("calls in mesh mode and in plain mode, beside the same server's TCP listener", async () => {
    const client = startWebSocketClient(cleanup, harness.port, { node: "ws-client", maxConnections: 1 })
    expect(await client.mode()).toBe("mesh")
    expect(client.address).toBe(`ws://127.0.0.1:${harness.port}/iip`)
    const random = prng(21)
    const bodies = [1, 100, 4 * KiB, 64 * KiB - 1, 64 * KiB + 1, 200 * KiB].map((size) => random.bytes(size))
    const answers = await Promise.all(bodies.map((body) => client.call("/echo", body, { timeoutMs: 5000 })))
    answers.forEach((answer, i) => expect(Buffer.compare(answer, bodies[i]!), `body ${i}`).toBe(0))
    expect(await rejection(client.call("/fail", "x", { timeoutMs: 5000 }))).toMatchObject({ _tag: "RemoteError", code: "overloaded", processed: false })
    expect(await rejection(client.call("/nowhere", "x", { timeoutMs: 5000 }))).toBeInstanceOf(RemoteError)
    expect(harness.server.meshSessions.size).toBe(1)
    expect([...harness.server.meshSessions][0]!.remoteNode).toBe("ws-client")

    const plain = startWebSocketClient(cleanup, harness.port, { mesh: false, maxConnections: 1 })
    const big = random.bytes(MiB)
    expect(Buffer.compare(await plain.call("/echo", big, { timeoutMs: 5000 }), big)).toBe(0)
    expect(await plain.mode()).toBe("plain")
    expect((await plain.call("/nowhere", "x", { timeoutMs: 5000 })).toString()).toBe('{"code":102,"message":"handle error"}')
    expect(harness.server.sessions.size).toBe(1)

    // The same server over TCP at the same time.
    await harness.server.listen()
    const tcp = startClient(cleanup, harness.server.address.port, { maxConnections: 1 })
    expect((await tcp.call("/echo", "over tcp", { timeoutMs: 5000 })).toString()).toBe("over tcp")
    expect(harness.server.connectionCount).toBe(3)
  })

  it("streams 8 MiB up and back as it arrives, byte-identical", async () => {
    const client = startWebSocketClient(cleanup, harness.port, { maxConnections: 1 })
    const piece = prng(22).bytes(MiB)
    const sent = createHash("sha256")
    async function* upload() {
      for (let i = 0; i < 8; i++) {
        const chunk = Buffer.from(piece)
        chunk.writeUInt32BE(i, 0)
        sent.update(chunk)
        yield chunk
      }
    }
    const answer = await client.stream("/echo", upload(), { timeoutMs: 30_000 })
    const received = createHash("sha256")
    let bytes = 0
    for await (const chunk of answer.stream!) {
      received.update(chunk)
      bytes += chunk.length
    }
    expect(bytes).toBe(8 * MiB)
    expect(received.digest("hex")).toBe(sent.digest("hex"))
  })

  it("the server calls a handler the client registered, over the client's WebSocket, and pushes to it", async () => {
    const connected = deferred<MeshSession>()
    harness.server.onMeshConnection((session) => connected.resolve(session))
    const client = startWebSocketClient(cleanup, harness.port, { node: "behind-http", maxConnections: 1 })
    const pushed = deferred<string>()
    client.handle("/whoami", (request) => `behind-http answering ${request.data.toString()} (trace ${request.meta.get("trace") ?? "-"})`)
    client.handle("/notify", (request) => {
      pushed.resolve(request.data.toString())
      return "ignored"
    })
    expect(await client.mode()).toBe("mesh")
    const session = await withTimeout(connected.promise, 5000, "onMeshConnection")
    const channel = session.openChannel()
    expect(channel.id).toBe(AcceptorChannelBase + 1)
    const done = deferred<{ error: MeshCallError | undefined; reply: MeshReply | undefined }>()
    session.call(channel, "/whoami", Buffer.from("who are you?"), { timeoutMs: 5000, meta: new Map([["trace", "t-7"]]) }, (error, reply) => done.resolve({ error, reply }))
    const { error, reply: answer } = await withTimeout(done.promise, 5000, "the reverse call")
    expect(error).toBeUndefined()
    expect(answer!.data.toString()).toBe("behind-http answering who are you? (trace t-7)")
    session.push(channel, "/notify", Buffer.from("event-1"))
    expect(await withTimeout(pushed.promise, 5000, "the push")).toBe("event-1")
    // And the client's own calls still work on the same connection.
    expect((await client.call("/echo", "still here", { timeoutMs: 5000 })).toString()).toBe("still here")
    expect(client.stats.connections).toBe(1)
  })

  it("a lost connection fails every pending request at once with ConnectionClosed; the client then redials", async () => {
    const arrived: Array<string> = []
    const allArrived = deferred()
    harness.server.handle("/hang", (request) => {
      arrived.push(request.data.toString())
      if (arrived.length === 3) allArrived.resolve()
      return new Promise<Uint8Array>(() => {})
    })
    // Three idle channels ahead: each request runs on its own channel, none queued behind another.
    const client = startWebSocketClient(cleanup, harness.port, { maxConnections: 1, idleChannelsAhead: 3 })
    expect(await client.mode()).toBe("mesh")
    const started = performance.now()
    const pending = [0, 1, 2].map((i) => rejection(client.call("/hang", `r${i}`, { timeoutMs: 20_000 })))
    await withTimeout(allArrived.promise, 5000, "three requests at the server")
    for (const socket of harness.sockets) socket.destroy()
    const errors = await withTimeout(Promise.all(pending), 5000, "the pending requests to fail")
    for (const error of errors) {
      expect(error).toBeInstanceOf(ConnectionClosed)
      expect(error).toMatchObject({ sent: true })
    }
    expect(performance.now() - started).toBeLessThan(5000)
    expect((await client.call("/echo", "again", { timeoutMs: 5000 })).toString()).toBe("again")
  })

  it("drain over WebSocket: go-away, the running request finishes, the connection closes, new upgrades are no longer served", async () => {
    const release = deferred()
    const running = deferred()
    harness.server.handle("/slow", async () => {
      running.resolve()
      await release.promise
      return "finished"
    })
    const client = startWebSocketClient(cleanup, harness.port, { maxConnections: 1, reconnect: { baseMs: 10_000, maxMs: 10_000 } })
    const slow = client.call("/slow", "x", { timeoutMs: 10_000 })
    await withTimeout(running.promise, 5000, "the slow request to start")
    const drained = Effect.runPromise(harness.server.drain(5000))
    const closed = deferred()
    client.meshSessions[0]!.onClosed(() => closed.resolve())
    release.resolve()
    expect((await slow).toString()).toBe("finished")
    await withTimeout(Promise.all([drained, closed.promise]), 5000, "the drain")
    expect(harness.server.connectionCount).toBe(0)
    const late = startWebSocketClient(cleanup, harness.port, { maxConnections: 1 })
    expect(await rejection(late.mode())).toBeInstanceOf(ConnectFailed)
  })
})
