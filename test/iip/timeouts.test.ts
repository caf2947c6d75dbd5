// Connection timeouts of an IIP server on Effect's TestClock (issue 13, point 5; PROTOCOL.md §15).
// Servers are made with Server.make inside `it.effect`, so their sweep runs on the test's clock;
// sockets are real (127.0.0.1, port 0) and real I/O is awaited, bounded in real time.
// - a connection that sends nothing is closed when firstPacketTimeoutMs passes, not before;
// - a packet started and never finished (slowloris) is closed packetTimeoutMs after it started;
// - a plain connection with nothing in flight is closed after idleTimeoutMs; one whose request is
//   still being handled is not;
// - a connection paused at its budget whose held requests never finish is closed after
//   packetTimeoutMs (a paused socket cannot even see its peer leave); one paused because its peer
//   reads its answers slowly is not; one whose peer takes nothing it writes is closed after
//   writeTimeoutMs, and taking some starts that timeout again;
// - 200 silent sockets fill maxConnections: a new caller takes the place of the oldest of them
//   (it proved nothing; one that sent a whole packet keeps its place: test/sidecar/hostile-inbound-slots),
//   the first-packet timeout frees the rest, and the next caller is served;
// - a mesh client's keep-alive pings keep its idle connection open for 5 minutes of an idle
//   timeout of 1 minute, and it still answers after;
// - the same first-packet rule holds for IIP over WebSocket.
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import WebSocket from "ws"
import * as Client from "../../src/iip/client.ts"
import * as Server from "../../src/iip/server.ts"
import { Supervisor } from "../../src/iip/supervisor.ts"
import { awaitReal, until, useCleanup } from "../support/effectIo.ts"
import { frame, RawClient } from "../support/iipRaw.ts"
import { collectLog } from "../support/meshTest.ts"
import { startWebSocketServer } from "./webSocketSupport.ts"

const timeouts = { firstPacketTimeoutMs: 1000, packetTimeoutMs: 2000, idleTimeoutMs: 4000 }

/** 512 MiB of answers a peer does not read: far more than loopback's buffers took on any kernel seen (6 and 4 MiB, 38 MiB). */
const MAX_BIG_ANSWERS = 64

/**
 * A server whose /big answers 8 MiB, and a raw client with a channel open that does not read.
 * `backUp` sends one request at a time until the server stops reading and its writer waits for
 * the peer: however much the kernel's buffers take, the answers back up in the server's writer
 * once they are full (the first did with maxima of 128 KiB, 32 MiB and 2 GiB; another kernel took
 * one whole into buffers of 6 and 4 MiB). Never more than needed: it was a request per 8 MiB of
 * both maxima (513 at 2 GiB).
 */
const bigAnswers = (options: Server.ServerOptions) =>
  Effect.gen(function*() {
    const cleanup = yield* useCleanup
    // No idle timeout: 16 MiB buffers went on taking the last answer after `backUp` saw the writer
    // wait (the kernel grows a socket's send buffer as its peer acknowledges); the connection,
    // then neither paused nor busy, was closed idle at 4 s, which is not what these cases test.
    const server = yield* Server.make({ ...timeouts, idleTimeoutMs: 0, drainTimeoutMs: 0, ...options })
    let handled = 0
    server.handle("/big", () => {
      handled++
      return Buffer.alloc(8 * 1024 * 1024, 0x62)
    })
    const raw = yield* Effect.promise(() => RawClient.connect(server.address.port, cleanup))
    yield* Effect.promise(() => raw.newChannel())
    raw.socket.pause()
    const connection = [...server.sessions][0]!.connection
    const backedUp = () => connection.readingPaused && connection.writer.waitingForPeer
    const backUp = Effect.gen(function*() {
      for (let sent = 1; !backedUp(); sent++) {
        expect(sent, "8 MiB answers sent without the server backing up").toBeLessThanOrEqual(MAX_BIG_ANSWERS)
        const before = handled
        raw.write(frame(1, "/big", 1, "{}"))
        yield* until(() => backedUp() || handled > before, "the server to answer or back up")
      }
    })
    return { server, raw, connection, backUp, handled: () => handled }
  })

