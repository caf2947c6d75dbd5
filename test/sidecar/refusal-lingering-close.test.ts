// A refusal on the outbound listener (http1Connection.ts: 431 for a head past the limit, 400 for
// bytes that are no request; outboundUpgrade.ts: a refused upgrade) to a caller that still sends (a
// body behind the refused head) and reads only once it has sent it all. The socket was destroyed
// once the answer was out: the caller's bytes then met a closed socket, the kernel answered with a
// reset, and the caller's kernel dropped the answer unread (ECONNRESET, nothing read). Now the
// close lingers as nginx's does: the caller's bytes are read and dropped after the answer until its
// FIN, within 2 s and 16 MiB (peerFin.ts's lingerAfterEnd), and the caller reads the answer; one
// that sends on and never ends its side is closed within those bounds.
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

/** What comes after the refused head: more than the kernel's buffers on both sides hold. */
const TRAILING = 4 * 1024 * 1024

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

  it("a caller that sends on and never ends its side cannot hold the socket: it is closed within the linger's bounds", async () => {
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: {} }))
    const socket = net.connect(a.outboundPort, "127.0.0.1")
    cleanup.add(() => socket.destroy())
    socket.on("error", () => {})
    let read = ""
    socket.on("data", (chunk: Buffer) => (read += chunk.toString("latin1")))
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()))
    let sending = true
    socket.once("close", () => (sending = false))
    const sendOn = (): void => {
      if (sending) socket.write(Buffer.alloc(16 * 1024, 0x61), () => setImmediate(sendOn))
    }
    socket.write(refusals[0][1], sendOn)
    const startedAt = performance.now()
    await withTimeout(closed, 10_000, "A to close the socket")
    expect(read).toMatch(refusals[0][2])
    // The grace (2 s) after the answer went out, or the 16 MiB bound, whichever comes first.
    expect(performance.now() - startedAt).toBeLessThan(8000)
  })
})
