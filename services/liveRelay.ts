// The storefront's GET /live: a browser's WebSocket, relayed to pricing's /live through the
// storefront's sidecar (an Upgrade request to the service named by Host, which the mesh carries
// as a stream between the two sidecars). Messages go both ways untouched (what the browser sends
// before pricing's socket is open is not relayed: pricing's /live reads nothing); a close on either side
// closes the other with its code. A side that stops reading is cut off (1013) before its
// queue outgrows a budget, and an upstream that cannot be reached closes the browser's socket
// with 1011 and the reason.
import { type RawData, WebSocket, WebSocketServer } from "ws"
import { contextOf, currentSidecar, type Upgrade } from "./serve.ts"

/** Bytes waiting for a slow browser before its socket is closed. */
const maxBuffered = 1 << 20
/** Live sockets are few (one per open page), each holding one through the mesh: past this many a new one is refused (1013). */
const maxLiveSockets = 100

const browsers = new WebSocketServer({ noServer: true, maxPayload: 4096 })

/** Close codes a peer may not send in a close frame (1005, 1006, 1015 are reserved): those become 1011. */
const sendable = (code: number) => (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999)

const relay = (browser: WebSocket, upstream: WebSocket): void => {
  const closeBoth = (code: number, reason: Buffer | string) => {
    const sent = sendable(code) ? code : 1011
    for (const socket of [browser, upstream]) {
      if (socket.readyState === WebSocket.OPEN) socket.close(sent, reason.toString().slice(0, 120))
      else if (socket.readyState === WebSocket.CONNECTING) socket.terminate()
    }
  }
  upstream.on("message", (data: RawData, isBinary: boolean) => {
    if (browser.bufferedAmount > maxBuffered) return closeBoth(1013, "browser not reading")
    if (browser.readyState === WebSocket.OPEN) browser.send(data, { binary: isBinary })
  })
  browser.on("message", (data: RawData, isBinary: boolean) => {
    if (upstream.bufferedAmount > maxBuffered) return closeBoth(1013, "pricing not reading")
    if (upstream.readyState === WebSocket.OPEN) upstream.send(data, { binary: isBinary })
  })
  upstream.once("close", (code, reason) => closeBoth(code, reason))
  browser.once("close", (code, reason) => closeBoth(code, reason))
  upstream.once("error", (error) => closeBoth(1011, `pricing: ${error.message}`))
  browser.once("error", () => closeBoth(1011, "browser socket failed"))
}

/** Takes the browser's upgrade to /live and opens pricing's /live through the sidecar, carrying the request's trace context. */
export const acceptLive: Upgrade = (req, socket, head) => {
  if (new URL(req.url ?? "/", "http://localhost").pathname !== "/live") return void socket.destroy()
  browsers.handleUpgrade(req, socket, head, (browser) => {
    if (browsers.clients.size > maxLiveSockets) return browser.close(1013, "too many live sockets")
    const sidecar = new URL(currentSidecar())
    const upstream = new WebSocket(`ws://${sidecar.host}/live`, { headers: { ...contextOf(req.headers), host: "pricing" }, maxPayload: 4096, handshakeTimeout: 5000 })
    relay(browser, upstream)
  })
}
