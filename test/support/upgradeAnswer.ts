// What a WebSocket upgrade through a sidecar came to, for the tests that open or are refused one
// (websocket, tunnel-budget, outbound-tunnels, tunnel-channels): the open socket, or the non-101
// answer it met; and an app that takes upgrades and holds them.
import type * as http from "node:http"
import type * as net from "node:net"
import { type WebSocket, WebSocketServer } from "ws"
import { type Cleanup, withTimeout } from "./iipRaw.ts"
import { startApp } from "./sidecarHarness.ts"

/** An app answering "plain" to requests whose `ws` server accepts every upgrade and sends nothing; its sockets end with the test. */
export const startHoldingWsApp = async (cleanup: Cleanup) => {
  const app = await startApp(cleanup, (req, res) => {
    req.resume()
    res.end("plain")
  })
  const wss = new WebSocketServer({ noServer: true })
  app.server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => wss.handleUpgrade(req, socket, head, () => {}))
  cleanup.add(() => {
    for (const ws of wss.clients) ws.terminate()
    wss.close()
  })
  return app
}

export interface UpgradeRefusal {
  readonly status: number
  readonly headers: http.IncomingHttpHeaders
  readonly body: string
}

/** The open WebSocket, or the status, headers and body of the answer that refused it; within 10 s. */
export const upgradeAnswer = (ws: WebSocket): Promise<{ readonly ws: WebSocket } | UpgradeRefusal> =>
  withTimeout(
    new Promise((resolve) => {
      ws.once("open", () => resolve({ ws }))
      ws.once("unexpected-response", (_req, res) => {
        let body = ""
        res.setEncoding("utf8")
        res.on("data", (chunk: string) => (body += chunk))
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      })
    }),
    10_000,
    "the upgrade to open or be refused"
  )

/** The refusal of an upgrade that was not expected to open (an open one fails the test). */
export const upgradeRefusal = async (ws: WebSocket): Promise<UpgradeRefusal> => {
  const answer = await upgradeAnswer(ws)
  if ("ws" in answer) throw new Error("the upgrade was not expected to succeed")
  return answer
}
