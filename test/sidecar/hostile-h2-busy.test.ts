// An HTTP/2 caller on the outbound listener that keeps its connection busy (PINGs, other requests
// answered and read) but never reads one stream's answer, granting it no window. The session-wide
// checks (hostile-h2-window.test.ts) never fire for it: the session is not idle and bytes move. Each
// such stream held its answer in sidecar A for as long as the caller liked (a 64 KiB answer held
// whole, or a streamed one's chunk in the h2 stream and up to a mesh stream window behind it; 256
// streams a connection: 16 MB and more), and a streamed one kept the far app answering it. Now a
// stream whose answer makes no progress for the answer idle timeout is reset (RST_STREAM CANCEL)
// on its own: the far request is cancelled, what it held is freed, and it is counted and logged
// as answer_stalled; the session and its other streams go on. A slow reader that keeps taking its
// answer, and a stream with nothing to send, are not stalled. A caller that reads nothing of its
// socket at all gets the same: the stream is over on this side at once, counted once, though its
// RST_STREAM leaves only when the socket takes bytes again. A cut answer never looks complete to
// node's client, even one ended at A with its END_STREAM queued behind it (a guard, passed before).
import * as http from "node:http"
import * as http2 from "node:http2"
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import { type H2Listener, makeH2c } from "../../src/sidecar/outboundH2.ts"
import { h2Frame } from "../support/h2Raw.ts"
import { Cleanup, readUntil, withTimeout } from "../support/iipRaw.ts"
import { type RunningSidecar, startMesh } from "../support/sidecarHarness.ts"

const KiB = 1024

/** The stream's close, with its RST_STREAM code and the bytes read (nothing is read while the stream is paused). */
const closed = (stream: http2.ClientHttp2Stream): Promise<{ readonly rstCode: number; readonly read: number }> => {
  let read = 0
  stream.on("data", (chunk: Buffer) => (read += chunk.length))
  return new Promise((resolve) => stream.once("close", () => resolve({ rstCode: stream.rstCode ?? -1, read })))
}

/** One GET read to its end: its body's length. */
const getLength = (session: http2.ClientHttp2Session, path: string): Promise<number> => {
  const stream = session.request({ ":path": path, ":authority": "catalog" })
  stream.on("error", () => {})
  return withTimeout(closed(stream), 3000, `the answer to ${path}`).then(({ read }) => read)
}

const metric = async (sidecar: RunningSidecar, pattern: RegExp): Promise<number> => {
  const { body } = await sidecar.sidecar.telemetry.metrics.text()
  const line = body.split("\n").find((l) => pattern.test(l))
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(" ") + 1))
}

