// Back-pressure against a peer that stops reading (iip-protocol.md §2.6, §14: no silent drops).
// (a) Client side: a hand-played server answers the new_channel handshakes and then stops reading.
//     With a request on each of its 768 channels (48 MiB: more than loopback's socket buffers take),
//     IipClient's writer becomes congested, requests wait in its bounded queue, requests beyond
//     maxPending fail at once with Overloaded, memory stays bounded, and once the server reads
//     again every request arrives whole and in order and every call settles with its own answer.
// (b) Server side: a raw client sends 64 KiB /echo requests and never reads the answers. IipServer
//     stops reading that connection (its socket pauses, the client's writes return false and stay
//     buffered), its memory stays bounded, and once the client reads, every answer arrives, in
//     order, none dropped.
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { IipClient } from "../../src/iip/client.ts"
import type { ClientError } from "../../src/iip/clientOptions.ts"
import { IipServer } from "../../src/iip/server.ts"
import { Overloaded } from "../../src/mux/errors.ts"
import type { ServerSession } from "../../src/mux/serverSession.ts"
import type { PacketWriter } from "../../src/mux/writer.ts"
import { Cleanup, deferred, frame, liveArrayBuffers, RawParser, startRawServer, waitFor, withTimeout } from "../support/iipRaw.ts"

const KiB = 1024
const MiB = 1024 * KiB
const BODY = 64 * KiB
// Each test waits up to 10 s for the congestion and 30 s for everything to settle (48 MiB through
// loopback, slow on a loaded machine): its timeout holds both, so a slow run fails at the wait that
// names what did not come, never at vitest's 30 s default.
const TEST_MS = 10_000 + 30_000 + 10_000

/** A 64 KiB body that names its sequence number: u32 BE seq, then the seq's low byte repeated. */
const body = (seq: number): Buffer => {
  const data = Buffer.alloc(BODY, seq & 0xff)
  data.writeUInt32BE(seq, 0)
  return data
}

/** True when `data` is exactly body(seq) (length, number, filler at both ends). */
const isBody = (data: Buffer, seq: number): boolean =>
  data.length === BODY && data.readUInt32BE(0) === seq && data[4] === (seq & 0xff) && data[BODY - 1] === (seq & 0xff)

/** The writer of the client's only connection. */
const clientWriter = (client: IipClient): PacketWriter | undefined => client.sessions[0]?.connection.writer

/** The server's session for the connection whose client end is `local`. */
const serverSessionOf = (server: IipServer, local: net.Socket): ServerSession | undefined => {
  for (const session of server.sessions) {
    if (session.connection.socket.remotePort === local.localPort) return session
  }
  return undefined
}

