// Outbound WebSockets at sidecar A whose calling app stops reading while the far app floods: each
// holds up to a stream window of unread answer bytes at A (and at B), so A's open tunnels are bounded
// by the same `maxTunnels` as B's: past it a new upgrade is refused 503 overloaded at the outbound
// hop, ordinary requests go on, and a closed WebSocket makes room again. The bytes they hold unread
// are counted too: once one more stream window of them would not fit within A's maxQueuedBytes, new
// upgrades are refused the same way (as at B, PROTOCOL.md §8). The test waits for what A holds
// (the gauge iip_mesh_tunnel_unread_bytes{direction="outbound"}), not for the flood to look still:
// a stalled answer stream holds more than half its window once the far app has filled everything on
// the way (A grants per half window its caller's socket took), whatever the kernel's buffers take.
import { createHash } from "node:crypto"
import type * as http from "node:http"
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import WebSocket, { WebSocketServer } from "ws"
import { configDefaults } from "../../src/config/settings.ts"
import { MeshDefaults } from "../../src/protocol/mesh.ts"
import { Cleanup, readUntil, waitFor } from "../support/iipRaw.ts"
import { parsePrometheusText, sum } from "../support/prometheusText.ts"
import { call, type RunningSidecar, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"
import { startHoldingWsApp, upgradeAnswer } from "../support/upgradeAnswer.ts"

const MiB = 1024 * 1024

/** An upgrade through A: the open WebSocket, or the status and body it was refused with. */
const upgrade = (cleanup: Cleanup, a: RunningSidecar) => {
  const ws = new WebSocket(`ws://127.0.0.1:${a.outboundPort}/live`, { headers: { host: "catalog" } })
  ws.on("error", () => {})
  cleanup.add(() => ws.terminate())
  return upgradeAnswer(ws)
}

describe("outbound WebSockets at A whose caller stops reading", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  /** B before a far app that floods every WebSocket as fast as its socket takes it; A in front with `aConfig`. */
  const floodingPair = async (aConfig: { readonly maxTunnels?: number; readonly maxQueuedBytes?: number }) => {
    const app = await startApp(cleanup, (req, res) => {
      req.resume()
      res.end("plain")
    })
    const wss = new WebSocketServer({ noServer: true })
    const flood = { sent: 0, open: 0 }
    const chunk = Buffer.alloc(64 * 1024, 1)
    // One message at a time, the next once the socket took it, until the socket closes.
    app.server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) =>
      // /deny: the far app refuses the upgrade (an answer other than 101).
      req.url === "/deny" ? socket.end("HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno") : wss.handleUpgrade(req, socket, head, (ws) => {
        flood.open++
        ws.on("close", () => flood.open--)
        const pump = (): void => {
          if (ws.readyState !== ws.OPEN) return
          flood.sent += chunk.length
          ws.send(chunk, { binary: true }, (error) => error === undefined || error === null ? pump() : undefined)
        }
        pump()
      }))
    cleanup.add(() => {
      for (const ws of wss.clients) ws.terminate()
      wss.close()
    })
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", ...aConfig, endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    return { a, flood }
  }

  /** What A's tunnels hold that their callers have not read (its gauge), once it is at least `bytes` (read for 10 s at most). */
  const unreadAtLeast = async (a: RunningSidecar, bytes: number) => {
    const { value } = await readUntil(async () => sum(parsePrometheusText((await a.sidecar.telemetry.metrics.text()).body), "iip_mesh_tunnel_unread_bytes", { direction: "outbound" }), (held) => held >= bytes, 10_000)
    return value
  }

  it("A's maxTunnels 3: the 4th and 5th flooded upgrades are refused 503 overloaded at the outbound hop, plain requests go on, a closed one makes room", async () => {
    const { a, flood } = await floodingPair({ maxTunnels: 3 })
    const answers = []
    for (let i = 0; i < 5; i++) {
      const answer = await upgrade(cleanup, a)
      // The calling app reads nothing from its WebSocket.
      if ("ws" in answer) answer.ws.pause()
      answers.push(answer)
    }
    const opened = answers.filter((answer) => "ws" in answer).length
    // Counts, not bytes: the far app's sockets are open as soon as their 101 came back, flooded or not.
    console.log(`[outbound-tunnels] ${opened}/5 open at A (maxTunnels 3); far app flushed ${(flood.sent / MiB).toFixed(1)} MiB into the pair so far, none read by the callers`)
    expect(opened).toBe(3)
    for (const refused of answers.slice(3)) {
      expect("status" in refused && refused.status).toBe(503)
      if (!("status" in refused)) continue
      expect(refused.headers["x-iip-mesh-error"]).toBe("outbound; reason=overloaded")
      expect(JSON.parse(refused.body).message).toMatch(/3 upgraded connections open.*maxTunnels/)
    }
    expect(flood.open).toBe(3)
    expect((await call(a.outboundPort, { path: "/plain", headers: { host: "catalog" } })).status).toBe(200)
    const first = answers[0]!
    if ("ws" in first) first.ws.terminate()
    await waitFor(() => flood.open === 2, 5000, "the far app's socket to close")
    const again = await upgrade(cleanup, a)
    expect("ws" in again).toBe(true)
  }, 60_000)

  it("the defaults leave room past every outbound tunnel: an app connection cap as far above maxTunnels as the defaults' still serves plain requests and refuses the next upgrade 503 overloaded", async () => {
    // The app connections count the upgraded ones: a cap no higher than maxTunnels makes the tunnel
    // limit unreachable (the next upgrade is cut without an answer) and takes every ordinary request
    // of the pod down with it. Scaled down: maxTunnels 2, and the defaults' headroom above it.
    const defaults = configDefaults()
    const headroom = defaults.maxAppConnections - defaults.maxTunnels
    const app = await startHoldingWsApp(cleanup)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", maxTunnels: 2, maxAppConnections: 2 + headroom, endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    for (let i = 0; i < 2; i++) expect("ws" in (await upgrade(cleanup, a))).toBe(true)
    const third = await upgrade(cleanup, a)
    expect("status" in third && third.status).toBe(503)
    expect((await call(a.outboundPort, { path: "/plain", headers: { host: "catalog" }, timeoutMs: 5000 })).status).toBe(200)
  }, 30_000)

  it("A's maxTunnels 1: an upgrade refused before the 101 (414 at A, 403 from the far app), its caller keeping its side open, gives its place back", async () => {
    const { a, flood } = await floodingPair({ maxTunnels: 1 })
    for (const [path, status] of [[`/${"x".repeat(3000)}`, 414], ["/deny", 403]] as const) {
      // A raw caller that reads its refusal and does not close its side (half-open, as a hostile or careless one may).
      const caller = net.connect({ port: a.outboundPort, host: "127.0.0.1", allowHalfOpen: true })
      cleanup.add(() => caller.destroy())
      let answer = ""
      caller.setEncoding("latin1")
      caller.on("data", (chunk: string) => (answer += chunk))
      caller.write(`GET ${path} HTTP/1.1\r\nhost: catalog\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`)
      await waitFor(() => answer.includes("\r\n\r\n"), 5000, `the ${status} refusal's head`)
      expect(answer.slice(0, 12)).toBe(`HTTP/1.1 ${status}`)
      expect(caller.destroyed).toBe(false)
      const next = await upgrade(cleanup, a)
      expect("status" in next ? `${next.status} ${next.body}` : "open").toBe("open")
      if ("ws" in next) next.ws.terminate()
      // Its place is back once A saw the close, which reaches the far app after it.
      await waitFor(() => flood.open === 0, 5000, "the far app's socket to close")
    }
  }, 30_000)

  it("the caller's bytes A holds for the mesh (a far app that reads none) count in A's tunnels' pool, and leave it when the tunnel ends", async () => {
    // A far app that switches and then reads nothing: B's window fills, then A's queue of the caller's bytes.
    const app = await startApp(cleanup, (req, res) => {
      req.resume()
      res.end("plain")
    })
    app.server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket) => {
      const accept = createHash("sha1").update(`${req.headers["sec-websocket-key"]}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64")
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-accept: ${accept}\r\n\r\n`)
      socket.pause()
      // An upgraded socket is the server's no longer: its close would wait for it.
      cleanup.add(() => socket.destroy())
    })
    // B ends the stalled tunnel after its stall timeout (1-2 s here): A's caller is cut, and what A held goes.
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, upgradeStallTimeoutMs: 1000 }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    const answer = await upgrade(cleanup, a)
    if (!("ws" in answer)) throw new Error(`the upgrade was refused: ${answer.status}`)
    // More than the far app's socket buffers, B's stream window and A's queue take together.
    for (let i = 0; i < 16; i++) answer.ws.send(Buffer.alloc(MiB, 2), { binary: true })
    expect(await unreadAtLeast(a, 32 * 1024)).toBeGreaterThanOrEqual(32 * 1024)
    const { value: left } = await readUntil(async () => sum(parsePrometheusText((await a.sidecar.telemetry.metrics.text()).body), "iip_mesh_tunnel_unread_bytes", { direction: "outbound" }), (held) => held === 0, 10_000)
    expect(left).toBe(0)
  }, 30_000)

  it("A's maxQueuedBytes 3 MiB: once its tunnels hold that much their callers have not read, new upgrades are refused 503 overloaded; closing them makes room", async () => {
    const { a, flood } = await floodingPair({ maxQueuedBytes: 3 * MiB })
    const sockets: Array<WebSocket> = []
    let refused: { readonly status: number; readonly headers: http.IncomingHttpHeaders; readonly body: string } | undefined
    while (refused === undefined && sockets.length < 12) {
      const answer = await upgrade(cleanup, a)
      if ("ws" in answer) {
        answer.ws.pause()
        sockets.push(answer.ws)
        // Each stalled: more than half its window held at A.
        expect(await unreadAtLeast(a, (sockets.length * MeshDefaults.streamWindow) / 2)).toBeGreaterThanOrEqual((sockets.length * MeshDefaults.streamWindow) / 2)
      } else refused = answer
    }
    console.log(`[outbound-tunnels] A's maxQueuedBytes 3 MiB: ${sockets.length} open before a refusal (12 tried at most); far app flushed ${(flood.sent / MiB).toFixed(1)} MiB into the pair; ${refused?.status ?? "none"}: ${refused?.body ?? ""}`)
    expect(refused?.status).toBe(503)
    expect(refused?.headers["x-iip-mesh-error"]).toBe("outbound; reason=overloaded")
    expect(JSON.parse(refused!.body).message).toMatch(/have not read.*maxQueuedBytes/)
    // Each open one holds up to a 1 MiB stream window at A: at least 3, then the refusal.
    expect(sockets.length).toBeGreaterThanOrEqual(3)
    expect(sockets.length).toBeLessThan(12)
    expect((await call(a.outboundPort, { path: "/plain", headers: { host: "catalog" } })).status).toBe(200)
    for (const ws of sockets) ws.terminate()
    await waitFor(() => flood.open === 0, 5000, "the far app's sockets to close")
    const again = await upgrade(cleanup, a)
    expect("ws" in again).toBe(true)
  }, 60_000)
})
