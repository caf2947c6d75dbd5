// A hostile IIP server answering our client (src/iip/client.ts, src/mux/clientSession.ts), written
// as a raw TCP server that speaks bytes (test/support/iipRaw.ts), on 127.0.0.1 port 0:
// - a /sys/new_channel answer naming a channel id no packet can carry (2^40, 1.5, 2^32): the client
//   kept the channel and failed every later call on it with PacketEncodeError (the caller's-mistake
//   error, which a load-balancing caller does not fail over on), the connection staying up;
// - seeded random answers (right, duplicated, on channels never opened, huge lengths, garbage, cut
//   mid-frame, none): every call ends, by its deadline at the latest, in an answer or a typed error;
// - a hello answer with absurd limits (the largest decodeHello takes, 1, out of range, junk): calls end;
// - a mesh server's answers garbled in flight after its hello (a proxy between a real IipServer and
//   the client flips, drops and cuts bytes, seeded): every call ends in an answer or a typed error;
// - a server that accepts and closes at once: the redials are spaced by the back-off, no tight loop.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import * as net from "node:net"
import { ChannelOpenFailed } from "../../src/mux/errors.ts"
import { prng } from "../helpers/prng.ts"
import { Cleanup, frame, RawParser, startRawServer, withTimeout } from "../support/iipRaw.ts"
import { settle, startClient, startServer } from "../support/meshTest.ts"

/** A raw plain-IIP server: each packet the client sends goes to `answer` with the socket. */
const rawServer = (cleanup: Cleanup, answer: (socket: net.Socket, packet: { path: string; channelId: number }) => void) =>
  startRawServer(cleanup, (socket) => {
    const parser = new RawParser()
    socket.on("data", (chunk) => {
      for (const packet of parser.push(chunk)) if (!socket.destroyed) answer(socket, packet)
    })
  })

const typedErrors = ["ConnectionClosed", "RequestTimeout", "ChannelOpenFailed", "ConnectFailed", "Overloaded", "RemoteError", "StreamFailed", "DecompressionFailed"]

/**
 * A TCP proxy on 127.0.0.1:0 to `port`: the client's bytes go through as they are; the server's
 * first packet (the hello's answer) has its JSON body passed through `hello`, the rest of its
 * bytes go through `garble`. (The server says nothing else before the client's first request.)
 */
const garblingProxy = async (
  cleanup: Cleanup,
  port: number,
  garble: (chunk: Buffer) => Buffer | "cut",
  hello: (answer: Record<string, unknown>) => Record<string, unknown> = (answer) => answer
) => {
  const sockets = new Set<net.Socket>()
  const proxy = net.createServer((client) => {
    const server = net.connect(port, "127.0.0.1")
    for (const socket of [client, server]) {
      sockets.add(socket)
      socket.on("error", () => {})
      socket.once("close", () => {
        sockets.delete(socket)
        client.destroy()
        server.destroy()
      })
    }
    client.pipe(server)
    const helloParser = new RawParser()
    let helloPassed = false
    server.on("data", (chunk: Buffer) => {
      if (!helloPassed) {
        const packets = helloParser.push(chunk)
        helloPassed = packets.length > 0
        for (const [i, packet] of packets.entries()) {
          const data = i === 0 ? JSON.stringify(hello(JSON.parse(packet.data.toString()) as Record<string, unknown>)) : packet.data
          client.write(frame(packet.status, packet.path, packet.channelId, data))
        }
        return
      }
      const out = garble(chunk)
      if (out === "cut") client.destroy()
      else client.write(out)
    })
  })
  await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => new Promise<void>((resolve) => {
    for (const socket of sockets) socket.destroy()
    proxy.close(() => resolve())
  }))
  return (proxy.address() as net.AddressInfo).port
}

