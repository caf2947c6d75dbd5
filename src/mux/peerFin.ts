// A bound on the wait for a peer's FIN, for every socket this side ends: node keeps a socket whose
// end went out (its descriptor, buffers and, for an HTTP/2 session, the session itself: node's
// closing session lets go only on the peer's FIN, even after destroy()) until the peer ends it too
// or resets it, and a peer that does neither held it for ever. Used by the h2c legs (appH2.ts,
// outboundH2.ts) on every socket they hand to node's sessions, and by A's refused upgrades
// (outboundUpgrade.ts), whose sockets no timer watches any more.
import type * as net from "node:net"

/**
 * How long an ended socket waits for the peer's FIN: a peer that still reads sends it within a
 * round trip. Destroying it then loses nothing: what this side wrote has left (its end 'finish'ed).
 */
export const PEER_FIN_GRACE_MS = 2_000

const destroy = (socket: net.Socket): void => void socket.destroy()

/** `socket` is destroyed if it is still open `graceMs` after its end went out ('finish'): an unref'd timer, cleared on its close. */
export const boundPeerFin = (socket: net.Socket, graceMs: number = PEER_FIN_GRACE_MS): void => {
  socket.once("finish", () => {
    if (socket.destroyed) return
    const timer = setTimeout(destroy, graceMs, socket)
    timer.unref()
    socket.once("close", () => clearTimeout(timer))
  })
}
