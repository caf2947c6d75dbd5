// A refusal on the outbound listener (http1Connection.ts: 431 for a head past the limit, 400 for
// bytes that are no request; outboundUpgrade.ts: a refused upgrade) to a caller that still sends (a
// body behind the refused head) and reads only once it has sent it all. The socket was destroyed
// once the answer was out: the caller's bytes then met a closed socket, the kernel answered with a
// reset, and the caller's kernel dropped the answer unread (ECONNRESET, nothing read). Now the
// close lingers as nginx's does: the caller's bytes are read and dropped after the answer until its
// FIN, within 2 s and 16 MiB (peerFin.ts's lingerAfterEnd), and the caller reads the answer; one
// that sends on and never ends its side is closed within those bounds, and one that sends nothing
// more and never ends its side is closed once the 2 s are over.
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { halfOpenCaller, heldSocketsTo } from "../support/heldSockets.ts"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

/** What comes after the refused head: more than the kernel's buffers on both sides hold (at their defaults). */
const TRAILING = 4 * 1024 * 1024
/** What a lingering close reads and drops at most (peerFin.ts), and the writes of a caller that sends on. */
const LINGER_BYTES = 16 * 1024 * 1024
const CHUNK = 256 * 1024

/** Sends `head` and TRAILING bytes without reading, then reads to the close: what it read, and the error that ended the read, if one did. */
const sendThenRead = (port: number, head: string, cleanup: Cleanup): Promise<{ readonly read: string; readonly error: string | undefined }> =>
  new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1")
    cleanup.add(() => socket.destroy())
    socket.pause()
    let read = ""
    let error: string | undefined
    socket.on("error", (failed: NodeJS.ErrnoException) => (error ??= failed.code))
    socket.on("data", (chunk: Buffer) => (read += chunk.toString("latin1")))
    socket.on("close", () => resolve({ read: read.slice(0, 40), error }))
    socket.write(head)
    // Read once all of it is sent (or the send failed): not before, as a caller busy uploading.
    socket.end(Buffer.alloc(TRAILING, 0x61), () => socket.resume())
    socket.once("error", () => socket.resume())
  })

describe("a refusal's caller still sending when the answer is out", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  const refusals = [
    ["a head past the size limit (431)", `GET / HTTP/1.1\r\nhost: catalog\r\nx-big: ${"b".repeat(20_000)}\r\n\r\n`, /^HTTP\/1\.1 431 /],
    ["bytes that are no request (400)", "NOT A REQUEST\r\n\r\n", /^HTTP\/1\.1 400 /],
    ["a refused upgrade (no endpoint)", `GET /ws HTTP/1.1\r\nhost: nowhere\r\nconnection: upgrade\r\nupgrade: websocket\r\ncontent-length: ${TRAILING}\r\n\r\n`, /^HTTP\/1\.1 [45]\d\d /]
  ] as const

  it.each(refusals)("%s: the caller reads the answer", async (_name, head, answer) => {
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: {} }))
    const ended = await withTimeout(sendThenRead(a.outboundPort, head, cleanup), 10_000, "the caller's read")
    expect(ended.read).toMatch(answer)
    expect(ended.error).toBeUndefined()
  })

  it("a caller that sends on and never ends its side cannot hold the socket: it is closed within the linger's bounds, at most 16 MiB of it read", async () => {
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: {} }))
    // Half-open: node's default socket would end its side on A's FIN, and so end the linger itself.
    const socket = net.connect({ port: a.outboundPort, host: "127.0.0.1", allowHalfOpen: true })
    cleanup.add(() => socket.destroy())
    socket.on("error", () => {})
    let read = ""
    socket.on("data", (chunk: Buffer) => (read += chunk.toString("latin1")))
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()))
    let sending = true
    socket.once("close", () => (sending = false))
    const sendOn = (): void => {
      if (sending) socket.write(Buffer.alloc(CHUNK, 0x61), () => setImmediate(sendOn))
    }
    socket.write(refusals[0][1], sendOn)
    const startedAt = performance.now()
    await withTimeout(closed, 10_000, "A to close the socket")
    expect(read).toMatch(refusals[0][2])
    // The grace (2 s) after the answer went out, or the 16 MiB bound, whichever comes first (on
    // loopback's default buffers this caller sends far more than 16 MiB in 2 s: the bytes' bound;
    // on 4 KiB buffers, the grace): what it got into the socket is at most the 16 MiB and what the
    // kernel's buffers on both sides hold (at most 2 x 16 MiB).
    expect(performance.now() - startedAt).toBeLessThan(8000)
    expect(socket.bytesWritten).toBeLessThan(LINGER_BYTES + 2 * 16 * 1024 * 1024 + CHUNK + 64 * 1024)
  })

  it("a caller that sends nothing more and never ends its side cannot hold the socket: A lets it go once the grace is over", async () => {
    // The bytes' bound cannot end this linger: only its time bound does (the listener's own sweep
    // would wait for the keep-alive timeout, 60 s). A's close, after its FIN and with nothing
    // unread, sends nothing such a caller would see: the kernel's table says whether A holds it.
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: {} }))
    const startedAt = performance.now()
    const caller = await halfOpenCaller(cleanup, a.outboundPort, refusals[0][1])
    expect(caller.read).toMatch(refusals[0][2])
    await waitFor(() => heldSocketsTo(caller.localPort) === 0, 10_000, "A to let the socket go")
    expect(performance.now() - startedAt).toBeLessThan(8000)
  })
})
