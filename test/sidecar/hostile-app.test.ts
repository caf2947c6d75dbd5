// The far app as the attacker (wave 2's hostile-input rule, on the answers B takes from its app):
// raw-TCP apps on 127.0.0.1 port 0 write exact bytes behind a real sidecar B, reached by plain IIP
// or through sidecar A. What other tests already pin is not repeated here: llhttp's strictness
// (app-pool-client.test.ts), a caller that stops reading (hostile-slow-reader.test.ts), an app
// that never answers (app-pool.test.ts, errors.test.ts). Pinned here: the bounds nothing else
// tests, and the defects this pass found, each with the test that failed before its fix.
import type * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Limits } from "../../src/protocol/constants.ts"
import { Cleanup, startRawServer, waitFor, withTimeout } from "../support/iipRaw.ts"
import { startClient } from "../support/meshTest.ts"
import { sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

/** A raw app: `answer` gets each connection's socket at the end of every request head it reads (no request here has a body). */
const startScriptedApp = async (cleanup: Cleanup, answer: (socket: net.Socket, head: string) => void) => {
  const counts = { connections: 0, requests: 0, closed: 0 }
  const app = await startRawServer(cleanup, (socket) => {
    counts.connections++
    socket.once("close", () => counts.closed++)
    let pending = ""
    socket.on("data", (data: Buffer) => {
      pending += data.toString("latin1")
      for (let end = pending.indexOf("\r\n\r\n"); end !== -1; end = pending.indexOf("\r\n\r\n")) {
        const head = pending.slice(0, end)
        pending = pending.slice(end + 4)
        counts.requests++
        answer(socket, head)
      }
    })
  })
  return { port: app.port, counts }
}

const MiB = 1024 * 1024

describe("a hostile far app's answers at the inbound side", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("a plain IIP caller's answer that never ends is given up once past one packet's limit, not gathered until the deadline", async () => {
    // 64 MiB of chunked body, then nothing and no end: gathered whole (a plain caller takes one
    // packet), it would grow B's memory until the deadline, and an endless one without bound.
    const app = await startScriptedApp(cleanup, (socket) => {
      socket.write("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
      const chunk = Buffer.concat([Buffer.from("100000\r\n"), Buffer.alloc(MiB, 0x61), Buffer.from("\r\n")])
      let sent = 0
      const pump = (): void => {
        while (sent < 64 && !socket.destroyed) {
          sent++
          if (!socket.write(chunk)) return void socket.once("drain", pump)
        }
      }
      pump()
    })
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: `127.0.0.1:${app.port}`, tracing: false, inboundDefaultTimeoutMs: 20_000 }))
    const plain = startClient(cleanup, b.sidecar.inbound.port, { mesh: false })
    const answer = await withTimeout(plain.call("/endless", "{}", { timeoutMs: 30_000 }), 10_000, "the answer that outgrew a packet")
    expect(answer.toString()).toContain(`exceeds the ${Limits.maxPacketData} bytes`)
    // The app's socket is closed, not held to the deadline.
    await waitFor(() => app.counts.closed === 1, 5000, "the app's socket to close")
  })
})