describe("connection timeouts on the TestClock", () => {
  it.effect("a connection that sends nothing is closed when firstPacketTimeoutMs passes, not before", () =>
    Effect.gen(function*() {
      const cleanup = yield* useCleanup
      const { events, log } = collectLog()
      const server = yield* Server.make({ ...timeouts, drainTimeoutMs: 0, log })
      const raw = yield* Effect.promise(() => RawClient.connect(server.address.port, cleanup))
      yield* until(() => server.connectionCount === 1, "the accept")
      yield* TestClock.adjust("999 millis")
      expect(server.connectionCount).toBe(1)
      yield* TestClock.adjust("1 millis")
      expect(server.connectionCount).toBe(0)
      yield* awaitReal(raw.waitClose(), "the close")
      expect(events.find((e) => e.event === "no-first-packet")?.fields.reason).toBe("no complete first packet within 1000 ms")
    }))

  it.effect("the sweep stops with no connection left and starts again with the next one, whose timeout still holds", () =>
    Effect.gen(function*() {
      const cleanup = yield* useCleanup
      const { events, log } = collectLog()
      const server = yield* Server.make({ ...timeouts, drainTimeoutMs: 0, log })
      const first = yield* Effect.promise(() => RawClient.connect(server.address.port, cleanup))
      yield* until(() => server.connectionCount === 1, "the first accept")
      yield* TestClock.adjust("1000 millis")
      yield* awaitReal(first.waitClose(), "the first close")
      // Nothing watched: the next sweep ends the fiber (no tick while idle).
      yield* TestClock.adjust("250 millis")
      yield* TestClock.adjust("10 seconds")
      const second = yield* Effect.promise(() => RawClient.connect(server.address.port, cleanup))
      yield* until(() => server.connectionCount === 1, "the second accept")
      yield* TestClock.adjust("999 millis")
      expect(server.connectionCount).toBe(1)
      yield* TestClock.adjust("1 millis")
      expect(server.connectionCount).toBe(0)
      yield* awaitReal(second.waitClose(), "the second close")
      expect(events.filter((e) => e.event === "no-first-packet").length).toBe(2)
    }))

  it.effect("a packet started and never finished is closed packetTimeoutMs after it started", () =>
    Effect.gen(function*() {
      const cleanup = yield* useCleanup
      const { events, log } = collectLog()
      const server = yield* Server.make({ ...timeouts, drainTimeoutMs: 0, log })
      const raw = yield* Effect.promise(() => RawClient.connect(server.address.port, cleanup))
      const channel = yield* Effect.promise(() => raw.newChannel())
      expect(channel.data.toString()).toBe('{"code":0,"channel_id":1}')
      const session = [...server.sessions][0]!
      // A request declaring 100 bytes, of which 10 ever come.
      raw.write(frame(1, "/echo", 1, Buffer.alloc(100)).subarray(0, 27))
      yield* until(() => session.connection.midPacket, "the server to read the start of the packet")
      yield* TestClock.adjust("1500 millis")
      expect(server.connectionCount).toBe(1)
      yield* TestClock.adjust("1000 millis")
      expect(server.connectionCount).toBe(0)
      yield* awaitReal(raw.waitClose(), "the close")
      expect(events.find((e) => e.event === "packet-timeout")?.fields.reason).toBe("a packet was started and not completed within 2000 ms")
    }))

  it.effect("a connection with nothing in flight is closed after idleTimeoutMs; one whose request is still handled stays", () =>
    Effect.gen(function*() {
      const cleanup = yield* useCleanup
      const server = yield* Server.make({ ...timeouts, drainTimeoutMs: 0, log: () => {} })
      server.handle("/never", () => new Promise<string>(() => {}))
      const idle = yield* Effect.promise(() => RawClient.connect(server.address.port, cleanup))
      yield* Effect.promise(() => idle.newChannel())
      const busy = yield* Effect.promise(() => RawClient.connect(server.address.port, cleanup))
      yield* Effect.promise(() => busy.newChannel())
      busy.write(frame(1, "/never", 1, "{}"))
      yield* until(() => [...server.sessions].some((s) => !s.idle), "the request to reach its handler")
      yield* TestClock.adjust("3500 millis")
      expect(server.connectionCount).toBe(2)
      yield* TestClock.adjust("1000 millis")
      yield* awaitReal(idle.waitClose(), "the idle connection to close")
      yield* TestClock.adjust("20 seconds")
      expect(server.connectionCount).toBe(1)
      expect(busy.isClosed).toBe(false)
    }))

  it.effect("a connection paused at its budget while nothing it holds is released is closed after packetTimeoutMs (a paused socket cannot see its peer go)", () =>
    Effect.gen(function*() {
      const cleanup = yield* useCleanup
      const { events, log } = collectLog()
      const server = yield* Server.make({ ...timeouts, maxQueuedRequestsPerConnection: 2, drainTimeoutMs: 0, log })
      server.handle("/never", () => new Promise<string>(() => {}))
      const raw = yield* Effect.promise(() => RawClient.connect(server.address.port, cleanup))
      yield* Effect.promise(() => raw.newChannel())
      raw.write(frame(1, "/never", 1, "a"), frame(1, "/never", 1, "b"), frame(1, "/never", 1, "c"))
      const session = [...server.sessions][0]!
      yield* until(() => session.connection.readingPaused, "the connection to pause at its budget")
      yield* TestClock.adjust("1750 millis")
      expect(server.connectionCount).toBe(1)
      yield* TestClock.adjust("750 millis")
      expect(server.connectionCount).toBe(0)
      yield* awaitReal(raw.waitClose(), "the close")
      expect(events.find((e) => e.event === "stalled")?.fields.reason).toBe("reading paused for 2000 ms while nothing it holds was released")
    }))

  it.effect("a connection paused because its peer reads its answers slowly is not closed for it: the peer's pace decides", () =>
    Effect.gen(function*() {
      // With the idle timeout on (bigAnswers turns it off): the property is that a pause is not idleness.
      const { connection, handled, raw, server } = yield* bigAnswers({ idleTimeoutMs: timeouts.idleTimeoutMs, log: () => {} })
      // One 8 MiB answer at a time until the server stops reading: however much the kernel's
      // buffers take, the answers back up in the server's writer once they are full (the first
      // did with maxima of 128 KiB, 32 MiB and 2 GiB; another kernel took one whole into buffers
      // of 6 and 4 MiB). Never more than needed: it was a request per 8 MiB of both maxima (513 at 2 GiB).
      let sent = 0
      const fillUntilPaused = Effect.gen(function*() {
        while (!connection.readingPaused) {
          expect(++sent, "8 MiB answers sent without the server pausing").toBeLessThanOrEqual(MAX_BIG_ANSWERS)
          raw.write(frame(1, "/big", 1, "{}"))
          yield* until(() => connection.readingPaused || handled() === sent, "the server to answer or stop reading")
        }
      })
      // The kernel may go on taking the backlog after the pause (buffers that grow up to 16 MiB
      // did, in real time while the clock moved): the server then reads again and, with nothing
      // asked, is rightly idle. So the clock moves a second at a time, the backlog is topped up
      // whenever the server read again, and the property is asserted over a stretch the server
      // stayed paused throughout: 20 s, as before, five idle timeouts.
      const pausedStretchMs = 20_000
      let pausedFor = 0
      for (let step = 0; pausedFor < pausedStretchMs; step++) {
        expect(step, "seconds before the server stayed paused long enough").toBeLessThan(80)
        yield* fillUntilPaused
        const handledBefore = handled()
        yield* TestClock.adjust("1 second")
        expect(server.connectionCount).toBe(1)
        pausedFor = connection.readingPaused && handled() === handledBefore ? pausedFor + 1000 : 0
      }
      raw.socket.resume()
      const answer = yield* Effect.promise(() => raw.next(10_000))
      expect(answer.data.length).toBe(8 * 1024 * 1024)
    }))

  it.effect("a peer that takes none of its answers is closed at writeTimeoutMs; taking some starts the timeout again", () =>
    Effect.gen(function*() {
      const { events, log } = collectLog()
      const { backUp, connection, raw, server } = yield* bigAnswers({ writeTimeoutMs: 10_000, log })
      yield* backUp
      yield* TestClock.adjust("9 seconds")
      expect(server.connectionCount).toBe(1)
      // The peer reads until its socket took one write, then stops again: the timeout starts over.
      // Eight more requests wait for the server to read again, so that what it then writes is far
      // more than the kernel's buffers take: backed up by one answer only, 16 MiB buffers took the
      // rest after the pause, the writer waited for nothing and the connection was idle.
      const taken = connection.writer.writesTaken
      const packets = connection.packetsReceived
      raw.write(...Array.from({ length: 8 }, () => frame(1, "/big", 1, "{}")))
      raw.socket.resume()
      yield* until(() => connection.writer.writesTaken > taken, "the peer to take a write")
      raw.socket.pause()
      yield* until(
        () => connection.packetsReceived === packets + 8 && connection.readingPaused && connection.writer.waitingForPeer,
        "the eight requests read and answered, their 64 MiB waiting for the peer"
      )
      yield* TestClock.adjust("9 seconds")
      expect(server.connectionCount).toBe(1)
      yield* TestClock.adjust("2 seconds")
      expect(server.connectionCount).toBe(0)
      // A paused socket cannot see the close: read what is left up to it.
      raw.socket.resume()
      yield* awaitReal(raw.waitClose(), "the close")
      expect(events.find((e) => e.event === "write-timeout")?.fields.reason).toBe("the peer took nothing written for 10000 ms")
      expect(server.writeBudget.bytes).toBe(0)
    }))

  it.effect("a peer that reads a large pipelined answer slowly is not closed at writeTimeoutMs while it takes some", () =>
    Effect.gen(function*() {
      const { events, log } = collectLog()
      const { connection, raw, server } = yield* bigAnswers({ writeTimeoutMs: 10_000, log })
      // Eight requests in one read: their 64 MiB leave in one write, which the socket takes whole
      // only once the peer read all but what the kernel's buffers hold (at most 2 x 16 MiB here).
      const packets = connection.packetsReceived
      raw.write(...Array.from({ length: 8 }, () => frame(1, "/big", 1, "{}")))
      yield* until(() => connection.packetsReceived === packets + 8 && connection.writer.waitingForPeer, "the eight answers written")
      // 1 MiB taken every 3 s: slow, but reading.
      for (let step = 1; step <= 5; step++) {
        const before = raw.bytesIn
        raw.socket.resume()
        yield* until(() => raw.bytesIn >= before + 1024 * 1024, "the peer to read 1 MiB")
        raw.socket.pause()
        yield* TestClock.adjust("3 seconds")
        expect(server.connectionCount, `closed after ${step * 3} s of a peer reading 1 MiB every 3 s`).toBe(1)
      }
      expect(connection.writer.waitingForPeer).toBe(true)
      expect(events.filter((e) => e.event === "write-timeout")).toEqual([])
    }))

  it.effect("200 silent sockets fill maxConnections: a newcomer evicts one, the first-packet timeout frees the rest", () =>
    Effect.gen(function*() {
      const cleanup = yield* useCleanup
      const server = yield* Server.make({ ...timeouts, maxConnections: 200, drainTimeoutMs: 0, log: () => {} })
      const silent = yield* Effect.promise(() => Promise.all(Array.from({ length: 200 }, () => RawClient.connect(server.address.port, cleanup))))
      yield* until(() => server.connectionCount === 200, "200 accepts")
      const newcomer = yield* Effect.promise(() => RawClient.connect(server.address.port, cleanup))
      yield* until(() => silent.filter((s) => s.isClosed).length === 1, "one silent socket to make way for the newcomer")
      expect(newcomer.isClosed).toBe(false)
      expect(server.connectionCount).toBe(200)
      yield* TestClock.adjust("1 second")
      expect(server.connectionCount).toBe(0)
      yield* awaitReal(Promise.all(silent.map((s) => s.waitClose())), "the silent sockets to close")
      const served = yield* Effect.promise(() => RawClient.connect(server.address.port, cleanup))
      const answer = yield* Effect.promise(() => served.newChannel())
      expect(answer.data.toString()).toBe('{"code":0,"channel_id":1}')
    }))

  it.effect("a mesh client's keep-alive pings keep its idle connection open through 5 minutes of a 1-minute idle timeout", () =>
    Effect.gen(function*() {
      const server = yield* Server.make({ idleTimeoutMs: 60_000, drainTimeoutMs: 0, log: () => {} })
      server.handle("/echo", (request) => request.data)
      const client = yield* Client.make({ host: "127.0.0.1", port: server.address.port, maxConnections: 1, log: () => {} })
      expect((yield* Effect.promise(() => client.call("/echo", "first", { timeoutMs: 0 }))).toString()).toBe("first")
      const session = client.meshSessions[0]!
      for (let second = 0; second < 300; second++) {
        yield* TestClock.adjust("1 second")
        // Let each ping's answer arrive (real I/O) before the clock moves on.
        yield* until(() => session.ownControl.outstanding === 0 && [...server.meshSessions].every((s) => s.ownControl.outstanding === 0), "ping answers")
      }
      expect(session.closed).toBe(false)
      expect(session.lastRttMs).toBeDefined()
      expect((yield* Effect.promise(() => client.call("/echo", "after 5 minutes", { timeoutMs: 0 }))).toString()).toBe("after 5 minutes")
      expect(client.stats.connections).toBe(1)
    }))

  it.effect("IIP over WebSocket: a WebSocket that sends nothing is closed at the first-packet timeout", () =>
    Effect.gen(function*() {
      const cleanup = yield* useCleanup
      const supervisor = yield* Supervisor.current
      const harness = yield* Effect.promise(() => startWebSocketServer(cleanup, {}, { ...timeouts, supervisor }))
      const ws = new WebSocket(`ws://127.0.0.1:${harness.port}/iip`)
      cleanup.add(() => ws.terminate())
      const closed = new Promise<number>((resolve) => ws.once("close", (code: number) => resolve(code)))
      yield* awaitReal(new Promise<void>((resolve, reject) => ws.once("open", () => resolve()).once("error", reject)), "the WebSocket to open")
      yield* until(() => harness.server.connectionCount === 1, "the accept")
      yield* TestClock.adjust("999 millis")
      expect(harness.server.connectionCount).toBe(1)
      yield* TestClock.adjust("1 millis")
      expect(harness.server.connectionCount).toBe(0)
      expect(yield* awaitReal(closed, "the WebSocket to close")).toBe(1000)
    }))
})
