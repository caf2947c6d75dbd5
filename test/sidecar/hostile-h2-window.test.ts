// An HTTP/2 caller on the outbound listener that opens streams and grants no flow-control window
// (SETTINGS_INITIAL_WINDOW_SIZE 0), so no answer can leave: each stream's answer (up to 64 KiB
// held whole) stayed in the sidecar's memory for as long as the caller liked (4 sessions of 250
// streams: 62 MB live, 1,000 requests in flight, for ever), since the idle session's close waited
// for streams that could never end. Now a session idle for the idle timeout is asked to go
// (GOAWAY) and, if its streams still hold it with no byte moving either way for as long again,
// ended: what it held is freed. (A caller that keeps a byte moving, PINGs say, is not caught by
// this.) A stream with nothing to send (a long poll, a quiet gRPC server stream) is idle, not
// stalled: its session is never ended for it.
import * as http2 from "node:http2"
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import { makeH2c } from "../../src/sidecar/outboundH2.ts"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"

describe("an HTTP/2 caller that grants no window", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("its session is ended once idle for the idle timeout and a grace, its streams' answers freed", async () => {
    let answered = 0
    const h2 = makeH2c((call) => {
      answered++
      call.writeHead(200, [["content-length", String(60 * 1024)]])
      call.end(Buffer.alloc(60 * 1024))
    }, { idleTimeoutMs: 200, maxStreams: 256, answerIdleMs: 60_000, onStalled: () => {}, onEnded: () => {} })
    cleanup.add(() => h2.destroyAll())
    const server = net.createServer((socket) => h2.accept(socket))
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const session = http2.connect(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, { settings: { initialWindowSize: 0 } })
    cleanup.add(() => session.destroy())
    session.on("error", () => {})
    const ended = new Promise<void>((resolve) => session.once("close", () => resolve()))
    for (let i = 0; i < 50; i++) session.request({ ":path": `/w${i}`, ":authority": "catalog" }).on("error", () => {})
    await withTimeout(ended, 3000, "the sidecar to end the session")
    expect(answered).toBe(50)
    await waitFor(() => h2.sessions.size === 0, 2000, "the sidecar's side of the session to close")
  })

  it("a stream that idles with nothing to send (a long poll, a quiet gRPC server stream) outlives the session's idle timeouts", async () => {
    // The stall check ended any session idle twice the timeout: a caller reading fine whose answer
    // had nothing to say for that long lost it. Only streams holding answer bytes count as stalled.
    let finish: (() => void) | undefined
    const h2 = makeH2c((call) => {
      call.onClose(() => {})
      call.writeHead(200, [])
      call.write(Buffer.from("first "))
      finish = () => call.end(Buffer.from("last"))
    }, { idleTimeoutMs: 200, maxStreams: 256, answerIdleMs: 60_000, onStalled: () => {}, onEnded: () => {} })
    cleanup.add(() => h2.destroyAll())
    const server = net.createServer((socket) => h2.accept(socket))
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const session = http2.connect(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}`)
    cleanup.add(() => session.destroy())
    session.on("error", () => {})
    const stream = session.request({ ":path": "/watch", ":authority": "catalog" })
    stream.on("error", () => {})
    let body = ""
    stream.on("data", (chunk: Buffer) => (body += chunk.toString()))
    const ended = new Promise<boolean>((resolve) => {
      stream.once("end", () => resolve(true))
      stream.once("close", () => resolve(false))
    })
    await waitFor(() => body === "first ", 2000, "the first message")
    // The stall checks that follow the idle timeout's GOAWAY run on setTimeout (node's own session
    // timer does not): faked from before the GOAWAY, they are run by hand, more of them than the
    // old check needed to end the session, with no byte moving between them.
    const goaway = new Promise((resolve) => session.once("goaway", resolve))
    vi.useFakeTimers({ toFake: ["setTimeout"] })
    try {
      await goaway
      for (let i = 0; i < 5; i++) vi.advanceTimersByTime(200)
    } finally {
      vi.useRealTimers()
    }
    // The sidecar's side of the session is still there, not ended by a check.
    expect([...h2.sessions].map((s) => s.destroyed)).toStrictEqual([false])
    finish!()
    expect(await withTimeout(ended, 2000, "the stream's end")).toBe(true)
    expect(body).toBe("first last")
  })
})
