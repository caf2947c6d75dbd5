// IIP over WebSocket on the wire (PROTOCOL.md §18), against an IipServer attached to a node:http
// server on 127.0.0.1, with hand-made WebSocket traffic:
// - The §18 vector: a raw TCP upgrade, the client's masked frame carrying plain /echo "hello",
//   and the server's answer frame, byte for byte.
// - Message boundaries mean nothing: packets cut across messages (down to one byte each) and
//   several packets in one message are all answered; what the server sends comes in messages of
//   at most 64 KiB whose concatenation is the packet stream.
// - Limits: a message above maxMessageBytes closes that connection with 1009 (an IipClient on it
//   fails its call with ConnectionClosed naming the code) while other connections go on; a text
//   message closes with 1003; an upgrade beyond maxConnections gets 503 and a wrong path 404,
//   both reported to the IipClient as ConnectFailed.
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import WebSocket from "ws"
import { ConnectFailed, ConnectionClosed } from "../../src/mux/errors.ts"
import { Cleanup, deferred, frame, hex, type RawPacket, RawParser, withTimeout } from "../support/iipRaw.ts"
import { rejection } from "../support/meshTest.ts"
import { startWebSocketClient, startWebSocketServer, type WebSocketHarness } from "./webSocketSupport.ts"

/** A `ws` client on the server's /iip that collects what it receives. */
const rawWebSocket = async (cleanup: Cleanup, port: number, path = "/iip") => {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, { perMessageDeflate: false })
  cleanup.add(() => ws.terminate())
  const messages: Array<Buffer> = []
  const packets: Array<RawPacket> = []
  const parser = new RawParser()
  let wake: (() => void) | undefined
  ws.on("message", (data: Buffer) => {
    messages.push(data)
    packets.push(...parser.push(data))
    wake?.()
  })
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.once("close", (code, reason) => resolve({ code, reason: reason.toString() })))
  await withTimeout(new Promise<void>((resolve, reject) => ws.once("open", resolve).once("error", reject)), 5000, "the upgrade")
  /** Waits (bounded) until `n` packets arrived. */
  const packetsUntil = (n: number) =>
    withTimeout(
      (async () => {
        while (packets.length < n) await new Promise<void>((resolve) => (wake = resolve))
        return packets
      })(),
      5000,
      `${n} packets`
    )
  return { ws, messages, packets, packetsUntil, closed }
}

