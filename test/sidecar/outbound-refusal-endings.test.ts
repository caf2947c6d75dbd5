// The outbound listener's error endings (http1Connection.ts: a CONNECT refused 400 bad_target,
// bytes that are no request 400, a head too slow 408) when the caller stopped reading long ago:
// its receive side is full, so the error answer cannot go out. Each ended with destroySoon, which
// waits for the answer to be written, with no timer left on the socket: the socket, its buffers
// and a place among the listener's connections (maxConnections) stayed held for ever by a caller
// that sends nothing more. Now such an ending is watched as a last answer is: a caller that takes
// none of it for the keep-alive timeout is cut. Failed before (the socket never closed).
import type * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import * as nodeNet from "node:net"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { listenOutbound } from "../support/outboundListener.ts"

const KEEP_ALIVE_MS = 1000

describe("an error answer to a caller whose receive side is full", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  /**
   * A caller that reads nothing and asks until the kernel's buffers between it and the listener
   * are full (an answer stays partly in the listener's socket): the last bytes it sends next meet
   * a connection that can write nothing more. Answers are half the socket's high-water mark, so
   * what stays unsent never holds the connection in a drain wait (it reads on). Returns the
   * listener's side of the connection.
   */
  const fillCaller = async (options: { readonly headersTimeoutMs?: number } = {}) => {
    const answer = { size: 0 }
    const { listener, port } = await listenOutbound(
      cleanup,
      (call) => {
        call.writeHead(200, [["content-length", String(answer.size)]])
        call.end(Buffer.alloc(answer.size, 0x61))
      },
      { keepAliveTimeoutMs: KEEP_ALIVE_MS, ...options }
    )
    const accepted = new Promise<net.Socket>((resolve) => listener.server.once("connection", resolve))
    const socket = nodeNet.connect(port, "127.0.0.1")
    cleanup.add(() => socket.destroy())
    socket.on("error", () => {})
    socket.pause()
    const side = await withTimeout(accepted, 10_000, "the connection")
    answer.size = side.writableHighWaterMark / 2
    let asked = 0
    while (side.writableLength === 0) {
      asked++
      const before = side.bytesWritten
      socket.write("GET /fill HTTP/1.1\r\nhost: catalog\r\n\r\n")
      // Its answer went to the socket (taken by the kernel, or partly left in the socket's queue).
      await waitFor(() => side.bytesWritten > before, 10_000, `answer ${asked}`)
      if (asked > 100_000) throw new Error("the kernel's buffers never filled")
    }
    return { listener, socket, side }
  }

  const endings: ReadonlyArray<readonly [string, string, { readonly headersTimeoutMs?: number }]> = [
    ["CONNECT refused 400 bad_target", "CONNECT catalog:443 HTTP/1.1\r\nhost: catalog:443\r\n\r\n", {}],
    ["bytes that are no request, 400", "\x00\x01 not a request\r\n\r\n", {}],
    ["a head too slow, 408", "GET /slow HTTP/1.1\r\nhost: cat", { headersTimeoutMs: 300 }]
  ]

  it.each(endings)("%s: the socket is cut once the caller took none of the answer for the keep-alive timeout", async (_name, bytes, options) => {
    const { listener, socket, side } = await fillCaller(options)
    socket.write(bytes)
    // (Polled: the connection drops the socket's listeners as it ends.) Well past the keep-alive
    // timeout and its grace, however loaded the machine.
    await waitFor(() => side.closed, 30_000, "the listener's side of the connection to close")
    await waitFor(() => listener.openConnections === 0, 10_000, "the listener to forget the connection")
    const places = await new Promise<number>((resolve, reject) => listener.server.getConnections((error, count) => (error ? reject(error) : resolve(count))))
    expect(places).toBe(0)
  }, 60_000)
})
