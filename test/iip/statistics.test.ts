// The reference's statistics paths over real TCP (iip-protocol.md §10, src/iip/statistics.ts): the
// JSON shapes of /sys/server_count, /sys/server_measure, /sys/path_count, /sys/path_measure and
// /sys/connection_statis, the /sys/statis text; the counts match the requests sent, received
// counters included (always 0 on the reference) and unknown paths in the server total; a peer not
// on the allow-list is answered as for a path that does not exist; no statistics without the option.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import { IipServer, type ServerOptions } from "../../src/iip/server.ts"
import { InvalidStatisticsOptions } from "../../src/iip/statistics.ts"
import { RemoteError } from "../../src/mux/meshSession.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { rejection, startClient, startServer } from "../support/meshTest.ts"

const countKeys = ["PacketsSent", "PacketReceived", "WholePacketSent", "WholePacketReceived", "BytesSent", "BytesReceived"]
const unknownPath = `{"code":102,"message":"handle error"}`

/** Bytes of one packet: status, path, NUL, channel id, length, data. */
const packet = (path: string, data: string) => 10 + Buffer.byteLength(path) + Buffer.byteLength(data)

const sum = (values: ReadonlyArray<number>) => values.reduce((a, b) => a + b, 0)

describe("statistics paths", () => {
  let cleanup: Cleanup
  let server: IipServer
  let client: IipClient

  const start = async (options: ServerOptions = {}) => {
    server = await startServer(cleanup, { statistics: { allow: ["127.0.0.1"], timeUnit: "second" }, ...options })
    server.handle("/echo", (request) => request.data)
    client = startClient(cleanup, server.address.port, { mesh: false, maxConnections: 1, maxChannelsPerConnection: 1 })
  }

  const json = async (path: string, data = "{}") => JSON.parse((await client.call(path, data, { timeoutMs: 5000 })).toString()) as Record<string, unknown>

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  it("counts every request and answer, received ones included, unknown paths in the server total", async () => {
    await start()
    const bodies = ["a", "bb", "ccc", "hello world", "x".repeat(1000)]
    for (const body of bodies) expect((await client.call("/echo", body)).toString()).toBe(body)
    expect((await client.call("/nosuch", "zz")).toString()).toBe(unknownPath)
    const echoBytes = sum(bodies.map((body) => packet("/echo", body)))
    const unknownIn = packet("/nosuch", "zz")
    const unknownOut = packet("/nosuch", unknownPath)

    // The read itself is counted as received (it is being answered), not yet as sent.
    const total = await json("/sys/server_count")
    expect(Object.keys(total)).toStrictEqual(countKeys)
    expect(total).toStrictEqual({
      PacketsSent: 6,
      PacketReceived: 7,
      WholePacketSent: 6,
      WholePacketReceived: 7,
      BytesSent: echoBytes + unknownOut,
      BytesReceived: echoBytes + unknownIn + packet("/sys/server_count", "{}")
    })
    expect(await json("/sys/path_count", "/echo")).toStrictEqual({
      PacketsSent: 5,
      PacketReceived: 5,
      WholePacketSent: 5,
      WholePacketReceived: 5,
      BytesSent: echoBytes,
      BytesReceived: echoBytes
    })
    expect((await client.call("/sys/path_count", "/nosuch")).toString()).toBe(`{"code":-1,"message":"handler fail:path [/nosuch] not support"}`)
  })

  it("/sys/server_measure and /sys/path_measure have the reference's shape: 301 one-second slots, 8 ranges, totals in ns", async () => {
    await start()
    for (let i = 0; i < 4; i++) await client.call("/echo", `m${i}`)
    const measure = await json("/sys/path_measure", "/echo")
    expect(Object.keys(measure)).toStrictEqual(["five_minute_requests", "five_minute_duration", "all_requests", "all_duration", "five_minute_timecount", "all_timecount"])
    const requests = measure.five_minute_requests as Array<number>
    const timecount = measure.five_minute_timecount as Array<{ range_count: Array<{ Duration: number; Count: number }> }>
    const all = measure.all_timecount as { range_count: Array<{ Duration: number; Count: number }> }
    expect(requests).toHaveLength(301)
    expect(measure.five_minute_duration).toHaveLength(301)
    expect(timecount).toHaveLength(301)
    expect(timecount.every((slot) => slot.range_count.length === 8)).toBe(true)
    expect(all.range_count.map((range) => Object.keys(range))).toStrictEqual(Array(8).fill(["Duration", "Count"]))
    // Oldest first: this test's requests sit in the last slots (this second, perhaps the one before).
    expect(sum(requests)).toBe(4)
    expect(requests.findIndex((n) => n > 0)).toBeGreaterThanOrEqual(299)
    expect(measure.all_requests).toBe(4)
    expect(measure.all_duration).toBe(sum(measure.five_minute_duration as Array<number>))
    expect(measure.all_duration).toBeGreaterThan(0)
    // The handler paths' ranges are in seconds here: every request is in range 1 (<= 100 s).
    expect(all.range_count.map((range) => range.Count)).toStrictEqual([4, 0, 0, 0, 0, 0, 0, 0])
    expect(all.range_count[0]!.Duration).toBe(measure.all_duration)
    const total = await json("/sys/server_measure")
    // The server total has the path_measure read in it too.
    expect(total.all_requests).toBe(5)
  })

  it("/sys/connection_statis lists each connection by the peer's address, its channels, write queue and counts", async () => {
    await start()
    await client.call("/echo", "one")
    await client.call("/echo", "two")
    const peer = [...server.sessions][0]!.connection.remoteAddress
    expect(peer).toMatch(/^127\.0\.0\.1:\d+$/)
    const report = await json("/sys/connection_statis")
    const echoed = packet("/echo", "one") + packet("/echo", "two")
    const count = {
      PacketsSent: 2,
      PacketReceived: 3,
      WholePacketSent: 2,
      WholePacketReceived: 3,
      BytesSent: echoed,
      BytesReceived: echoed + packet("/sys/connection_statis", "{}")
    }
    // The read is on the one channel, being answered: that channel's receive queue holds it.
    expect(report).toStrictEqual({ [peer]: { Channels: { "1": { ReceiveQueue: 1, Count: count } }, WriteQueue: 0, Count: count } })
  })

  it("/sys/statis is the reference's text report, averages over their own counts, every registered path listed", async () => {
    await start()
    for (let i = 0; i < 3; i++) await client.call("/echo", "r")
    const text = (await client.call("/sys/statis", `{"time_unit":"second"}`)).toString()
    const lines = text.split("\n")
    expect(lines[0]).toMatch(/^total count: \{"PacketsSent":3,"PacketReceived":4,/)
    expect(lines.slice(1, 7)).toStrictEqual([
      "total measure: ",
      "",
      "5 minute requests     : 3, average duration: 0",
      "all requests          : 3, average duration: 0",
      "5 minute timecount    : range1(3,100%, average 0), range2(0,0%, average 0), range3(0,0%, average 0), range4(0,0%, average 0), range5(0,0%, average 0), range6(0,0%, average 0), range7(0,0%, average 0), other(0,0%, average 0)",
      "all timecount         : range1(3,100%, average 0), range2(0,0%, average 0), range3(0,0%, average 0), range4(0,0%, average 0), range5(0,0%, average 0), range6(0,0%, average 0), range7(0,0%, average 0), other(0,0%, average 0)"
    ])
    const sections = lines.filter((line) => / count: \{/.test(line)).map((line) => line.slice(0, line.indexOf(" count: ")))
    expect(sections).toStrictEqual([
      "total",
      "/echo",
      "/sys/connection_statis",
      "/sys/path_count",
      "/sys/path_measure",
      "/sys/server_count",
      "/sys/server_measure",
      "/sys/statis"
    ])
    const nanos = (await client.call("/sys/statis", `{"time_unit":"nanosecond"}`)).toString()
    const average = Number(/all requests {10}: 3, average duration: (\d+)/.exec(nanos)![1])
    const echo = await json("/sys/path_measure", "/echo")
    expect(average).toBe(Math.floor((echo.all_duration as number) / 3))
  })

  it("answers a peer outside the allow-list as for a path that does not exist: 102 to a plain peer, not_found in mesh mode", async () => {
    await start({ statistics: { allow: ["10.0.0.0/8", "::1"] } })
    expect((await client.call("/echo", "still served")).toString()).toBe("still served")
    for (const path of ["/sys/server_count", "/sys/server_measure", "/sys/path_count", "/sys/path_measure", "/sys/statis", "/sys/connection_statis"]) {
      expect((await client.call(path, "/echo")).toString()).toBe(unknownPath)
    }
    const mesh = startClient(cleanup, server.address.port)
    const refused = await rejection(mesh.call("/sys/server_count", "{}", { timeoutMs: 5000 }))
    expect(refused).toBeInstanceOf(RemoteError)
    expect(refused).toMatchObject({ code: "not_found", message: "no handler for /sys/server_count", processed: false })
  })

  it("an allow-list entry in CIDR form admits the peer; a malformed entry is refused at start with its text", async () => {
    await start({ statistics: { allow: ["127.0.0.0/8"] } })
    expect(Object.keys(await json("/sys/server_count"))).toStrictEqual(countKeys)
    expect(() => new IipServer({ statistics: { allow: ["127.0.0.1/33"] } })).toThrow(InvalidStatisticsOptions)
    expect(() => new IipServer({ statistics: { allow: ["localhost"] } })).toThrow(
      `statistics allow-list entry "localhost" is not an IP address or CIDR (like 127.0.0.1 or 10.0.0.0/8)`
    )
  })

  it("without the statistics option there are no /sys statistics paths", async () => {
    server = await startServer(cleanup)
    client = startClient(cleanup, server.address.port, { mesh: false })
    expect((await client.call("/sys/server_count", "{}")).toString()).toBe(unknownPath)
    expect(server.statistics).toBeUndefined()
  })
})