describe("IIP over WebSocket on the wire", () => {
  let cleanup: Cleanup
  let harness: WebSocketHarness

  beforeEach(async () => {
    cleanup = new Cleanup()
    harness = await startWebSocketServer(cleanup, { maxMessageBytes: 4096, maxConnections: 3 })
    harness.server.handle("/echo", (request) => request.data)
  })

  afterEach(() => cleanup.run())

  it("the §18 vector: raw upgrade, the client's masked frame, the server's frame", async () => {
    const socket = net.connect({ host: "127.0.0.1", port: harness.port })
    cleanup.add(() => socket.destroy())
    const received: Array<Buffer> = []
    let wake: (() => void) | undefined
    socket.on("data", (chunk: Buffer) => {
      received.push(chunk)
      wake?.()
    })
    const until = (done: (bytes: Buffer) => boolean, what: string) =>
      withTimeout(
        (async () => {
          while (!done(Buffer.concat(received))) await new Promise<void>((resolve) => (wake = resolve))
          return Buffer.concat(received)
        })(),
        5000,
        what
      )
    socket.write(
      `GET /iip HTTP/1.1\r\nHost: 127.0.0.1:${harness.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`
    )
    const head = (await until((b) => b.includes("\r\n\r\n"), "the 101")).toString("latin1")
    expect(head.split("\r\n")[0]).toBe("HTTP/1.1 101 Switching Protocols")
    expect(head).toContain("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    expect(head).not.toMatch(/Sec-WebSocket-(Extensions|Protocol)/i)
    const headLength = Buffer.byteLength(head.slice(0, head.indexOf("\r\n\r\n") + 4), "latin1")
    const packet = frame(1, "/echo", 0, "hello")
    expect(hex(packet)).toBe("012f6563686f00000000000000000568656c6c6f")
    const mask = Buffer.from("01020304", "hex")
    const masked = Buffer.from(packet.map((byte, i) => byte ^ mask[i % 4]!))
    expect(hex(masked)).toBe("002d6667696d0304010203040102066c646e6f6b")
    socket.write(Buffer.concat([Buffer.of(0x82, 0x80 | packet.length), mask, masked]))
    const all = await until((b) => b.length >= headLength + 22, "the answer frame")
    expect(hex(all.subarray(headLength))).toBe("8214" + "052f6563686f00000000000000000568656c6c6f")
  })

  it("message boundaries mean nothing: packets cut to single bytes, several in one message; we send at most 64 KiB a message", async () => {
    const raw = await rawWebSocket(cleanup, harness.port)
    const stream = Buffer.concat([frame(1, "/sys/new_channel", 0, "{}"), frame(1, "/echo", 0, "one"), frame(1, "/echo", 0, "two")])
    // The first packet one byte per message, the other two in one message.
    const firstLength = frame(1, "/sys/new_channel", 0, "{}").length
    for (let i = 0; i < firstLength; i++) raw.ws.send(stream.subarray(i, i + 1))
    raw.ws.send(stream.subarray(firstLength))
    const answers = await raw.packetsUntil(3)
    expect(answers.map((p) => p.data.toString())).toStrictEqual(['{"code":0,"channel_id":1}', "one", "two"])

    // A packet larger than the server's limit on what it receives may still come back: the server
    // cuts what it sends into messages of at most 64 KiB.
    harness.server.handle("/big", () => Buffer.alloc(200 * 1024, 0x42))
    const before = raw.messages.length
    raw.ws.send(frame(1, "/big", 1, "{}"))
    const [, , , big] = await raw.packetsUntil(4)
    expect(big!.data.length).toBe(200 * 1024)
    expect(big!.data.every((byte) => byte === 0x42)).toBe(true)
    const sizes = raw.messages.slice(before).map((m) => m.length)
    expect(Math.max(...sizes)).toBeLessThanOrEqual(64 * 1024)
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(frame(5, "/big", 1, Buffer.alloc(200 * 1024)).length)
  })

  it("a message above the limit closes that connection with 1009; other connections go on", async () => {
    const bystander = startWebSocketClient(cleanup, harness.port, { maxConnections: 1 })
    expect((await bystander.call("/echo", "before", { timeoutMs: 5000 })).toString()).toBe("before")
    const raw = await rawWebSocket(cleanup, harness.port)
    raw.ws.send(Buffer.alloc(4097))
    expect((await withTimeout(raw.closed, 5000, "the close")).code).toBe(1009)

    // An IipClient whose write is larger than the limit: its connection closes, its call fails with the code.
    const sender = startWebSocketClient(cleanup, harness.port, { maxConnections: 1 })
    expect(await sender.mode()).toBe("mesh")
    const error = await rejection(sender.call("/echo", Buffer.alloc(8192, 1), { timeoutMs: 5000 }))
    expect(error).toBeInstanceOf(ConnectionClosed)
    expect((error as ConnectionClosed).message).toMatch(/1009/)

    expect((await bystander.call("/echo", "after", { timeoutMs: 5000 })).toString()).toBe("after")
  })

  it("a text message closes the connection with 1003", async () => {
    const raw = await rawWebSocket(cleanup, harness.port)
    raw.ws.send("not binary")
    expect(await withTimeout(raw.closed, 5000, "the close")).toStrictEqual({ code: 1003, reason: "IIP takes binary messages only" })
  })

  it("upgrades beyond maxConnections get 503 and a wrong path 404: the IipClient reports ConnectFailed", async () => {
    const open = await Promise.all([0, 1, 2].map(() => rawWebSocket(cleanup, harness.port)))
    expect(harness.server.connectionCount).toBe(3)
    const refused = startWebSocketClient(cleanup, harness.port, { maxConnections: 1 })
    const error = await rejection(refused.mode())
    expect(error).toBeInstanceOf(ConnectFailed)
    expect((error as ConnectFailed).message).toMatch(/HTTP 503/)
    const lost = startWebSocketClient(cleanup, harness.port, { maxConnections: 1, webSocketPath: "/elsewhere" })
    expect(((await rejection(lost.mode())) as ConnectFailed).message).toMatch(/HTTP 404/)

    // One closes: the next upgrade is accepted.
    const gone = deferred()
    harness.sockets.forEach((s) => s.once("close", () => gone.resolve()))
    open[0]!.ws.close(1000)
    await withTimeout(Promise.all([open[0]!.closed, gone.promise]), 5000, "the close")
    const accepted = startWebSocketClient(cleanup, harness.port, { maxConnections: 1 })
    expect((await accepted.call("/echo", "in", { timeoutMs: 5000 })).toString()).toBe("in")
  })

  it("a flood of upgrades beyond maxConnections: each gets 503, and connection-refused lines are throttled (at most 20 a minute, as the TCP listener's)", async () => {
    const lines: Array<{ event: string; fields: Record<string, unknown> }> = []
    const capped = await startWebSocketServer(cleanup, { maxConnections: 1 }, { log: (event, fields) => lines.push({ event, fields }) })
    await rawWebSocket(cleanup, capped.port)
    // Raw upgrade requests, as an attacker sends them: each answered 503 and closed.
    const upgrade = "GET /iip HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    const FLOOD = 100
    const statuses = await withTimeout(
      Promise.all(
        Array.from({ length: FLOOD }, () =>
          new Promise<string>((resolve) => {
            const socket = net.connect(capped.port, "127.0.0.1", () => socket.write(upgrade))
            cleanup.add(() => socket.destroy())
            let answer = ""
            socket.on("data", (chunk: Buffer) => (answer += chunk.toString("latin1")))
            socket.on("error", () => {})
            socket.once("close", () => resolve(answer.split("\r\n")[0] ?? ""))
          })
        )
      ),
      10_000,
      "the refused upgrades"
    )
    expect(statuses.every((line) => line.startsWith("HTTP/1.1 503"))).toBe(true)
    const refusedLines = lines.filter((l) => l.event === "connection-refused")
    // Before: one line per refused upgrade (100).
    expect(refusedLines.length).toBeGreaterThan(0)
    expect(refusedLines.length).toBeLessThanOrEqual(20)
    expect(refusedLines[0]!.fields["reason"]).toBe("websocket connections limited (1)")
  })
})
