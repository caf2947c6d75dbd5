// The kernel's TCP socket buffers on loopback. Their sizes vary between kernels and settings
// (tcp_rmem and tcp_wmem, per network namespace) and grow as a connection is used: one kernel held
// 4 MiB of answers for a caller that reads nothing, another 250 KiB, another 38 MiB. A test that
// must fill them, or bound what they hold, reads their largest sizes here or looks past them at the
// sidecar's own side of the connection, instead of assuming one machine's figures.
import { subscribe } from "node:diagnostics_channel"
import { readFileSync } from "node:fs"
import * as net from "node:net"

/** The largest size (the third field) of /proc/sys/net/ipv4/`name`: "min default max". */
const largest = (name: "tcp_rmem" | "tcp_wmem"): number => {
  const size = Number(readFileSync(`/proc/sys/net/ipv4/${name}`, "latin1").trim().split(/\s+/)[2])
  if (!Number.isSafeInteger(size) || size <= 0) throw new Error(`unreadable ${name}`)
  return size
}

/** The largest receive and send buffers TCP's autotuning gives a socket in this network namespace. */
export const tcpBufferMaxima = (): { readonly receive: number; readonly send: number } => ({ receive: largest("tcp_rmem"), send: largest("tcp_wmem") })

/** Sockets this process's servers accepted and are still open, as node's diagnostics channel announces them. */
const accepted = new Set<net.Socket>()
subscribe("net.server.socket", (message) => {
  const socket = (message as { readonly socket: net.Socket }).socket
  accepted.add(socket)
  socket.once("close", () => accepted.delete(socket))
})

/**
 * This process's end of a connection a test made to a listener in the same process (the sidecars
 * run in the test's process and hand out no sockets): 127.0.0.1:`local` with its peer on `remote`.
 * What the kernel would not take waits in its writable buffer, whatever the kernel's buffer sizes.
 * Only connections accepted after this module was loaded are found.
 */
export const serverSide = (local: number, remote: number): net.Socket | undefined => {
  for (const socket of accepted) {
    if (socket.localPort === local && socket.remotePort === remote) return socket
  }
  return undefined
}
