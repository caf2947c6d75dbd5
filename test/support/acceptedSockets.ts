// Counts the sockets every server of this process accepts, per local port, through node's own
// `net.server.socket` diagnostics channel: what a listener the test does not own (an admin's, a
// sidecar's) saw, so "never dialled" is asserted where the connection would arrive.
import diagnosticsChannel from "node:diagnostics_channel"
import type * as net from "node:net"
import type { Cleanup } from "./iipRaw.ts"

/** Sockets accepted per local port from now until the Cleanup runs; `address`: only those accepted at it (IPv4, or its mapped form). */
export const acceptedSockets = (cleanup: Cleanup | undefined, address?: string): ((port: number) => number) => {
  const counts = new Map<number, number>()
  const onSocket = (message: unknown) => {
    const socket = (message as { socket: net.Socket }).socket
    if (address !== undefined && socket.localAddress !== address && socket.localAddress !== `::ffff:${address}`) return
    if (socket.localPort !== undefined) counts.set(socket.localPort, (counts.get(socket.localPort) ?? 0) + 1)
  }
  diagnosticsChannel.subscribe("net.server.socket", onSocket)
  cleanup?.add(() => diagnosticsChannel.unsubscribe("net.server.socket", onSocket))
  return (port) => counts.get(port) ?? 0
}
