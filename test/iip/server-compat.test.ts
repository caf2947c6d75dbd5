// IipServer speaks the reference's bytes: a raw TCP socket sends the requests of the protocol
// document's test vectors (iip-protocol.md §12.1 and §12.2) and every answer is compared, in hex,
// with the bytes captured from the Go reference server (or, where the document gives no full
// vector, with bytes built from §4 and §5). Covers the new_channel handshake and id allocation,
// channel 0, the in-band error bodies, path parsing, pipelining, multi-packet requests and
// /sys/delete_channel.
import { Effect } from "effect"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { IipServer } from "../../src/iip/server.ts"
import { Cleanup, frame, hex, packetHex, RawClient } from "../support/iipRaw.ts"

/** Bytes from iip-protocol.md §12, as captured from the reference. */
const V = {
  newChannelRequest: "012f7379732f6e65775f6368616e6e656c0000000000000000027b7d",
  newChannel1: "052f7379732f6e65775f6368616e6e656c0000000000000000197b22636f6465223a302c226368616e6e656c5f6964223a317d",
  newChannel2: "052f7379732f6e65775f6368616e6e656c0000000000000000197b22636f6465223a302c226368616e6e656c5f6964223a327d",
  echoHelloRequest: "012f6563686f00000000010000000568656c6c6f",
  echoHelloAnswer: "052f6563686f00000000010000000568656c6c6f",
  echoOnChannel0: "052f6563686f000000000000000003686930",
  noSuch: "052f6e6f737563680000000001000000257b22636f6465223a3130322c226d657373616765223a2268616e646c65206572726f72227d",
  handlerError: "052f6572720000000001000000297b22636f6465223a2d312c226d657373616765223a2268616e646c6572206661696c3a626f6f6d227d",
  panic: "052f70616e696300000000010000002b7b22636f6465223a3130312c226d657373616765223a2268616e646c65206e6f20726573706f6e7365227d",
  query: "052f710000000001000000317b2270617468223a222f71222c227175657279223a7b2261223a5b2231222c2232225d2c2262223a5b22782079225d7d7d",
  percent: "052f6563686f000000000100000003706374",
  noSlashPrefix: "056563686f0000000001000000257b22636f6465223a3130322c",
  echoA: "052f6563686f00000000010000000141",
  echoB: "052f6563686f00000000010000000142",
  multiPacket: "052f6563686f00000000010000000441424344"
} as const

const newChannelAnswer = (id: number) => hex(frame(5, "/sys/new_channel", 0, `{"code":0,"channel_id":${id}}`))

