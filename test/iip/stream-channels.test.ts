// The client's channels held by streams (src/iip/connectionPool.ts hasRoom, streamChannelsPerConnection): a
// streamed answer that never ends (a WebSocket's, a long one) keeps its channel for its whole
// life, and the client skips such a channel for new requests. With no allowance, streams as many
// as the channels leave every other request queued until its deadline; with one, the connection
// opens a channel for each stream past its limit, and other requests are answered at once. A
// tunnel (RequestOptions.tunnel) takes only those stream places; past them it fails at once. A
// tunnel waiting for a second connection to be dialled (a relay that holds the dial) must not hold
// up a request that a live connection's free channel can take; nor, at the client's limit, may a
// request be pipelined behind a tunnel sent with its body whole whose answer has not begun.
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { StreamPlacesLimit } from "../../src/iip/client.ts"
import { reply } from "../../src/iip/server.ts"
import { Overloaded } from "../../src/mux/errors.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { rejection, settle, startClient, startServer } from "../support/meshTest.ts"

/** An answer body that sends one byte and never ends. */
const endless = (): AsyncIterable<Uint8Array> => ({
  async *[Symbol.asyncIterator]() {
    yield new Uint8Array([1])
    await new Promise<never>(() => {})
  }
})

describe("channels held by streams", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  const holdStreams = async (streamChannelsPerConnection: number) => {
    const server = await startServer(cleanup)
    server.handle("/endless", () => reply(endless()))
    server.handle("/echo", (request) => request.data)
    const client = startClient(cleanup, server.address.port, { maxConnections: 1, maxChannelsPerConnection: 2, streamChannelsPerConnection })
    const controller = new AbortController()
    cleanup.add(() => controller.abort())
    // Two streamed answers: both of the connection's own channels held.
    for (let i = 0; i < 2; i++) await client.stream("/endless", Buffer.from("go"), { signal: controller.signal })
    return client
  }

  it("without an allowance, a request waits for a channel (its deadline)", async () => {
    const client = await holdStreams(0)
    const queued = rejection(client.call("/echo", "x", { timeoutMs: 300 }))
    await waitFor(() => client.stats.queued === 1, 2000, "the request to queue")
    await queued
  })

  it("with one, the connection opens a channel past its limit and the request is answered", async () => {
    const client = await holdStreams(4)
    expect((await client.call("/echo", "x", { timeoutMs: 2000 })).toString()).toBe("x")
  })

  /** A server taking 12 channels a connection, holding each /hold tunnel open; a one-connection client whose requests have `requestChannels`. */
  const tunnelPair = async (requestChannels: number, pipelineAtLimit = true) => {
    const server = await startServer(cleanup, { maxChannelsPerConnection: 12 })
    const held = { tunnels: 0 }
    server.handle("/hold", () => {
      held.tunnels++
      return reply(endless())
    })
    server.handle("/echo", (request) => request.data)
    const client = startClient(cleanup, server.address.port, { maxConnections: 1, maxChannelsPerConnection: requestChannels, streamChannelsPerConnection: 8, pipelineAtLimit })
    const controller = new AbortController()
    cleanup.add(() => controller.abort())
    const tunnel = () => client.stream("/hold", endless(), { signal: controller.signal, tunnel: true, timeoutMs: 5000 })
    return { server, client, held, tunnel }
  }

  it("a tunnel past the connection's stream places fails at once (Overloaded streamChannels, nothing sent), and requests keep their channels", async () => {
    // The server takes 12 channels a connection: the client opens 6 at most, 2 its requests', 4 stream places.
    const { client, held, tunnel } = await tunnelPair(2)
    for (let i = 0; i < 4; i++) await tunnel()
    const started = performance.now()
    const refused = await rejection(tunnel())
    expect(refused).toBeInstanceOf(Overloaded)
    expect((refused as Overloaded).limit).toBe(StreamPlacesLimit)
    expect(performance.now() - started).toBeLessThan(1000)
    expect(held.tunnels).toBe(4)
    expect(client.stats.queued).toBe(0)
    for (let i = 0; i < 3; i++) expect((await client.call("/echo", `x${i}`, { timeoutMs: 2000 })).toString()).toBe(`x${i}`)
    expect(client.stats.channels).toBeLessThanOrEqual(6)
  })

  it("a far side taking fewer than twice the requests' channels still takes tunnels: half the requests' channels, the rest theirs", async () => {
    // The client's requests have 8 channels: half of 12 leaves no place past them (before: every tunnel refused at once).
    const { client, held, tunnel } = await tunnelPair(8)
    for (let i = 0; i < 4; i++) await tunnel()
    const refused = await rejection(tunnel())
    expect((refused as Overloaded).limit).toBe(StreamPlacesLimit)
    expect(held.tunnels).toBe(4)
    // The other 4 of the 8 are the requests': 4 at once are answered, and no channel past the 8 is opened.
    const answers = await Promise.all([0, 1, 2, 3].map((i) => client.call("/echo", `y${i}`, { timeoutMs: 2000 })))
    expect(answers.map(String)).toEqual(["y0", "y1", "y2", "y3"])
    expect(client.stats.channels).toBeLessThanOrEqual(8)
  })

  it("tunnels asked for before the connection is up: those past the stream places fail once it is, and a request behind them is answered", async () => {
    // 4 stream places on the one connection; 6 tunnels and a request asked for at once, before it is dialled.
    const { client, tunnel } = await tunnelPair(2)
    const started = performance.now()
    const tunnels = Array.from({ length: 6 }, () =>
      tunnel().then(
        () => "open",
        (error) => (error instanceof Overloaded && error.limit === StreamPlacesLimit ? "refused" : String(error))
      )
    )
    const echoed = client.call("/echo", "behind", { timeoutMs: 2000 })
    expect((await echoed).toString()).toBe("behind")
    expect((await Promise.all(tunnels)).sort()).toEqual(["open", "open", "open", "open", "refused", "refused"])
    // Refused once the connection said how many places it has, not at their deadline.
    expect(performance.now() - started).toBeLessThan(1500)
  })

  it("at the client's limit, a request is not pipelined behind a tunnel whose answer has not begun", async () => {
    const server = await startServer(cleanup, { maxChannelsPerConnection: 12 })
    const gates: { head?: () => void; block?: () => void } = {}
    server.handle("/events", () => new Promise((resolve) => (gates.head = () => resolve(reply(endless())))))
    server.handle("/block", (request) => new Promise((resolve) => (gates.block = () => resolve(request.data))))
    server.handle("/echo", (request) => request.data)
    // One connection of 2 request channels; at its limit a request goes behind the least-loaded channel.
    const client = startClient(cleanup, server.address.port, { maxConnections: 1, maxChannelsPerConnection: 2, streamChannelsPerConnection: 8, pipelineAtLimit: true })
    await client.call("/echo", "warm", { timeoutMs: 2000 })
    const controller = new AbortController()
    cleanup.add(() => controller.abort())
    // An event stream's GET (a whole body) as a tunnel, its answer held back; a request holding the other channel.
    const tunnel = settle(client.stream("/events", Buffer.from("go"), { signal: controller.signal, tunnel: true, timeoutMs: 5000 }))
    const blocked = settle(client.call("/block", "blocked", { timeoutMs: 5000 }))
    await waitFor(() => gates.head !== undefined && gates.block !== undefined, 2000, "both at the server")
    const echoed = settle(client.call("/echo", "behind", { timeoutMs: 1500 }))
    // The tunnel's answer begins and never ends; the other request is answered.
    gates.head!()
    expect((await tunnel).ok).toBe(true)
    gates.block!()
    expect((await blocked).ok).toBe(true)
    const result = await echoed
    expect(result.ok ? result.value.toString() : String(result.error)).toBe("behind")
  })

  it("a tunnel gets a stream place while requests keep waiting for theirs (steady load): it does not wait for their queue to empty", async () => {
    // As the sidecar's clients (endpoints.ts): at the limit a request waits in the queue, none pipelined.
    const { server, client, held, tunnel } = await tunnelPair(2, false)
    const gates: Array<() => void> = []
    server.handle("/block", (request) => new Promise((resolve) => gates.push(() => resolve(request.data))))
    cleanup.add(() => {
      for (const open of gates.splice(0)) open()
    })
    // Both request channels held and a third request queued behind them: requests always waiting.
    const blocked = [0, 1, 2].map((i) => settle(client.call("/block", `b${i}`, { timeoutMs: 5000 })))
    await waitFor(() => gates.length === 2 && client.stats.queued === 1, 2000, "two requests held, one queued")
    // 4 stream places are free: the tunnel opens on one now, not after the requests' queue empties (its deadline first).
    const started = performance.now()
    const opened = await settle(tunnel())
    expect(opened.ok ? "open" : String(opened.error)).toBe("open")
    expect(performance.now() - started).toBeLessThan(1000)
    expect(held.tunnels).toBe(1)
    expect(client.stats.queued).toBe(1)
    for (const open of gates.splice(0)) open()
    await waitFor(() => gates.length === 1, 2000, "the queued request at the server")
    gates.splice(0)[0]!()
    expect((await Promise.all(blocked)).map((r) => (r.ok ? r.value.toString() : String(r.error)))).toEqual(["b0", "b1", "b2"])
  })
})