describe("an HTTP/2 caller that keeps its session busy and never reads one stream", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  /** `h2`'s connections from a server on 127.0.0.1 port 0; its port. */
  const listen = async (h2: H2Listener): Promise<number> => {
    cleanup.add(() => h2.destroyAll())
    const server = net.createServer((socket) => h2.accept(socket))
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
    return (server.address() as net.AddressInfo).port
  }

  /** A client session that PINGs every 20 ms (the session is never idle), with a per-stream window of `window` bytes. */
  const busyClient = (port: number, window: number): http2.ClientHttp2Session => {
    const session = http2.connect(`http://127.0.0.1:${port}`, { settings: { initialWindowSize: window } })
    cleanup.add(() => session.destroy())
    session.on("error", () => {})
    const pinging = setInterval(() => session.ping(() => {}), 20)
    cleanup.add(() => clearInterval(pinging))
    return session
  }

  it("the stalled stream is reset once its answer moved for none of the answer idle timeout; the quiet stream, the session and its other streams go on", async () => {
    const idleMs = 200
    const stalls: Array<number> = []
    const h2 = makeH2c((call) => {
      if (call.url === "/quiet") {
        // A long poll: its head, then nothing to send.
        call.writeHead(200, [])
        call.write(Buffer.from("waiting"))
        return
      }
      const size = call.url === "/big" ? 60 * KiB : 10
      call.writeHead(200, [["content-length", String(size)]])
      call.end(Buffer.alloc(size))
    }, { idleTimeoutMs: 60_000, maxStreams: 256, answerIdleMs: idleMs, onStalled: (streams) => stalls.push(streams), onEnded: () => {} })
    const port = await listen(h2)
    const session = busyClient(port, 4 * KiB)
    const quiet = session.request({ ":path": "/quiet", ":authority": "catalog" })
    quiet.on("error", () => {})
    const quietClosed = closed(quiet)
    let quietOpen = true
    void quietClosed.then(() => (quietOpen = false))
    const big = session.request({ ":path": "/big", ":authority": "catalog" })
    big.on("error", () => {})
    big.pause()
    const asked = performance.now()
    const bigClosed = closed(big)
    // Other streams are answered and read meanwhile.
    expect(await getLength(session, "/small")).toBe(10)
    const { rstCode } = await withTimeout(bigClosed, 3000, "the stalled stream's reset")
    expect(rstCode).toBe(http2.constants.NGHTTP2_CANCEL)
    expect(performance.now() - asked).toBeGreaterThanOrEqual(idleMs)
    expect(stalls).toStrictEqual([1])
    expect(quietOpen).toBe(true)
    expect(await getLength(session, "/small")).toBe(10)
    expect([...h2.sessions].map((s) => s.destroyed)).toStrictEqual([false])
  })

  it("a caller that reads nothing of its socket (PINGs, no reads): the stalled stream is over on this side and counted once, though its RST_STREAM cannot leave yet", async () => {
    // The RST_STREAM waits behind the answer bytes the socket cannot take: with the reset alone
    // the stream stayed open, its answer held and its exchange (the far request) never told, for
    // as long as the caller PINGed; and every sweep counted and logged it again (55 in 1.5 s here).
    // The sweeps run on a faked setInterval, by hand, one per turn of the loop below: the case
    // knows how many ran, and the count is checked after a known number more, not after a sleep.
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] })
    cleanup.add(() => vi.useRealTimers())
    const stalls: Array<number> = []
    let toldFinished: boolean | undefined
    const h2 = makeH2c((call) => {
      call.onClose((finished) => (toldFinished = finished))
      call.writeHead(200, [])
      const chunk = Buffer.alloc(64 * KiB)
      const pump = (): void => {
        while (!call.destroyed) if (!call.write(chunk)) return void call.drained().then(pump)
      }
      pump()
    }, { idleTimeoutMs: 60_000, maxStreams: 256, answerIdleMs: 100, onStalled: (streams) => stalls.push(streams), onEnded: () => {} })
    const port = await listen(h2)
    const socket = net.connect(port, "127.0.0.1")
    cleanup.add(() => socket.destroy())
    socket.on("error", () => {})
    socket.pause()
    // Windows as large as HTTP/2 allows (SETTINGS_INITIAL_WINDOW_SIZE, the connection's WINDOW_UPDATE): only the socket holds the answer back.
    const settings = Buffer.alloc(6)
    settings.writeUInt16BE(4, 0)
    settings.writeUInt32BE(0x7fffffff, 2)
    const increment = Buffer.alloc(4)
    increment.writeUInt32BE(0x7fffffff - 65535, 0)
    // HEADERS, END_STREAM | END_HEADERS: GET http://catalog/ from HPACK's static table and one literal.
    const get = Buffer.concat([Buffer.from([0x82, 0x86, 0x84, 0x41, 7]), Buffer.from("catalog")])
    socket.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), h2Frame(4, 0, 0, settings), h2Frame(8, 0, 0, increment), h2Frame(1, 5, 1, get)]))
    // Each turn: a PING from the caller, real I/O, then one sweep (a quarter of the answer idle timeout).
    const cut = (async () => {
      while (toldFinished === undefined) {
        socket.write(h2Frame(6, 0, 0, Buffer.alloc(8)))
        await new Promise((resolve) => setImmediate(resolve))
        vi.advanceTimersByTime(25)
      }
      return toldFinished
    })()
    expect(await withTimeout(cut, 3000, "the exchange to hear of the cut")).toBe(false)
    // A count that must not grow: 12 more sweeps, the caller still PINGing.
    for (let i = 0; i < 12; i++) {
      socket.write(h2Frame(6, 0, 0, Buffer.alloc(8)))
      await new Promise((resolve) => setImmediate(resolve))
      vi.advanceTimersByTime(25)
    }
    expect(stalls).toStrictEqual([1])
  })

  it("a stalled answer already ended at A (its END_STREAM queued behind it) is cut so that node's client never sees it complete: RST_STREAM CANCEL, no 'end' even when read on", async () => {
    const size = 60 * KiB
    let toldFinished: boolean | undefined
    const h2 = makeH2c((call) => {
      call.onClose((finished) => (toldFinished = finished))
      call.writeHead(200, [["content-length", String(size)]])
      call.end(Buffer.alloc(size))
    }, { idleTimeoutMs: 60_000, maxStreams: 256, answerIdleMs: 200, onStalled: () => {}, onEnded: () => {} })
    const port = await listen(h2)
    const session = busyClient(port, 4 * KiB)
    const stream = session.request({ ":path": "/ended", ":authority": "catalog" })
    stream.pause()
    const seen: Array<string> = []
    stream.on("end", () => seen.push("end"))
    // Node's client emits no 'error' for a CANCEL, nor 'aborted' for a request it had ended (a GET): the reset code tells.
    stream.on("error", () => {})
    const { rstCode, read } = await withTimeout(closed(stream), 3000, "the stalled stream's reset")
    // Read on after the reset: what was not read is gone, and the body still has no end.
    stream.resume()
    await new Promise((resolve) => setImmediate(resolve))
    expect({ rstCode, partial: read < size, seen }).toStrictEqual({ rstCode: http2.constants.NGHTTP2_CANCEL, partial: true, seen: [] })
    expect(toldFinished).toBe(false)
  })

  it("a slow reader that pauses for less than the answer idle timeout gets its whole streamed answer", async () => {
    const idleMs = 300
    const total = 1024 * KiB
    const h2 = makeH2c((call) => {
      call.writeHead(200, [["content-length", String(total)]])
      const chunk = Buffer.alloc(64 * KiB)
      let written = 0
      const pump = (): void => {
        while (written < total) {
          written += chunk.length
          if (written === total) return call.end(chunk)
          if (!call.write(chunk)) return void call.drained().then(pump)
        }
      }
      pump()
    }, { idleTimeoutMs: 60_000, maxStreams: 256, answerIdleMs: idleMs, onStalled: () => {}, onEnded: () => {} })
    const port = await listen(h2)
    const session = busyClient(port, 16 * KiB)
    const stream = session.request({ ":path": "/slow", ":authority": "catalog" })
    stream.on("error", () => {})
    let read = 0
    let nextPause = 64 * KiB
    stream.on("data", (chunk: Buffer) => {
      read += chunk.length
      // Every 64 KiB or so, 100 ms without reading.
      if (read < nextPause) return
      nextPause += 64 * KiB
      stream.pause()
      setTimeout(() => stream.resume(), 100)
    })
    const ended = new Promise<number>((resolve) => stream.once("close", () => resolve(stream.rstCode ?? -1)))
    expect(await withTimeout(ended, 8000, "the whole answer")).toBe(http2.constants.NGHTTP2_NO_ERROR)
    expect(read).toBe(total)
  })

  it("through the mesh: the far app's streamed answer is cancelled, and the request counted as answer_stalled at the outbound hop", async () => {
    let appClosed: (finished: boolean) => void = () => {}
    const appGone = new Promise<boolean>((resolve) => (appClosed = resolve))
    const app: http.RequestListener = (req, res) => {
      if (req.url !== "/big") return res.end("small")
      // 64 MiB as fast as the mesh takes it: far more than the caller's window, the mesh's and the sockets' buffers.
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(65536 * KiB) })
      const chunk = Buffer.alloc(64 * KiB)
      let written = 0
      const pump = (): void => {
        while (written < 65536 * KiB && !res.destroyed) {
          written += chunk.length
          if (!res.write(chunk)) return void res.once("drain", pump)
        }
        res.end()
      }
      res.on("close", () => appClosed(res.writableFinished))
      pump()
    }
    // B's own answer idle timeout stays long: the reset must come from A's check.
    const { a } = await startMesh(cleanup, app, { a: { answerIdleTimeoutMs: 300 }, b: { answerIdleTimeoutMs: 60_000 } })
    const session = busyClient(a.outboundPort, 16 * KiB)
    const big = session.request({ ":path": "/big", ":authority": "catalog" })
    big.on("error", () => {})
    big.pause()
    const bigClosed = closed(big)
    expect(await getLength(session, "/small")).toBe(5)
    expect((await withTimeout(bigClosed, 5000, "the stalled stream's reset")).rstCode).toBe(http2.constants.NGHTTP2_CANCEL)
    // The far request is cancelled: the app's answer is cut off before its end.
    expect(await withTimeout(appGone, 5000, "the far app's answer to close")).toBe(false)
    // Counted once the exchange saw its answer cut off (after the reset, as the far side heard of it).
    const errors = await readUntil(() => metric(a, /^iip_mesh_request_errors_total\{direction="outbound",service="catalog",code="200",hop="outbound",reason="answer_stalled"\}/), (n) => n > 0, 3000)
    expect(errors.value).toBe(1)
    expect(await metric(a, /^iip_mesh_h2_streams_reset_total\{reason="answer_stalled"\}/)).toBe(1)
    expect(await getLength(session, "/small")).toBe(5)
  })

  it("through the mesh: an answer that stalls with nothing more behind it (the far app sent 32 KiB, then waits) counts as answer_stalled too, not as the cancellation that follows the reset", async () => {
    // The reset cancels the mesh stream; with no chunk of it left to read, its iterator throws the
    // cancellation, and the request was counted as 502 cancelled rather than as the stall it was.
    let appClosed: () => void = () => {}
    const appGone = new Promise<void>((resolve) => (appClosed = resolve))
    const app: http.RequestListener = (req, res) => {
      if (req.url !== "/stuck") return res.end("small")
      res.writeHead(200, { "content-type": "application/octet-stream" })
      res.write(Buffer.alloc(32 * KiB))
      res.on("close", () => appClosed())
    }
    const { a } = await startMesh(cleanup, app, { a: { answerIdleTimeoutMs: 300 }, b: { answerIdleTimeoutMs: 60_000 } })
    const session = busyClient(a.outboundPort, 4 * KiB)
    const stuck = session.request({ ":path": "/stuck", ":authority": "catalog" })
    stuck.on("error", () => {})
    stuck.pause()
    expect((await withTimeout(closed(stuck), 5000, "the stalled stream's reset")).rstCode).toBe(http2.constants.NGHTTP2_CANCEL)
    await withTimeout(appGone, 5000, "the far app's answer to close")
    const errors = await readUntil(() => metric(a, /^iip_mesh_request_errors_total\{direction="outbound",service="catalog",code="200",hop="outbound",reason="answer_stalled"\}/), (n) => n > 0, 3000)
    expect(errors.value).toBe(1)
    expect(await metric(a, /^iip_mesh_request_errors_total\{.*reason="cancelled"\}/)).toBe(0)
    expect(await metric(a, /^iip_mesh_h2_streams_reset_total\{reason="answer_stalled"\}/)).toBe(1)
  })
})
