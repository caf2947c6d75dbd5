// Answers queued in the server's writers, all connections together (src/mux/budget.ts WriteBudget):
// many raw clients (real TCP, port 0) each send requests for 1 MiB answers and never read. Without
// a bound what the writers hold grows with the number of clients; with `maxQueuedWriteBytes` it
// stays near the bound (no connection reads new requests while it is exceeded twice over), the
// peers that never read are closed at their write timeout, their bytes released, and an honest
// client that came while the budget was spent then gets its answer. Past the bound only, one peer
// that reads nothing stops its own reading, not an honest client's.
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { IipServer } from "../../src/iip/server.ts"
import { Cleanup, frame, RawParser, waitFor, withTimeout } from "../support/iipRaw.ts"

const MiB = 1024 * 1024
const ANSWER = Buffer.alloc(MiB, 7)
const CLIENTS = 8
/** Requests each stalled client sends in one write: 32 MiB of answers, far more than loopback's buffers took here (about 4 MiB). */
const REQUESTS = 32
const BUDGET = 8 * MiB

const connect = async (cleanup: Cleanup, port: number): Promise<net.Socket> => {
  const socket = net.connect({ host: "127.0.0.1", port })
  cleanup.add(() => socket.destroy())
  socket.on("error", () => {})
  socket.pause() // never reads until told to
  await withTimeout(new Promise<void>((resolve) => socket.once("connect", () => resolve())), 5000, "connect")
  return socket
}

const requests = (count: number): Buffer => Buffer.concat(Array.from({ length: count }, () => frame(1, "/big", 0, "x")))

describe("bytes queued in the server's writers, all connections together", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  it("stays bounded while peers do not read, closes them at their write timeout, then answers an honest client", async () => {
    const events: Array<string> = []
    const server = new IipServer({ port: 0, maxQueuedWriteBytes: BUDGET, writeTimeoutMs: 500, log: (event) => void events.push(event) })
    server.handle("/big", () => ANSWER)
    await server.listen()
    cleanup.add(() => server.close())
    const port = server.address.port

    for (let i = 0; i < CLIENTS; i++) (await connect(cleanup, port)).write(requests(REQUESTS))
    const queued = () => [...server.sessions].reduce((sum, session) => sum + session.connection.writer.pendingBytes, 0)
    // Settled: every connection accepted, stopped reading, and what it read is answered.
    await waitFor(
      () => server.sessions.size === CLIENTS && [...server.sessions].every((s) => s.connection.readingPaused) && server.budget.requests === 0,
      10_000,
      "every stalled connection paused with its requests answered"
    )
    // Before the bound: about CLIENTS x 28 MiB (32 MiB each, less what loopback's buffers took).
    // With it: twice the budget plus the answers of the one read that crossed that.
    expect(queued()).toBeLessThanOrEqual(2 * BUDGET + REQUESTS * MiB)
    expect(server.writeBudget.bytes).toBeLessThanOrEqual(2 * BUDGET + REQUESTS * MiB)

    // An honest client comes while the budget is spent twice over: not read until the stalled peers are gone.
    const honest = await connect(cleanup, port)
    const parser = new RawParser()
    const answered = new Promise<number>((resolve) => {
      honest.on("data", (chunk: Buffer) => {
        for (const packet of parser.push(chunk)) resolve(packet.data.length)
      })
    })
    honest.write(requests(1))
    honest.resume()

    // The stalled peers are closed at their write timeout and release what their writers held;
    // each one paused unread is read once the budget is free, fills it, and is closed in turn.
    await waitFor(() => server.connectionCount === 1, 30_000, "only the honest connection left")
    expect(await withTimeout(answered, 20_000, "the honest client's answer")).toBe(MiB)
    expect(events.filter((e) => e === "write-timeout").length).toBe(CLIENTS)
    await waitFor(() => server.writeBudget.bytes === 0, 10_000, "the write budget released")
  })

  it("a peer that reads nothing stops only its own reading: past the bound, an honest client is read and answered before that peer's write timeout", async () => {
    const budget = 32 * MiB
    const server = new IipServer({ port: 0, maxQueuedWriteBytes: budget, writeTimeoutMs: 60_000, log: () => {} })
    server.handle("/big", () => ANSWER)
    await server.listen()
    cleanup.add(() => server.close())
    const port = server.address.port

    // 48 MiB of answers in one read: past the bound (counted until the socket took them all, which
    // no loopback buffers seen do: about 4 MiB, at most 2 x 16 MiB), and under twice it.
    ;(await connect(cleanup, port)).write(requests(48))
    const [hostile] = [...server.sessions]
    await waitFor(() => hostile !== undefined && hostile.connection.readingPaused && server.budget.requests === 0, 10_000, "the stalled peer answered and paused")
    expect(server.writeBudget.bytes).toBeGreaterThan(budget)

    const honest = await connect(cleanup, port)
    const parser = new RawParser()
    const answers: Array<number> = []
    honest.on("data", (chunk: Buffer) => {
      for (const packet of parser.push(chunk)) answers.push(packet.data.length)
    })
    honest.resume()
    honest.write(requests(2))
    await waitFor(() => answers.length === 2, 10_000, "the honest client's two answers while the stalled peer holds the budget")
    expect(answers).toEqual([MiB, MiB])
    expect(server.connectionCount).toBe(2)
    expect(server.writeBudget.bytes).toBeGreaterThan(budget)
  })
})
