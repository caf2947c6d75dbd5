// A node:http2 server as an h2c app behind sidecar B, listening on 127.0.0.1 port 0: its sessions
// (B's) destroyed at cleanup, and the errors its server ended any of them with, which no caller's
// input may cause (too many resets, invalid frames or refused streams from B: every stream on that
// session fails, other callers' too).
import type * as http2 from "node:http2"
import type * as net from "node:net"
import type { Cleanup } from "./iipRaw.ts"
import { startMesh } from "./sidecarHarness.ts"

export const listenH2App = async (cleanup: Cleanup, server: http2.Http2Server): Promise<{ readonly port: number; readonly sessionErrors: ReadonlyArray<string> }> => {
  const sessions = new Set<http2.ServerHttp2Session>()
  const sessionErrors: Array<string> = []
  server.on("session", (session: http2.ServerHttp2Session) => {
    sessions.add(session)
    session.on("close", () => sessions.delete(session))
    session.on("error", (error: NodeJS.ErrnoException) => sessionErrors.push(`${error.code}: ${error.message}`))
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => {
    for (const session of sessions) session.destroy()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return { port: (server.address() as net.AddressInfo).port, sessionErrors }
}

/** `server` as B's h2c app (listenH2App) behind A and B, untraced: A's outbound port, B's inbound port, the app's session errors. */
export const meshToH2App = async (cleanup: Cleanup, server: http2.Http2Server): Promise<{ readonly port: number; readonly bPort: number; readonly sessionErrors: ReadonlyArray<string> }> => {
  const app = await listenH2App(cleanup, server)
  const mesh = await startMesh(cleanup, () => {}, { a: { tracing: false }, b: { tracing: false, app: `127.0.0.1:${app.port}`, appProtocol: "h2c" } })
  return { port: mesh.a.outboundPort, bPort: Number(mesh.b.inboundAddress.split(":")[1]), sessionErrors: app.sessionErrors }
}