describe("IipServer answers raw bytes exactly as the reference (§12)", () => {
  let cleanup: Cleanup
  let server: IipServer
  let events: Array<{ event: string; fields: Record<string, unknown> }>

  beforeEach(async () => {
    cleanup = new Cleanup()
    events = []
    server = new IipServer({ port: 0, log: (event, fields) => void events.push({ event, fields }) })
    server.handle("/echo", (request) => request.data)
    server.handle("/err", () => {
      throw new Error("boom")
    })
    server.handle("/empty", () => "")
    server.handle("/panic", () => Effect.die(new Error("kaput")))
    server.handle("/q", (request) => {
      // What the reference's test handler returned: the parsed path and the query as Go's
      // encoding/json writes a map (keys sorted).
      const query = [...request.query.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      return JSON.stringify({ path: request.path, query: Object.fromEntries(query) })
    })
    await server.listen()
    cleanup.add(() => server.close())
  })

  afterEach(() => cleanup.run())

  const connect = () => RawClient.connect(server.address.port, cleanup)

  /** A raw connection with channel 1 open, checked against the reference's handshake bytes. */
  const connectWithChannel1 = async () => {
    const raw = await connect()
    expect(packetHex(await raw.newChannel())).toBe(V.newChannel1)
    return raw
  }

  it("replays the §12.1 echo session byte for byte", async () => {
    const raw = await connect()
    raw.write(Buffer.from(V.newChannelRequest, "hex"))
    expect(packetHex(await raw.next())).toBe(V.newChannel1)
    raw.write(Buffer.from(V.echoHelloRequest, "hex"))
    expect(packetHex(await raw.next())).toBe(V.echoHelloAnswer)
  })

  it('new_channel answers exactly {"code":0,"channel_id":1}, then 2, then 3', async () => {
    const raw = await connect()
    expect(packetHex(await raw.newChannel())).toBe(V.newChannel1)
    expect(packetHex(await raw.newChannel())).toBe(V.newChannel2)
    expect(packetHex(await raw.newChannel())).toBe(newChannelAnswer(3))
    // Ids are per connection: a second connection starts at 1 again.
    const other = await connect()
    expect(packetHex(await other.newChannel())).toBe(V.newChannel1)
  })

  it("answers /echo on channel 0 without any handshake", async () => {
    const raw = await connect()
    raw.write(frame(1, "/echo", 0, "hi0"))
    expect(packetHex(await raw.next())).toBe(V.echoOnChannel0)
  })

  it('answers an unregistered path with {"code":102,"message":"handle error"} and keeps the connection', async () => {
    const raw = await connectWithChannel1()
    raw.write(frame(1, "/nosuch", 1, "x"))
    expect(packetHex(await raw.next())).toBe(V.noSuch)
    // A path without a leading slash is just another unknown path (answered with that path).
    raw.write(frame(1, "echo", 1, "x"))
    const noSlash = packetHex(await raw.next())
    expect(noSlash.startsWith(V.noSlashPrefix)).toBe(true)
    expect(noSlash).toBe(hex(frame(5, "echo", 1, '{"code":102,"message":"handle error"}')))
    raw.write(frame(1, "/echo", 1, "still open"))
    expect((await raw.next()).data.toString()).toBe("still open")
  })

  it('answers a handler that throws Error("boom") with {"code":-1,"message":"handler fail:boom"}', async () => {
    const raw = await connectWithChannel1()
    raw.write(frame(1, "/err", 1, "x"))
    expect(packetHex(await raw.next())).toBe(V.handlerError)
  })

  it('answers a handler that returns "" with {"code":101,"message":"handle no response"}', async () => {
    const raw = await connectWithChannel1()
    raw.write(frame(1, "/empty", 1, "x"))
    // The reference's /panic and /empty answers differ only in the path.
    expect(packetHex(await raw.next())).toBe(V.panic.replace(hex(Buffer.from("/panic")), hex(Buffer.from("/empty"))))
  })

  it("answers an Effect handler that dies with 101, as the reference answers a panicking handler", async () => {
    const raw = await connectWithChannel1()
    raw.write(frame(1, "/panic", 1, "x"))
    expect(packetHex(await raw.next())).toBe(V.panic)
    expect(events.some((e) => e.event === "handler-crashed" && e.fields.path === "/panic")).toBe(true)
  })

  it("answers /q?a=1&b=x%20y&a=2 with the parsed path /q and hands the handler the decoded query", async () => {
    const raw = await connectWithChannel1()
    raw.write(frame(1, "/q?a=1&b=x%20y&a=2", 1, "x"))
    expect(packetHex(await raw.next())).toBe(V.query)
  })

  it("routes /ec%68o to /echo and answers with the path /echo", async () => {
    const raw = await connectWithChannel1()
    raw.write(frame(1, "/ec%68o", 1, "pct"))
    expect(packetHex(await raw.next())).toBe(V.percent)
  })

  it("answers two requests sent in one write, in order", async () => {
    const raw = await connectWithChannel1()
    raw.write(frame(1, "/echo", 1, "A"), frame(1, "/echo", 1, "B"))
    expect(packetHex(await raw.next())).toBe(V.echoA)
    expect(packetHex(await raw.next())).toBe(V.echoB)
  })

  it('joins a multi-packet request (00 /echo "AB", then 03 /echo "CD") into one answer "ABCD"', async () => {
    const raw = await connectWithChannel1()
    raw.write(frame(0, "/echo", 1, "AB"))
    // The writer is ordered: had the first packet been answered, that answer would come before this one.
    raw.write(frame(1, "/echo", 0, "marker-0"))
    const marker0 = await raw.next()
    expect([marker0.channelId, marker0.data.toString()]).toEqual([0, "marker-0"])
    raw.write(frame(3, "/echo", 1, "CD"))
    expect(packetHex(await raw.next())).toBe(V.multiPacket)
    // Exactly one answer: the next packet on channel 1 answers the next request.
    raw.write(frame(1, "/echo", 1, "marker-1"))
    expect(packetHex(await raw.next())).toBe(hex(frame(5, "/echo", 1, "marker-1")))
  })

  it("sends nothing for /sys/delete_channel on channel 1, and a later packet on channel 1 closes the connection", async () => {
    const raw = await connectWithChannel1()
    raw.write(frame(1, "/sys/delete_channel", 1, "{}"))
    // Answers leave in order: the first thing to arrive must be this echo, not an answer to the delete.
    raw.write(frame(1, "/echo", 0, "after-delete"))
    expect(packetHex(await raw.next())).toBe(hex(frame(5, "/echo", 0, "after-delete")))
    raw.write(frame(1, "/echo", 1, "too late"))
    await raw.waitClose()
    expect(raw.packets).toEqual([])
    expect(events.some((e) => e.event === "protocol-violation" && e.fields.rule === "unknown-channel")).toBe(true)
  })

  it("hands out id 1 again on the next new_channel after /sys/delete_channel on channel 1", async () => {
    const raw = await connectWithChannel1()
    expect(packetHex(await raw.newChannel())).toBe(V.newChannel2)
    expect(packetHex(await raw.newChannel())).toBe(newChannelAnswer(3))
    raw.write(frame(1, "/sys/delete_channel", 1, "{}"))
    expect(packetHex(await raw.newChannel())).toBe(V.newChannel1)
    // The reopened channel 1 and the untouched channel 2 both serve requests.
    raw.write(frame(1, "/echo", 1, "one"), frame(1, "/echo", 2, "two"))
    expect(packetHex(await raw.next())).toBe(hex(frame(5, "/echo", 1, "one")))
    expect(packetHex(await raw.next())).toBe(hex(frame(5, "/echo", 2, "two")))
    expect(packetHex(await raw.newChannel())).toBe(newChannelAnswer(4))
  })
})
