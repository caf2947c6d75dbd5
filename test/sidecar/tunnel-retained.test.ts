// What an open tunnel keeps (PROTOCOL.md §17.4): once the 101 is through, the requests that made it
// are done with, and must not live as long as the tunnel. At B (inboundUpgrade.ts), held by the
// closures of the upgrade's scope, each open WebSocket kept node's ClientRequest to the app, its
// IncomingMessage and a private http.Agent (`agent: false`); at A (outboundUpgrade.ts), held by the
// suspended frame of the upgrade's exchange, the caller's request (Http1Call) with its connection's
// parse state, the headers, the route and the reply. About 4-5 KB of heap a tunnel at each
// (bench/tunnels.ts, per 1,000 idle tunnels: B +13.9 MB -> +9.7, A +15.1 -> +11.4).
// Real peers: `ws` as the app's server and as the calling client, app <- sidecar B <- sidecar A;
// v8.queryObjects counts the ClientRequests reachable after a full collection.
import * as http from "node:http"
import type * as net from "node:net"
import { queryObjects } from "node:v8"
import { afterEach, beforeEach, expect, it } from "vitest"
import WebSocket, { WebSocketServer } from "ws"
import { Http1Call } from "../../src/sidecar/http1Call.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { startApp, startSidecar, sidecarConfig } from "../support/sidecarHarness.ts"

const TUNNELS = 20

let cleanup: Cleanup
beforeEach(() => {
  cleanup = new Cleanup()
})
afterEach(() => cleanup.run())

it("an open tunnel keeps neither the caller's request at the outbound sidecar nor the upgrade request to the app (its answer, an http.Agent) at the inbound one", async () => {
  const app = await startApp(cleanup, (_req, res) => res.end("plain"))
  const wss = new WebSocketServer({ noServer: true })
  const serverSockets: Array<WebSocket> = []
  app.server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) =>
    wss.handleUpgrade(req, socket, head, (ws) => {
      serverSockets.push(ws)
      ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }))
    })
  )
  cleanup.add(() => {
    for (const ws of serverSockets) ws.terminate()
    wss.close()
  })
  const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address }))
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
  // The request holds its answer and its agent: counting it alone is enough (each count is a full collection and a heap walk).
  const count = () => ({ outbound: queryObjects(Http1Call, { format: "count" }), inbound: queryObjects(http.ClientRequest, { format: "count" }) })
  const before = count()
  const clients = await Promise.all(
    Array.from({ length: TUNNELS }, () => {
      const ws = new WebSocket(`ws://127.0.0.1:${a.outboundPort}/chat`, { headers: { host: "catalog" } })
      cleanup.add(() => ws.terminate())
      return withTimeout(
        new Promise<WebSocket>((resolve, reject) => {
          ws.once("error", reject)
          ws.once("open", () => ws.send("hello"))
          ws.once("message", (data) => (data.toString() === "hello" ? resolve(ws) : reject(new Error(`echoed ${data.toString()}`))))
        }),
        10_000,
        "a WebSocket to open and echo"
      )
    })
  )
  expect(clients).toHaveLength(TUNNELS)
  expect(serverSockets).toHaveLength(TUNNELS)
  const after = count()
  // The `ws` clients keep none of theirs either once open; a few may be in flight elsewhere (the harness), never one a tunnel.
  expect(after.outbound - before.outbound).toBeLessThan(TUNNELS / 4)
  expect(after.inbound - before.inbound).toBeLessThan(TUNNELS / 4)
  // Still open both ways.
  clients[0]!.send("again")
  expect(await withTimeout(new Promise<string>((resolve) => clients[0]!.once("message", (data) => resolve(data.toString()))), 10_000, "an echo")).toBe("again")
})
