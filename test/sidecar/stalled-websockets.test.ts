// WebSockets through A -> B whose far app stops reading (PROTOCOL.md §8): each holds up to a
// stream window (1 MiB) of unread bytes at B. They count in B's pool for tunnels (as large as its
// byte budget), not in the byte budget of its requests: B keeps opening WebSockets and answering
// ordinary requests (before, the stalled WebSockets spent the budget and B refused both, 503
// overloaded). Past the pool they count in the budget as any other bytes (§8).
// How much of a window B holds depends on the kernel: the app's socket buffers take bytes off B,
// and B grants taken bytes back to A in half windows. So once A has spent a window, B holds more
// than half of it and at most all of it, whatever the kernel took (B held 0.92 MiB of each on one
// kernel, 0.63 MiB with 128 KiB socket buffers; a kernel whose buffers took 6 MiB a socket swallowed
// a fixed 6 MiB sent into each). Each caller therefore sends until A has spent its window, and 4
// windows against a 2 MiB budget are past the pool and within pool and budget together.
import type * as http from "node:http"
import type * as net from "node:net"
import type { MeshSession } from "../../src/mux/meshSession.ts"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import WebSocket, { WebSocketServer } from "ws"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { call, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

const MiB = 1024 * 1024

describe("WebSockets whose far app stops reading", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("4 of them, each sending until A has spent its window, past B's 2 MiB byte budget: all open, B holds past its pool, and it still answers ordinary requests", async () => {
    const app = await startApp(cleanup, (req, res) => {
      req.resume()
      res.end("plain")
    })
    const wss = new WebSocketServer({ noServer: true })
    // The far app takes the upgrade and never reads the socket again.
    app.server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => wss.handleUpgrade(req, socket, head, () => socket.pause()))
    cleanup.add(() => {
      for (const ws of wss.clients) ws.terminate()
      wss.close()
    })
    const sessions: Array<MeshSession> = []
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, maxQueuedBytes: 2 * MiB }), undefined, { onInboundMeshConnection: (session) => sessions.push(session) })
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    const before = process.memoryUsage().rss / MiB
    const chunk = Buffer.alloc(256 * 1024, 1)
    // Each caller sends a chunk once the last one left for the kernel, so it keeps A supplied
    // however much the sockets on the way take (bounded: 64 MiB each, or until B holds enough).
    let pumping = true
    cleanup.add(() => {
      pumping = false
    })
    const pump = (ws: WebSocket, sent: number): void => {
      if (!pumping || sent >= 64 * MiB || ws.readyState !== WebSocket.OPEN) return
      ws.send(chunk, (error) => {
        if (error === undefined || error === null) pump(ws, sent + chunk.length)
      })
    }
    let opened = 0
    for (let i = 0; i < 4; i++) {
      const ws = new WebSocket(`ws://127.0.0.1:${a.outboundPort}/live`, { headers: { host: "catalog" } })
      ws.on("error", () => {})
      cleanup.add(() => ws.terminate())
      const open = await withTimeout(
        new Promise<boolean>((resolve) => {
          ws.once("open", () => resolve(true))
          ws.once("unexpected-response", () => resolve(false))
        }),
        10_000,
        "the WebSocket to open or be refused"
      )
      if (!open) break
      opened++
      pump(ws, 0)
    }
    // Every connection of B's server shares one budget: any session's view of it is the whole.
    const held = () => {
      const shared = sessions[0]?.connection.budget.shared
      return shared === undefined ? 0 : shared.bytes + shared.tunnelBytes
    }
    // More than half of each window once A has spent them all: past the 2 MiB pool, into the budget.
    // The bound is for a stuck pipe, not for speed (large socket buffers take longer to fill).
    await waitFor(() => held() > 2 * MiB, 10_000, "B to hold more than its tunnels' pool")
    pumping = false
    const statuses = []
    for (let i = 0; i < 5; i++) statuses.push((await call(a.outboundPort, { path: "/plain", headers: { host: "catalog" } })).status)
    console.log(`[stalled-websockets] ${opened}/4 open; B holds ${(held() / MiB).toFixed(1)} MiB unread; process RSS (A, B, app, callers) ${before.toFixed(1)} -> ${(process.memoryUsage().rss / MiB).toFixed(1)} MiB; ordinary requests: ${statuses.join(",")}`)
    expect(opened).toBe(4)
    // A window each at most (§8): the rest waits at A and the callers.
    expect(held()).toBeLessThanOrEqual(opened * MiB)
    expect(statuses).toEqual([200, 200, 200, 200, 200])
  }, 60_000)
})
