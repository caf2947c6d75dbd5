// A large answer in flight while a sidecar drains (its Scope closing, what SIGTERM does): the drain
// waits until the caller has every byte of it, within the drain timeout, whichever sidecar of the
// pair stops; so does an answer A has ended but not yet written out (pipelined requests behind a
// caller that reads nothing yet: A's socket holds it), and the request after it is answered with
// `connection: close`. An answer the drain timeout cuts ends in a way the caller can tell from a
// success: a reset, never a clean end, also for a body that runs to the close (HTTP/1.0, no length).
import * as http from "node:http"
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { type RunningSidecar, startMesh } from "../support/sidecarHarness.ts"
import { serverSide, tcpBufferMaxima } from "../support/socketBuffers.ts"

const MiB = 1024 * 1024
const SIZE = 8 * MiB
/** The answer a short drain must cut: past every buffer on the way, whatever the kernel's autotuning. */
const HUGE = 256 * MiB

/** Byte i of the answer: a pattern a cut or a reordering cannot keep. */
const answerBytes = (): Buffer => {
  const body = Buffer.alloc(SIZE)
  for (let i = 0; i < SIZE; i += 4) body.writeUInt32BE(i, i)
  return body
}
const BODY = answerBytes()
/** The size of /small: under the 64 KiB the far sidecar sends whole. */
const SMALL = 60_000

const SMALL_REQUEST = "GET /small HTTP/1.1\r\nhost: catalog\r\n\r\n"

/**
 * How many pipelined requests for /small have answers that outgrow what the caller's receive buffer
 * and A's send buffer can hold at their largest here (a fixed 100, 6 MB, all fitted in buffers of
 * 6 and 4 MiB: A then had no answer left to wait with). Written at once, read by A at once: about
 * 25 KB of requests with buffers of 32 and 4 MiB at most.
 */
const pipelinedCount = (): number => {
  const { receive, send } = tcpBufferMaxima()
  return Math.ceil((receive + send + 256 * 1024) / SMALL) + 1
}

/**
 * A has an answer its socket to `caller` could not hand to the kernel (the buffers between them are
 * full) and nothing else in hand. Asked of A's socket itself: a request count going still or A's
 * in-flight count at 0 also happen between two answers, when the kernel still has room.
 */
const waitsForCaller = (a: RunningSidecar, caller: net.Socket): boolean =>
  a.sidecar.inFlight() === 0 && serverSide(a.outboundPort, caller.localPort ?? 0)?.writableNeedDrain === true

/**
 * The app answers /big with the whole body: with a content-length, or chunked (`?chunked`); /small with
 * its first SMALL bytes; /huge (and /huge?chunked) with HUGE bytes.
 */
const bigApp: http.RequestListener = (req, res) => {
  req.resume()
  if (req.url === "/small") {
    res.writeHead(200, { "content-length": String(SMALL) })
    res.end(BODY.subarray(0, SMALL))
    return
  }
  if (req.url === "/big?chunked") {
    res.writeHead(200)
    for (let i = 0; i < SIZE; i += MiB) res.write(BODY.subarray(i, i + MiB))
    res.end()
    return
  }
  if (req.url === "/huge" || req.url === "/huge?chunked") {
    // Larger than every buffer between the app and a caller that reads nothing (loopback's receive
    // buffer grows to tcp_rmem's maximum, 32 MiB here), written as the app's socket takes it.
    res.writeHead(200, req.url === "/huge" ? { "content-length": String(HUGE) } : {})
    let sent = 0
    const more = (): void => {
      while (sent < HUGE && !res.destroyed) {
        sent += MiB
        if (!res.write(BODY.subarray(0, MiB))) return void res.once("drain", more)
      }
      if (sent >= HUGE) res.end()
    }
    more()
    return
  }
  res.writeHead(200, { "content-length": String(SIZE) })
  res.end(BODY)
}

interface RawAnswer {
  readonly head: string
  readonly body: Buffer
  /** How the connection ended: "end" (a FIN) or the socket error's code (a reset: ECONNRESET). */
  readonly ending: string
}

/**
 * A raw caller on A's outbound port: sends `request`, can pause its reading, collects everything
 * until the answer is whole (`whole` says when, from the body so far) or the connection ends
 * (`whole` undefined: the body so far is then not joined on every read, which took seconds once
 * large socket buffers let tens of MiB arrive).
 */
