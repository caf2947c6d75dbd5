// A TCP gate on 127.0.0.1 port 0 in front of a real listener, for tests of endpoints whose dial
// fails and then works again on the same address (no port given up and taken again, which another
// process could take meanwhile). Shut, it resets each connection as it is accepted: the dialer's
// connect succeeds and the connection is reset before any answer, so its dial fails. Open, it pipes
// each new connection to the target. The Cleanup closes it and every socket it holds.
import * as net from "node:net"
import type { Cleanup } from "./iipRaw.ts"

export interface ResetGate {
  readonly address: string
  readonly port: number
  /** Connections accepted so far, shut or open. */
  readonly accepted: () => number
  readonly open: () => void
}

export const startResetGate = async (cleanup: Cleanup, targetHost: string, targetPort: number): Promise<ResetGate> => {
  let open = false
  let accepted = 0
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    accepted++
    if (!open) return void socket.resetAndDestroy()
    const upstream = net.connect(targetPort, targetHost)
    const end = () => {
      socket.destroy()
      upstream.destroy()
      sockets.delete(socket)
      sockets.delete(upstream)
    }
    sockets.add(socket)
    sockets.add(upstream)
    for (const s of [socket, upstream]) s.on("error", end).on("close", end)
    socket.pipe(upstream).pipe(socket)
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanup.add(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      })
  )
  const port = (server.address() as net.AddressInfo).port
  return { address: `127.0.0.1:${port}`, port, accepted: () => accepted, open: () => (open = true) }
}
