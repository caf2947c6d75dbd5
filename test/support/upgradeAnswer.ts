// What a WebSocket upgrade through a sidecar came to, for the tests that open or are refused one
// (websocket, tunnel-budget, outbound-tunnels): the open socket, or the non-101 answer it met.
import type * as http from "node:http"
import type { WebSocket } from "ws"
import { withTimeout } from "./iipRaw.ts"

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
