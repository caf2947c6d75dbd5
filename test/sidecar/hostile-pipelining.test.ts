// A caller on the outbound listener that pipelines requests and reads none of the answers
// (http1Connection.ts). Before, the listener answered each in turn whatever the socket held: with
// nothing read, the answers piled up in the sidecar's memory (16 KiB answers: 2,500 a second,
// 660 MB of buffers after 8 s) for as long as the caller kept sending. Now the next request is
// taken only once the socket has taken the last answer (its 'drain'): what waits is bounded by
// the socket's buffers (71 answers of 60 KiB here), and every answer still arrives, in order, once
// the caller reads. (An answer that streams waited for the drain already; one held whole did not.)
// How many answers the buffers hold varies between kernels (71 here, 4 with 128 KiB buffers, a few
// hundred with large ones, which go on growing): the tests look at A's own side of the socket instead.
// A caller that reads, however slowly, is never taken for one that does not.
import * as net from "node:net"
import type { AddressInfo } from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { HttpStreamParser } from "../support/rawHttp.ts"
import { Http1Listener } from "../../src/sidecar/http1Listener.ts"
import { call, type Mesh, startMesh } from "../support/sidecarHarness.ts"
import { serverSide, tcpBufferMaxima } from "../support/socketBuffers.ts"

const ANSWER = 60 * 1024

/**
 * Resolves once `done` holds, checked at each `tick`; fails once no tick has come for `quietMs` (an
 * answer lost, a connection stalled). Not a bound on the whole: how fast bytes move depends on the
 * kernel's buffers (answers through 4 KiB buffers take 15 s and more where 128 KiB ones take 3 s).
 */
const untilDone = (done: () => boolean, quietMs: number, what: string) => {
  let tick = () => {}
  const finished = new Promise<void>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined
    const arm = () => {
      clearTimeout(timer)
      timer = setTimeout(() => reject(new Error(`nothing for ${quietMs} ms waiting for ${what}`)), quietMs)
    }
    tick = () => {
      if (!done()) return arm()
      clearTimeout(timer)
      resolve()
    }
    tick()
  })
  return { finished, tick: () => tick() }
}