/**
 * A loopback relay to `port` whose first connection goes through at once and whose later ones are
 * accepted and held unrelayed (a slow dial: the client's hello goes unanswered) until `release`.
 */
const lateRelay = async (cleanup: Cleanup, port: number): Promise<{ readonly port: number; readonly held: () => number; readonly release: () => void }> => {
  const sockets = new Set<net.Socket>()
  const waiting: Array<net.Socket> = []
  let accepted = 0
  let released = false
  const relay = (socket: net.Socket) => {
    const upstream = net.connect(port, "127.0.0.1")
    sockets.add(upstream)
    upstream.on("error", () => socket.destroy())
    socket.on("error", () => upstream.destroy())
    socket.pipe(upstream).pipe(socket)
  }
  const server = net.createServer((socket) => {
    sockets.add(socket)
    if (accepted++ === 0 || released) relay(socket)
    else waiting.push(socket)
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => {
    for (const socket of sockets) socket.destroy()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return {
    port: (server.address() as net.AddressInfo).port,
    held: () => waiting.length,
    release: () => {
      released = true
      for (const socket of waiting.splice(0)) relay(socket)
    }
  }
}

describe("requests and tunnels waiting for a connection", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("a request is answered on a free channel while a tunnel waits for the second connection's dial", async () => {
    const server = await startServer(cleanup, { maxChannelsPerConnection: 12 })
    server.handle("/hold", () => reply(endless()))
    server.handle("/echo", (request) => request.data)
    const relay = await lateRelay(cleanup, server.address.port)
    // Each connection: 2 request channels, 4 stream places (half of 12 is 6).
    const client = startClient(cleanup, relay.port, { maxConnections: 2, maxChannelsPerConnection: 2, streamChannelsPerConnection: 8, pipelineAtLimit: false })
    const controller = new AbortController()
    cleanup.add(() => controller.abort())
    const tunnel = () => client.stream("/hold", endless(), { signal: controller.signal, tunnel: true, timeoutMs: 5000 })
    for (let i = 0; i < 4; i++) await tunnel()
    // The fifth has a place only on a second connection: it waits while that one is dialled (held).
    const fifth = settle(tunnel())
    await waitFor(() => relay.held() === 1, 2000, "the second connection's dial")
    const started = performance.now()
    const echoed = await settle(client.call("/echo", "past the tunnel", { timeoutMs: 1500 }))
    const waitedMs = performance.now() - started
    expect(echoed.ok ? echoed.value.toString() : String(echoed.error)).toBe("past the tunnel")
    expect(waitedMs).toBeLessThan(1000)
    // The dial completes: the tunnel takes its place there.
    relay.release()
    expect((await fifth).ok).toBe(true)
    expect(client.stats.connections).toBe(2)
  })

  it("a tunnel waiting for the dial ends at its deadline, and those waiting at the client's close end then: each with one outcome", async () => {
    const server = await startServer(cleanup, { maxChannelsPerConnection: 12 })
    server.handle("/hold", () => reply(endless()))
    const relay = await lateRelay(cleanup, server.address.port)
    const client = startClient(cleanup, relay.port, { maxConnections: 2, maxChannelsPerConnection: 2, streamChannelsPerConnection: 8, pipelineAtLimit: false })
    const controller = new AbortController()
    cleanup.add(() => controller.abort())
    // Every call of each tunnel's callback (streamWith: a second would show, a promise would hide it).
    const outcomes: Array<string> = []
    const tunnel = (timeoutMs: number) =>
      client.streamWith("/hold", endless(), { signal: controller.signal, tunnel: true, timeoutMs }, (error) => outcomes.push(error === undefined ? "open" : error._tag))
    for (let i = 0; i < 4; i++) tunnel(5000)
    await waitFor(() => outcomes.length === 4, 2000, "4 tunnels open")
    // Past the first connection's 4 places: these wait for the second's dial, which is held.
    tunnel(300)
    tunnel(20_000)
    tunnel(20_000)
    await waitFor(() => relay.held() === 1 && client.stats.queued === 3, 2000, "three tunnels waiting for the dial")
    await waitFor(() => outcomes.length === 5, 2000, "the first one's deadline")
    client.close()
    await waitFor(() => outcomes.length === 7, 2000, "the others' end at the close")
    // Nothing more comes after.
    await new Promise((resolve) => setImmediate(resolve))
    expect(outcomes).toEqual(["open", "open", "open", "open", "RequestTimeout", "ConnectionClosed", "ConnectionClosed"])
    expect(client.stats.queued).toBe(0)
  })
})