describe("a hostile server answering the client", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("a new channel id no packet can carry (2^40, 1.5, 2^32) fails the call with ChannelOpenFailed, and the next call does not reuse it", async () => {
    for (const channelId of [2 ** 40, 1.5, 2 ** 32]) {
      let opens = 0
      const server = await rawServer(cleanup, (socket, packet) => {
        if (packet.path !== "/sys/new_channel") return void socket.write(frame(5, packet.path, packet.channelId, "ok"))
        opens++
        socket.write(frame(5, packet.path, packet.channelId, JSON.stringify({ code: 0, channel_id: channelId })))
      })
      const client = startClient(cleanup, server.port, { mesh: false })
      for (let call = 0; call < 2; call++) {
        const outcome = await settle(client.call("/x", "hi", { timeoutMs: 5000 }))
        expect(outcome.ok ? "answered" : outcome.error, `${channelId}, call ${call}`).toBeInstanceOf(ChannelOpenFailed)
      }
      // Each call asked for a channel of its own: the refused one was not kept.
      expect(opens).toBe(2)
      expect(client.stats.channels).toBe(0)
    }
  })

  it("seeded random answers: 400 calls each end by their deadline in an answer or a typed error (a hang fails at 10 s)", async () => {
    const random = prng(0x1ee7)
    const behaviours = ["right", "twice", "stray-channel", "huge-length", "garbage", "cut", "silent", "close-frame"] as const
    let behaviour: (typeof behaviours)[number] = "right"
    const server = await rawServer(cleanup, (socket, packet) => {
      if (packet.path === "/sys/new_channel") return void socket.write(frame(5, packet.path, packet.channelId, JSON.stringify({ code: 0, channel_id: random.int(1, 3) })))
      const answer = frame(5, packet.path, packet.channelId, "ok")
      if (behaviour === "right") socket.write(answer)
      else if (behaviour === "twice") socket.write(Buffer.concat([answer, answer]))
      else if (behaviour === "stray-channel") socket.write(frame(5, packet.path, random.int(4, 2 ** 32 - 1), "ok"))
      else if (behaviour === "huge-length") socket.write(frame(5, packet.path, packet.channelId, "ok", 0xffffffff))
      else if (behaviour === "garbage") socket.write(random.bytes(random.int(1, 64)))
      else if (behaviour === "cut") socket.end(answer.subarray(0, random.int(1, answer.length - 1)))
      else if (behaviour === "close-frame") socket.write(Buffer.from([8]))
    })
    const client = startClient(cleanup, server.port, { mesh: false, reconnect: { baseMs: 1, maxMs: 5 } })
    const counts = new Map<string, number>()
    for (let call = 0; call < 400; call++) {
      behaviour = random.pick(behaviours)
      const timeoutMs = behaviour === "silent" ? 20 : 2000
      // The call's own deadline ends it; the bound here only catches a hang.
      const outcome = await withTimeout(settle(client.call("/x", "hi", { timeoutMs })), 10_000, `call ${call} (${behaviour})`)
      const tag = outcome.ok ? "answered" : (outcome.error as { _tag?: string })._tag ?? String(outcome.error)
      expect(["answered", ...typedErrors], `call ${call} (${behaviour})`).toContain(tag)
      counts.set(tag, (counts.get(tag) ?? 0) + 1)
    }
    expect(client.stats.pending).toBe(0)
    expect(counts.get("answered")).toBeGreaterThan(0)
    console.log(`hostile server fuzz: ${JSON.stringify(Object.fromEntries(counts))}`)
  })

  it("a mesh server's answers garbled in flight (seeded): 150 calls each end by their deadline in an answer or a typed error", async () => {
    const random = prng(0xfeed)
    const server = await startServer(cleanup)
    server.handle("/echo", (request) => request.data)
    const port = await garblingProxy(cleanup, server.address.port, (chunk) => {
      const roll = random.int(0, 9)
      if (roll < 5) return chunk
      if (roll === 9) return "cut"
      const bytes = Buffer.from(chunk)
      for (let i = random.int(1, 4); i > 0; i--) bytes[random.int(0, bytes.length - 1)] = random.int(0, 255)
      return roll === 8 ? bytes.subarray(0, random.int(0, bytes.length)) : bytes
    })
    const client = startClient(cleanup, port, { reconnect: { baseMs: 1, maxMs: 5 } })
    const counts = new Map<string, number>()
    // A length garbled upwards leaves the client waiting for bytes that never come: its deadline ends the call.
    for (let call = 0; call < 150; call++) {
      const body = random.bytes(random.int(1, 3000))
      const outcome = await withTimeout(settle(client.call("/echo", body, { timeoutMs: 200 })), 10_000, `call ${call}`)
      const tag = outcome.ok ? "answered" : (outcome.error as { _tag?: string })._tag ?? String(outcome.error)
      expect(["answered", ...typedErrors], `call ${call}`).toContain(tag)
      counts.set(tag, (counts.get(tag) ?? 0) + 1)
    }
    expect(client.stats.pending).toBe(0)
    expect(counts.get("answered")).toBeGreaterThan(0)
    console.log(`garbled mesh answers: ${JSON.stringify(Object.fromEntries(counts))}`)
  })

  it("a hello answer with absurd limits (largest allowed, maxRequests 1, maxBytes 1, out of range): 20 calls at once each end in an answer or a typed error", async () => {
    const server = await startServer(cleanup)
    server.handle("/echo", (request) => request.data)
    const absurd: ReadonlyArray<Record<string, unknown>> = [
      { maxChannels: 0x7fff_ffff, streamWindow: 0x7fff_ffff, maxMetaBytes: 0xffff, maxRequests: 0x7fff_ffff, maxBytes: Number.MAX_SAFE_INTEGER },
      { maxRequests: 1 },
      { maxBytes: 1 },
      { maxChannels: 1, streamWindow: 1 },
      { maxChannels: 0 },
      { streamWindow: 1e300, maxRequests: -1 },
      { maxMetaBytes: "8192", maxBytes: Number.NaN },
      { iipmesh: 0xffff, features: ["x".repeat(10_000), 7, null], node: "\u009b31m".repeat(1000) }
    ]
    const summary: Array<string> = []
    for (const fields of absurd) {
      const port = await garblingProxy(cleanup, server.address.port, (chunk) => chunk, (answer) => ({ ...answer, ...fields }))
      const client = startClient(cleanup, port)
      const bodies = Array.from({ length: 20 }, (_, i) => Buffer.alloc(1 + i * 300, i))
      const outcomes = await withTimeout(Promise.all(bodies.map((body) => settle(client.call("/echo", body, { timeoutMs: 3000 })))), 10_000, JSON.stringify(fields))
      const tags = outcomes.map((outcome, i) => (outcome.ok ? (outcome.value.equals(bodies[i]!) ? "answered" : "wrong answer") : (outcome.error as { _tag?: string })._tag ?? String(outcome.error)))
      for (const tag of tags) expect(["answered", ...typedErrors], JSON.stringify(fields)).toContain(tag)
      expect(client.stats.pending).toBe(0)
      summary.push(`${Object.keys(fields).join("+")}: ${[...new Set(tags)].join("/")}, mode ${client.currentMode ?? "none"}`)
    }
    console.log(`absurd hellos: ${summary.join("; ")}`)
  })

  it("a mesh client against a server that accepts and closes at once redials with back-off: a few attempts in 3 s, not thousands", async () => {
    let accepted = 0
    const server = await startRawServer(cleanup, (socket) => {
      accepted++
      socket.destroy()
    })
    const client = startClient(cleanup, server.port)
    const cpuBefore = process.cpuUsage()
    const outcome = await settle(client.call("/x", "hi", { timeoutMs: 3000 }))
    const cpu = process.cpuUsage(cpuBefore)
    expect(outcome.ok ? "answered" : (outcome.error as { _tag: string })._tag).toBe("ConnectFailed")
    // The back-off doubles from its first delay: a tight loop would make hundreds of attempts.
    expect(accepted).toBeGreaterThanOrEqual(1)
    expect(accepted).toBeLessThan(50)
    console.log(`accept-and-close: ${accepted} attempts in 3 s, ${Math.round((cpu.user + cpu.system) / 1000)} ms CPU`)
  })
})