describe("a caller that pipelines requests and reads no answer", () => {
  let cleanup: Cleanup
  let mesh: Mesh
  beforeEach(async () => {
    cleanup = new Cleanup()
    mesh = await startMesh(cleanup, (req, res) => {
      // A length: the answer goes back whole (a streamed one waits on the socket's drain already).
      res.writeHead(200, { "content-type": "text/plain", "content-length": String(ANSWER), "x-path": req.url ?? "" })
      res.end("a".repeat(ANSWER))
    })
  })
  afterEach(() => cleanup.run())

  const pausedClient = () => {
    const socket = net.connect(mesh.a.outboundPort, "127.0.0.1")
    cleanup.add(() => socket.destroy())
    socket.on("error", () => {})
    socket.pause()
    return socket
  }

  it("sending without end: the sidecar answers what the socket buffers hold, then waits", async () => {
    const socket = pausedClient()
    const batch = Buffer.concat(Array.from({ length: 2000 }, () => Buffer.from("GET /p HTTP/1.1\r\nhost: catalog\r\n\r\n")))
    // As fast as the sidecar reads: its reading is what stops the caller.
    const pump = () => {
      while (!socket.destroyed && socket.write(batch));
      if (!socket.destroyed) socket.once("drain", pump)
    }
    pump()
    // A's end of the connection: an answer waits there once the kernel's buffers are full.
    await waitFor(() => serverSide(mesh.a.outboundPort, socket.localPort ?? 0)?.writableNeedDrain === true, 10_000, "an answer to wait in A's socket")
    const held = serverSide(mesh.a.outboundPort, socket.localPort ?? 0)!
    // Unbounded, 200 were answered within 1 s and more every second after (the answers piling up in
    // memory, 60 KiB each); bounded, A takes the next request only once the kernel took the last
    // answer: its socket holds about two answers at most (measured: 123,210 bytes, two answers and
    // their heads), and the app is asked for no more answers than the kernel took and a few. Not "no
    // request for 1.2 s": buffers of 32 MiB at most went on growing after they first filled (171
    // answers taken, then the 172nd 0.1-1 s later), and what the kernel takes is the kernel's to say.
    const overrun = () => held.writableLength > 3 * ANSWER || mesh.app.seen.length > (held.bytesWritten - held.writableLength) / ANSWER + 3
    await expect(waitFor(overrun, 1200, "A to hold or answer more than its socket's buffers took")).rejects.toThrow(/timed out/)
    socket.destroy()
    expect((await call(mesh.a.outboundPort, { path: "/after", timeoutMs: 2000 })).status).toBe(200)
  })

  it("every answer arrives, in order, once the caller reads", async () => {
    const socket = pausedClient()
    const parser = new HttpStreamParser("response")
    const answers: Array<string> = []
    const requests = 600
    const everyAnswer = untilDone(() => answers.length === requests, 10_000, "the next answer")
    socket.on("data", (chunk: Buffer) => {
      for (const message of parser.push(chunk)) answers.push(`${message.startLine} ${message.headers.find(([name]) => name === "x-path")?.[1]} ${message.body.length}`)
      everyAnswer.tick()
    })
    socket.write(Buffer.concat(Array.from({ length: requests }, (_, i) => Buffer.from(`GET /p${i} HTTP/1.1\r\nhost: catalog\r\n\r\n`))))
    // A holds answers back once the kernel's buffers are full (large buffers may take all 600).
    await waitFor(
      () => serverSide(mesh.a.outboundPort, socket.localPort ?? 0)?.writableNeedDrain === true || mesh.app.seen.length === requests,
      10_000,
      "an answer to wait in A's socket"
    )
    socket.resume()
    everyAnswer.tick()
    // 600 answers through two sidecars take 2.5-3.8 s on an idle 2-core machine, past 5 s under load
    // and 15 s with 4 KiB socket buffers: what fails is 10 s with no byte (an answer lost, a stall).
    await everyAnswer.finished
    expect(answers).toEqual(Array.from({ length: requests }, (_, i) => `HTTP/1.1 200 OK /p${i} ${ANSWER}`))
  }, 120_000)

  /** A bare listener (keep-alive timeout 200 ms) whose every answer is `size` bytes, held whole. */
  const listenerAnswering = async (size: number) => {
    const listener = new Http1Listener({
      maxHeaderSize: 16 * 1024,
      headersTimeoutMs: 60_000,
      requestTimeoutMs: 300_000,
      keepAliveTimeoutMs: 200,
      maxConnections: 1000,
      onRequest: (call) => {
        call.writeHead(200, [["content-length", String(size)]])
        call.end(Buffer.alloc(size))
      },
      onUpgrade: (_request, socket) => socket.destroy(),
      onH2c: (socket) => socket.destroy(),
      onStray: () => {},
      maxHeldAnswerBytes: 512 * 1024 * 1024
    })
    await new Promise<void>((resolve) => listener.server.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => {
      listener.destroyAll()
      return new Promise<void>((resolve) => listener.server.close(() => resolve()))
    })
    return listener
  }

  it("a caller that reads a large answer slowly but steadily, for longer than the keep-alive timeout, gets all of it", async () => {
    // The drain's timeout counted from the answer's end, not from the last byte taken: a live
    // reader of an answer the socket still held after keep-alive + grace was cut off mid-body.
    // The reader takes 64 KiB every 6 ms at most (whatever the size of the kernel's reads: 64 KiB
    // with default buffers, 2 KiB with 4 KiB ones), 13 MiB within the 1.2 s: the answer is what the
    // kernel's buffers can hold and 16 MiB, so the listener still holds some past keep-alive + grace.
    const { receive, send } = tcpBufferMaxima()
    const size = receive + send + 16 * 1024 * 1024
    const listener = await listenerAnswering(size)
    const listenerPort = (listener.server.address() as AddressInfo).port
    const socket = net.connect(listenerPort, "127.0.0.1")
    cleanup.add(() => socket.destroy())
    socket.on("error", () => {})
    let head = -1
    let received = 0
    let paced = 0
    let heldPastGrace: boolean | undefined = undefined
    const started = performance.now()
    const whole = untilDone(() => head >= 0 && received - head >= size, 10_000, "the next bytes of the answer")
    socket.on("data", (chunk: Buffer) => {
      if (head < 0) head = received + chunk.indexOf("\r\n\r\n") + 4
      received += chunk.length
      if (heldPastGrace === undefined && performance.now() - started > 1200) heldPastGrace = (serverSide(listenerPort, socket.localPort ?? 0)?.writableLength ?? 0) > 0
      whole.tick()
      if (received - paced < 64 * 1024) return
      // 64 KiB, then a pause of a few milliseconds: slow, never idle for long.
      paced = received
      socket.pause()
      setTimeout(() => socket.resume(), 6)
    })
    const cut = new Promise<never>((_, reject) => socket.once("close", () => reject(new Error(`closed after ${received} of ${size} bytes`))))
    socket.write("GET /big HTTP/1.1\r\nhost: catalog\r\n\r\n")
    await Promise.race([whole.finished, cut])
    // The reading took past the keep-alive timeout and its grace (200 ms + 1 s) with the answer not all taken yet.
    expect(heldPastGrace).toBe(true)
  }, 120_000)

  it("a caller that takes none of an answer for the keep-alive timeout is closed", async () => {
    const listener = await listenerAnswering(ANSWER)
    const closed = new Promise<void>((resolve) => listener.server.once("connection", (socket: net.Socket) => socket.once("close", () => resolve())))
    const socket = net.connect((listener.server.address() as AddressInfo).port, "127.0.0.1")
    cleanup.add(() => socket.destroy())
    socket.on("error", () => {})
    socket.pause()
    socket.write(Buffer.concat(Array.from({ length: 500 }, () => Buffer.from("GET /p HTTP/1.1\r\nhost: catalog\r\n\r\n"))))
    // The keep-alive timeout, its 1 s grace and a sweep: well within 3 s.
    await withTimeout(closed, 3000, "the listener to close the connection")
  })
})
