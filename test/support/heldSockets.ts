// Whether a process still holds its end of a loopback TCP connection, as the kernel sees it: for a
// side that ended its socket and whose peer sees no event of its close (a half-open peer reading nothing more).
import { readFileSync } from "node:fs"

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