describe("back-pressure against a peer that stops reading", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  it("client: congests its writer, refuses requests beyond maxPending with Overloaded, stays bounded, delivers all in order once the server reads", async () => {
    const TOTAL = 3000
    const MAX_PENDING = 2000
    const CHANNELS = 768
    // The hand-played server: answers CHANNELS new_channels, then stops reading. Once resumed it checks each
    // request against the next expected sequence number and answers it with that number.
    const state = { socket: undefined as net.Socket | undefined, paused: false, opened: 0, requests: 0, wrong: [] as Array<string> }
    const { port } = await startRawServer(cleanup, (socket) => {
      state.socket = socket
      const parser = new RawParser()
      socket.on("data", (chunk: Buffer) => {
        for (const packet of parser.push(chunk)) {
          if (packet.path === "/sys/new_channel") {
            socket.write(frame(5, "/sys/new_channel", 0, `{"code":0,"channel_id":${++state.opened}}`))
            if (state.opened < CHANNELS) continue
            socket.pause()
            state.paused = true
            continue
          }
          const expected = state.requests++
          if (packet.path !== "/req" || !(packet.channelId >= 1 && packet.channelId <= CHANNELS) || packet.status !== 1 || !isBody(packet.data, expected)) {
            state.wrong.push(`#${expected}: status ${packet.status} ${packet.path} on ${packet.channelId}, ${packet.data.length} bytes`)
          }
          socket.write(frame(5, "/req", packet.channelId, packet.data.subarray(0, 4)))
        }
      })
    })
    const c = new IipClient({ host: "127.0.0.1", mesh: false, port, maxConnections: 1, maxChannelsPerConnection: CHANNELS, idleChannelsAhead: 1, maxPending: MAX_PENDING, log: () => {} })
    cleanup.add(() => c.close())

    const before = liveArrayBuffers()
    const outcomes: Array<{ error: ClientError | undefined; answer: Buffer | undefined; synchronous: boolean } | undefined> = []
    let settled = 0
    const allSettled = deferred()
    const fire = (seq: number) => {
      let inSend = true
      c.send("/req", body(seq), { timeoutMs: 0 }, (error, answer) => {
        outcomes[seq] = { error, answer, synchronous: inSend }
        if (++settled === TOTAL + 1) allSettled.resolve()
      })
      inSend = false
    }
    for (let seq = 0; seq < TOTAL; seq++) fire(seq)

    // Beyond maxPending: refused at once, inside send, with Overloaded.
    expect(settled).toBe(TOTAL - MAX_PENDING)
    for (let seq = MAX_PENDING; seq < TOTAL; seq++) {
      expect(outcomes[seq]?.error).toBeInstanceOf(Overloaded)
      expect(outcomes[seq]?.synchronous).toBe(true)
    }
    expect(c.stats.pending).toBe(MAX_PENDING)

    // The channels open, the first requests go out, the server does not read: the writer congests
    // and the rest wait in the client's queue instead of piling up in the socket.
    await waitFor(() => state.paused && c.stats.channels === CHANNELS && clientWriter(c)?.congested === true, 10_000, "the client's writer to congest")
    expect(c.stats.queued).toBeGreaterThan(MAX_PENDING / 2)
    expect(clientWriter(c)!.pendingBytes).toBeLessThan(64 * MiB)
    const grown = liveArrayBuffers() - before
    expect(grown).toBeLessThan(200 * MiB)
    // Still congested and still refusing: one more request fails fast, nothing is dropped silently.
    fire(TOTAL)
    expect(outcomes[TOTAL]?.error).toBeInstanceOf(Overloaded)
    expect(settled).toBe(TOTAL - MAX_PENDING + 1)
    expect(clientWriter(c)!.congested).toBe(true)

    // The server reads again: every accepted request arrives whole and in order, and every call
    // settles with its own answer.
    state.socket!.resume()
    await withTimeout(allSettled.promise, 30_000, "every call to settle")
    expect(state.wrong).toEqual([])
    expect(state.requests).toBe(MAX_PENDING)
    for (let seq = 0; seq < MAX_PENDING; seq++) {
      const outcome = outcomes[seq]!
      expect(outcome.error).toBeUndefined()
      expect(outcome.answer!.readUInt32BE(0)).toBe(seq)
    }
    expect(c.stats).toEqual({ connections: 1, mesh: 0, channels: CHANNELS, pending: 0, queued: 0 })
  }, TEST_MS)

  it("server: stops reading a client that does not read its answers, stays bounded, then delivers every answer in order", async () => {
    const TOTAL = 1000
    const events: Array<{ event: string; fields: Record<string, unknown> }> = []
    const server = new IipServer({ port: 0, log: (event, fields) => void events.push({ event, fields }) })
    server.handle("/echo", (request) => request.data)
    await server.listen()
    cleanup.add(() => server.close())

    const socket = net.connect({ host: "127.0.0.1", port: server.address.port })
    cleanup.add(() => socket.destroy())
    socket.on("error", () => {})
    socket.pause() // never read until told to
    await withTimeout(new Promise<void>((resolve) => socket.once("connect", () => resolve())), 2000, "connect")

    // Answers are checked as they arrive, once reading starts.
    const parser = new RawParser()
    const check = { answers: 0, wrong: [] as Array<string> }
    const allAnswered = deferred()
    socket.on("data", (chunk: Buffer) => {
      for (const packet of parser.push(chunk)) {
        const expected = check.answers++
        if (packet.status !== 5 || packet.path !== "/echo" || packet.channelId !== 0 || !isBody(packet.data, expected)) {
          check.wrong.push(`#${expected}: status ${packet.status} ${packet.path} on ${packet.channelId}, ${packet.data.length} bytes, seq ${packet.data.length >= 4 ? packet.data.readUInt32BE(0) : -1}`)
        }
        if (check.answers === TOTAL) allAnswered.resolve()
      }
    })
    socket.pause() // attaching 'data' resumed the stream

    const before = liveArrayBuffers()
    // Requests on channel 0 (no handshake needed, so the client never has to read), written as
    // fast as the socket accepts them.
    let sent = 0
    let sawWriteFalse = false
    const pump = () => {
      while (sent < TOTAL) {
        const accepted = socket.write(frame(1, "/echo", 0, body(sent)))
        sent++
        if (!accepted) {
          sawWriteFalse = true
          socket.once("drain", pump)
          return
        }
      }
    }
    pump()

    // The server's writer congests, so it stops reading; then the client's writes stall.
    await waitFor(
      () => {
        const session = serverSessionOf(server, socket)
        return session !== undefined && session.connection.socket.isPaused() && session.connection.writer.congested && sawWriteFalse && socket.writableLength > 0
      },
      10_000,
      "the server to stop reading and the client's writes to stall"
    )
    const stalledAt = { sent, writable: socket.writableLength }
    expect(stalledAt.sent).toBeLessThan(TOTAL)
    expect(stalledAt.writable).toBeGreaterThan(0)
    // Bounded: what the server holds (answers queued, requests read) is a few MiB, not the
    // stream the client is trying to send.
    expect(liveArrayBuffers() - before).toBeLessThan(32 * MiB)
    expect(serverSessionOf(server, socket)!.connection.writer.pendingBytes).toBeLessThan(16 * MiB)

    // The client reads: the server resumes, every request is answered, in order, none dropped.
    socket.resume()
    await withTimeout(allAnswered.promise, 30_000, `all ${TOTAL} answers (got ${check.answers})`)
    expect(check.wrong).toEqual([])
    expect(check.answers).toBe(TOTAL)
    expect(sent).toBe(TOTAL)
    expect(events.filter((e) => e.event === "protocol-violation")).toEqual([])
    expect(server.connectionCount).toBe(1)
    expect(serverSessionOf(server, socket)!.connection.socket.isPaused()).toBe(false)
  }, TEST_MS)
})
