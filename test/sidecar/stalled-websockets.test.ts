// WebSockets through A -> B whose far app stops reading (PROTOCOL.md §8): each holds up to a
// stream window (1 MiB) of unread bytes at B. They count in B's pool for tunnels (as large as its
// byte budget), not in the byte budget of its requests: B keeps opening WebSockets and answering
// ordinary requests (before, with an 8 MiB budget, the stalled WebSockets spent it and B refused
// both, 503 overloaded). Past the pool they count in the budget as any other bytes (§8), so 12
// windows against 8 MiB are past the budget and within pool and budget together. The test waits
// until B holds every window: how much of each the kernel's socket buffers take instead varies
// between kernels (one took most of it, so 24 WebSockets once fitted; another takes almost none).
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

  it("12 of them, 6 MiB sent each, past B's 8 MiB byte budget: all open, B holds each one's window, and it still answers ordinary requests", async () => {
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
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, maxQueuedBytes: 8 * MiB }), undefined, { onInboundMeshConnection: (session) => sessions.push(session) })
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    const before = process.memoryUsage().rss / MiB
    const chunk = Buffer.alloc(256 * 1024, 1)
    let opened = 0
    for (let i = 0; i < 12; i++) {
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
      for (let k = 0; k < 24; k++) ws.send(chunk)
    }
    // B holds the 12 windows: its tunnels' pool is full and the rest is in its requests' budget.
    // Every connection of B's server shares one budget: any session's view of it is the whole.
    const held = () => {
      const shared = sessions[0]?.connection.budget.shared
      return shared === undefined ? 0 : shared.bytes + shared.tunnelBytes
    }
    // At least 7/8 of each window: the app's socket buffers in the kernel take the rest (about 80 KiB here).
    await waitFor(() => held() >= (opened * 7 * MiB) / 8, 10_000, "B to hold every WebSocket's window")
    const statuses = []
    for (let i = 0; i < 5; i++) statuses.push((await call(a.outboundPort, { path: "/plain", headers: { host: "catalog" } })).status)
    console.log(`[stalled-websockets] ${opened}/12 open, 6 MiB sent into each; B holds ${(held() / MiB).toFixed(1)} MiB unread; process RSS (A, B, app, callers) ${before.toFixed(1)} -> ${(process.memoryUsage().rss / MiB).toFixed(1)} MiB; ordinary requests: ${statuses.join(",")}`)
    expect(opened).toBe(12)
    expect(statuses).toEqual([200, 200, 200, 200, 200])
  }, 60_000)
})
