// A malformed packet closes only the connection it arrived on (iip-protocol.md §2.5, §12.2).
// For every malformed row of §12.2 a raw socket sends the bad bytes; the test asserts that the
// server closes that socket, logs a `protocol-violation` event naming the broken rule (status 8
// is a normal close and logs none), sends nothing back, and goes on serving both a connection that
// was already open (same remote address before and after) and new connections. A declared length
// of 0xFFFFFFFF must close the connection without the server allocating the body.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { IipClient } from "../../src/iip/client.ts"
import { IipServer } from "../../src/iip/server.ts"
import { Cleanup, frame, liveArrayBuffers, RawClient } from "../support/iipRaw.ts"

interface Row {
  readonly name: string
  /** Sent after a new_channel that returned 1, as in the §12.2 probes. */
  readonly bytes: Buffer
  /** The rule the server must log; undefined for status 8, a normal close. */
  readonly rule: string | undefined
}

const rows: ReadonlyArray<Row> = [
  { name: "first byte 08 (close connection)", bytes: Buffer.of(0x08), rule: undefined },
  { name: "channel id 7, which is not open", bytes: frame(1, "/echo", 7, "x"), rule: "unknown-channel" },
  { name: "data length 0 (012f6563686f000000000100000000)", bytes: Buffer.from("012f6563686f000000000100000000", "hex"), rule: "length-zero" },
  {
    name: "data length 0x01000001 (16 MiB + 1), header only: closed before any body is sent",
    bytes: frame(1, "/echo", 1, "", 0x0100_0001),
    rule: "length-too-large"
  },
  { name: "status 02 on a fresh channel", bytes: frame(2, "/echo", 1, "x"), rule: "status-order" },
  { name: "status 04 (a response status) sent to a server", bytes: frame(4, "/echo", 1, "x"), rule: "status-order" },
  { name: "status 09", bytes: frame(9, "/echo", 1, "x"), rule: "invalid-status" },
  { name: "empty path (01 00 00000001 00000001 78)", bytes: Buffer.from("01000000000100000001" + "78", "hex"), rule: "path-empty" },
  {
    name: "status 01 while a 00 message is in progress",
    bytes: Buffer.concat([frame(0, "/echo", 1, "AB"), frame(1, "/echo", 1, "CD")]),
    rule: "status-order"
  }
]

describe("a malformed packet closes its connection only", () => {
  let cleanup: Cleanup
  let server: IipServer
  let events: Array<{ event: string; fields: Record<string, unknown> }>
  let bystander: IipClient
  let bystanderAddress: string

  beforeEach(async () => {
    cleanup = new Cleanup()
    events = []
    server = new IipServer({ port: 0, log: (event, fields) => void events.push({ event, fields }) })
    server.handle("/echo", (request) => request.data)
    server.handle("/whoami", (request) => request.remoteAddress)
    await server.listen()
    cleanup.add(() => server.close())
    // A connection that is already open and in use before the bad bytes arrive.
    bystander = new IipClient({ host: "127.0.0.1", port: server.address.port, maxConnections: 1, log: () => {} })
    cleanup.add(() => bystander.close())
    bystanderAddress = (await bystander.call("/whoami", "x")).toString()
  })

  afterEach(() => cleanup.run())

  /** The server still serves the open connection (same one: same remote address) and new ones. */
  const expectServerStillServing = async () => {
    expect((await bystander.call("/whoami", "x", { timeoutMs: 2000 })).toString()).toBe(bystanderAddress)
    expect((await bystander.call("/echo", "still here", { timeoutMs: 2000 })).toString()).toBe("still here")
    const fresh = new IipClient({ host: "127.0.0.1", port: server.address.port, maxConnections: 1, log: () => {} })
    cleanup.add(() => fresh.close())
    expect((await fresh.call("/echo", "new connection", { timeoutMs: 2000 })).toString()).toBe("new connection")
    expect((await fresh.call("/whoami", "x", { timeoutMs: 2000 })).toString()).not.toBe(bystanderAddress)
  }

  it.each(rows)("$name: closes the connection, logs the broken rule (none for status 8), keeps serving others", async (row) => {
    const raw = await RawClient.connect(server.address.port, cleanup)
    expect((await raw.newChannel()).data.toString()).toBe('{"code":0,"channel_id":1}')
    const violationsBefore = events.filter((e) => e.event === "protocol-violation").length
    raw.write(row.bytes)
    await raw.waitClose()
    expect(raw.packets).toEqual([]) // nothing is answered
    const violations = events.filter((e) => e.event === "protocol-violation").slice(violationsBefore)
    if (row.rule === undefined) {
      expect(violations).toEqual([])
    } else {
      expect(violations.map((e) => e.fields.rule)).toEqual([row.rule])
      expect(typeof violations[0]!.fields.message).toBe("string")
    }
    expect(server.connectionCount).toBe(1) // only the bystander is left
    await expectServerStillServing()
  })

  it("closes on a declared length of 0xFFFFFFFF without allocating the body", async () => {
    const raw = await RawClient.connect(server.address.port, cleanup)
    expect((await raw.newChannel()).data.toString()).toBe('{"code":0,"channel_id":1}')
    const before = liveArrayBuffers()
    let atClose = Number.POSITIVE_INFINITY
    void raw.closed.then(() => {
      atClose = process.memoryUsage().arrayBuffers // no collection: a freed 4 GiB body would still count
    })
    // The header plus the start of a body the server must never buffer.
    raw.write(frame(1, "/echo", 1, "", 0xffff_ffff), Buffer.alloc(64 * 1024, 0x61))
    await raw.waitClose()
    expect(atClose - before).toBeLessThan(8 * 1024 * 1024)
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(8 * 1024 * 1024)
    expect(events.filter((e) => e.event === "protocol-violation").map((e) => e.fields.rule)).toEqual(["length-too-large"])
    expect(raw.packets).toEqual([])
    await expectServerStillServing()
  })
})