const rawCaller = (port: number, request: string, whole?: (body: Buffer) => boolean) => {
  const socket = net.connect(port, "127.0.0.1", () => socket.write(request))
  const chunks: Array<Buffer> = []
  let received = 0
  let slow = false
  const ended = new Promise<RawAnswer>((resolve) => {
    let ending = "end"
    const answer = (): RawAnswer => {
      const all = Buffer.concat(chunks)
      const split = all.indexOf("\r\n\r\n")
      return { head: all.subarray(0, split).toString("latin1"), body: all.subarray(split + 4), ending }
    }
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk)
      received += chunk.length
      if (slow) {
        // A slow reader: a read, then a pause, so what A writes last waits in its socket (64 KiB
        // per 5 ms is under 13 MB/s, far below what A writes on loopback; an 8 MiB answer takes
        // about 120 reads, so the pause is most of the test's time: 20 ms made it 2.4 s a case).
        socket.pause()
        setTimeout(() => socket.resume(), 5)
      }
      if (whole !== undefined && received > SIZE && whole(answer().body)) {
        ending = "whole"
        resolve(answer())
      }
    })
    socket.on("error", (error: NodeJS.ErrnoException) => (ending = error.code ?? error.message))
    socket.on("close", () => resolve(answer()))
  })
  return { socket, ended, received: () => received, readSlowly: () => (slow = true) }
}

/** The body of a chunked answer, decoded (strictly: a missing last chunk is undefined). */
const dechunk = (body: Buffer): Buffer | undefined => {
  const parts: Array<Buffer> = []
  let at = 0
  for (;;) {
    const line = body.indexOf("\r\n", at)
    if (line === -1) return undefined
    const size = Number.parseInt(body.subarray(at, line).toString("latin1"), 16)
    if (Number.isNaN(size)) return undefined
    if (size === 0) return body.subarray(line + 2).toString("latin1") === "\r\n" ? Buffer.concat(parts) : undefined
    if (body.length < line + 2 + size + 2) return undefined
    parts.push(body.subarray(line + 2, line + 2 + size))
    at = line + 2 + size + 2
  }
}

/**
 * The heads of pipelined /small answers that all arrived whole (a head, then exactly SMALL bytes of
 * the body; nothing after the last), the last saying `connection: close`, then a clean end.
 */
const wholeAnswers = (answer: RawAnswer): Array<string> => {
  const all = Buffer.concat([Buffer.from(answer.head, "latin1"), Buffer.from("\r\n\r\n"), answer.body])
  const heads: Array<string> = []
  let at = 0
  while (at < all.length) {
    const end = all.indexOf("\r\n\r\n", at)
    expect(end, `answer ${heads.length + 1} has a whole head`).toBeGreaterThan(-1)
    heads.push(all.subarray(at, end).toString("latin1"))
    const body = all.subarray(end + 4, end + 4 + SMALL)
    expect(body.equals(BODY.subarray(0, SMALL)), `answer ${heads.length} is whole`).toBe(true)
    at = end + 4 + SMALL
  }
  expect(heads.at(-1)).toMatch(/\r\nconnection: close$/)
  expect(answer.ending).toBe("end")
  return heads
}

