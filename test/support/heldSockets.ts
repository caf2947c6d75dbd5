// Whether a process still holds its end of a loopback TCP connection, as the kernel sees it: for a
// side that ended its socket and whose peer sees no event of its close (a half-open peer reading nothing more).
import { readFileSync } from "node:fs"
import * as net from "node:net"
import { type Cleanup, withTimeout } from "./iipRaw.ts"

/**
 * TCP sockets to 127.0.0.1:`port` that a process still holds (/proc/net/tcp: a socket whose
 * descriptor was closed, waiting in FIN_WAIT2 for the peer, belongs to no inode).
 */
export const heldSocketsTo = (port: number): number => {
  const remote = `0100007F:${port.toString(16).toUpperCase().padStart(4, "0")}`
  return readFileSync("/proc/net/tcp", "latin1").split("\n").slice(1).filter((line) => {
    const fields = line.trim().split(/\s+/)
    return fields[2] === remote && fields[9] !== "0"
  }).length
}

/**
 * A client of 127.0.0.1:`port` that keeps its side open (allowHalfOpen): it writes `bytes`, reads
 * all that comes until the server's end (within 20 s), and never ends its socket. What it read and
 * its own port (the server's socket is the one to it: heldSocketsTo).
 */
export const halfOpenCaller = async (cleanup: Cleanup, port: number, bytes: string | Buffer): Promise<{ readonly read: string; readonly localPort: number }> => {
  const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true })
  cleanup.add(() => socket.destroy())
  socket.on("error", () => {})
  let read = ""
  socket.setEncoding("latin1")
  socket.on("data", (chunk: string) => (read += chunk))
  const ended = new Promise<void>((resolve) => socket.once("end", () => resolve()))
  await withTimeout(new Promise<void>((resolve) => socket.once("connect", () => resolve())), 20_000, "the connection")
  socket.write(bytes)
  await withTimeout(ended, 20_000, "the server's end")
  return { read, localPort: socket.localPort! }
}
