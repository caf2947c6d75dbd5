// Helpers for the WebSocket transport tests (test/iip/websocket*.test.ts): an IipServer attached
// to a node:http server on 127.0.0.1 port 0, whose TCP sockets the test can cut, and IipClients
// over WebSocket, all registered with a Cleanup.
import * as http from "node:http"
import type * as net from "node:net"
import type { IipClient } from "../../src/iip/client.ts"
import type { ClientOptions } from "../../src/iip/clientOptions.ts"
import { IipServer, type ServerOptions } from "../../src/iip/server.ts"
import type { WebSocketServerOptions } from "../../src/mux/webSocketStream.ts"
import type { Cleanup } from "../support/iipRaw.ts"
import { startClient } from "../support/meshTest.ts"

export interface WebSocketHarness {
  readonly server: IipServer
  readonly http: http.Server
  readonly port: number
  /** The HTTP server's TCP connections, upgraded ones included. */
  readonly sockets: Set<net.Socket>
}

/** An IipServer serving WebSocket on an HTTP server of its own; closed (server, sockets, HTTP) by `cleanup`. */
export const startWebSocketServer = async (
  cleanup: Cleanup,
  webSocket: WebSocketServerOptions = {},
  options: ServerOptions = {}
): Promise<WebSocketHarness> => {
  const httpServer = http.createServer((_request, response) => response.writeHead(404).end())
  const sockets = new Set<net.Socket>()
  httpServer.on("connection", (socket) => {
    sockets.add(socket)
    socket.once("close", () => sockets.delete(socket))
  })
  await new Promise<void>((resolve, reject) => {
    httpServer.once("error", reject)
    httpServer.listen(0, "127.0.0.1", () => resolve())
  })
  const server = new IipServer({ log: () => {}, ...options })
  server.attachWebSocket(httpServer, webSocket)
  cleanup.add(async () => {
    await server.close()
    for (const socket of sockets) socket.destroy()
    await new Promise<void>((resolve) => httpServer.close(() => resolve()))
  })
  return { server, http: httpServer, port: (httpServer.address() as net.AddressInfo).port, sockets }
}

/** An IipClient over WebSocket to `port` (path /iip unless given), closed by `cleanup`. */
export const startWebSocketClient = (cleanup: Cleanup, port: number, options: Partial<ClientOptions> = {}): IipClient =>
  startClient(cleanup, port, { transport: "websocket", ...options })