describe("a large answer in flight while a sidecar drains", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  describe.each([
    ["A (the caller's sidecar)", "a"],
    ["B (the app's sidecar)", "b"]
  ] as const)("stopping %s", (_name, which) => {
    it.each([
      ["with a content-length", "/big"],
      ["chunked", "/big?chunked"]
    ])("a slow caller, reading only once the drain began, gets every byte of an 8 MiB answer %s", async (_framing, path) => {
      const mesh = await startMesh(cleanup, bigApp, { a: { drainTimeoutMs: 20_000 }, b: { drainTimeoutMs: 20_000 } })
      const decode = path === "/big" ? (body: Buffer) => body : dechunk
      const caller = rawCaller(mesh.a.outboundPort, `GET ${path} HTTP/1.1\r\nhost: catalog\r\n\r\n`, (body) => decode(body)?.length === SIZE)
      cleanup.add(() => caller.socket.destroy())
      // The answer has begun and backs up behind a caller that does not read.
      await waitFor(() => caller.received() > 0, 10_000, "the answer to begin")
      caller.socket.pause()
      const stopping: RunningSidecar = which === "a" ? mesh.a : mesh.b
      const stopped = stopping.stop()
      await waitFor(() => !stopping.sidecar.ready(), 5000, "the drain to begin")
      caller.readSlowly()
      caller.socket.resume()
      const answer = await withTimeout(caller.ended, 20_000, "the answer to end")
      await withTimeout(stopped, 20_000, "the sidecar to stop")
      expect(answer.head).toMatch(/^HTTP\/1\.1 200 /)
      expect(answer.ending).toBe("whole")
      const body = decode(answer.body)
      expect(body?.length).toBe(SIZE)
      expect(body?.equals(BODY)).toBe(true)
    }, 60_000)
  })

  describe.each([
    ["A (the caller's sidecar)", "a"],
    ["B (the app's sidecar)", "b"]
  ] as const)("stopping %s with a short drain timeout", (_name, which) => {
    it.each([
      ["an HTTP/1.0 answer that runs to the close", "GET /huge?chunked HTTP/1.0\r\nhost: catalog\r\n\r\n"],
      ["an HTTP/1.1 answer with a content-length", "GET /huge HTTP/1.1\r\nhost: catalog\r\n\r\n"]
    ])("a caller that reads nothing until the drain is over: %s ends in a reset, short", async (_name, request) => {
      const mesh = await startMesh(cleanup, bigApp, { a: { drainTimeoutMs: 300 }, b: { drainTimeoutMs: 300 } })
      const caller = rawCaller(mesh.a.outboundPort, request)
      cleanup.add(() => caller.socket.destroy())
      await waitFor(() => caller.received() > 0, 10_000, "the answer to begin")
      caller.socket.pause()
      await withTimeout((which === "a" ? mesh.a : mesh.b).stop(), 10_000, "the sidecar to stop")
      caller.socket.resume()
      const answer = await withTimeout(caller.ended, 10_000, "the connection to end")
      expect(answer.body.length).toBeLessThan(HUGE)
      expect(answer.ending).toBe("ECONNRESET")
    }, 30_000)
  })

  it("pipelined requests when A's drain begins: the answer written but not yet out reaches the caller whole, the next says connection: close, nothing is cut", async () => {
    const mesh = await startMesh(cleanup, bigApp, { a: { drainTimeoutMs: 20_000 } })
    // Requests for 60,000 bytes each (answers held whole at A and written at once), more than the
    // sockets can hold, and a caller that reads nothing yet.
    const COUNT = pipelinedCount()
    const caller = rawCaller(mesh.a.outboundPort, SMALL_REQUEST.repeat(COUNT))
    cleanup.add(() => caller.socket.destroy())
    caller.socket.pause()
    // A stops once the socket's buffers are full (about 3.7 MiB on this loopback, 250 KiB with 128 KiB
    // buffers): an answer waits in it, the rest wait their turn.
    await waitFor(() => waitsForCaller(mesh.a, caller.socket), 20_000, "A to wait for the caller")
    const answered = mesh.app.seen.length
    expect(answered).toBeLessThan(COUNT)
    const stopped = mesh.a.stop()
    await waitFor(() => !mesh.a.sidecar.ready(), 5000, "the drain to begin")
    caller.socket.resume()
    await withTimeout(stopped, 20_000, "A to stop")
    const answer = await withTimeout(caller.ended, 20_000, "the connection to end")
    expect(wholeAnswers(answer).length).toBeGreaterThanOrEqual(answered)
  }, 60_000)

  it("pipelined requests and a caller that reads nothing until A's drain timeout is over: the answer not yet out ends in a reset", async () => {
    const mesh = await startMesh(cleanup, bigApp, { a: { drainTimeoutMs: 300 } })
    const caller = rawCaller(mesh.a.outboundPort, SMALL_REQUEST.repeat(pipelinedCount()))
    cleanup.add(() => caller.socket.destroy())
    caller.socket.pause()
    await waitFor(() => waitsForCaller(mesh.a, caller.socket), 20_000, "A to wait for the caller")
    // A's socket finishes only once it handed the kernel its last byte, after the answer saying
    // `connection: close`; cut before that, at the deadline, the caller must see a reset. Which of
    // the two is the kernel's to say: buffers of 32 MiB at most went on growing during the 300 ms and
    // took the waiting answer and the one after it (3 runs of 4): A then ended cleanly, all out.
    let allOut = false
    serverSide(mesh.a.outboundPort, caller.socket.localPort ?? 0)!.once("finish", () => (allOut = true))
    await withTimeout(mesh.a.stop(), 10_000, "A to stop")
    caller.socket.resume()
    const answer = await withTimeout(caller.ended, 10_000, "the connection to end")
    if (allOut) wholeAnswers(answer)
    else expect(answer.ending).toBe("ECONNRESET")
  }, 30_000)
})
