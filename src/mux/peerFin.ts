// A bound on the wait for a peer's FIN, for every socket this side ends: node keeps a socket whose
// end went out (its descriptor, buffers and, for an HTTP/2 session, the session itself: node's
// closing session lets go only on the peer's FIN, even after destroy()) until the peer ends it too
// or resets it, and a peer that does neither held it for ever. Used by A's h2c listener
// (outboundH2.ts) on every socket they hand to node's sessions (and, for a session destroyed, whose
// end may never go out to a peer that reads nothing, from the destroy on), and by the admin
// server's CONNECT (respond.ts), a socket no timer watches any more once it is answered. And the
// lingering close of the outbound listener's last answers (http1Connection.ts) and A's refused
// upgrades (outboundUpgrade.ts): the peer's bytes read and dropped after this side's end, within
// the same grace, so that the close is no reset that loses the answer.
import type { Duplex } from "node:stream"

/**
 * How long an ended socket waits for the peer's FIN: a peer that still reads sends it within a
 * round trip. Destroying it then loses nothing: what this side wrote has left (its end 'finish'ed).
 */
const PEER_FIN_GRACE_MS = 2_000

const destroy = (socket: Duplex): void => void socket.destroy()

/**
 * `socket` is destroyed if it is still open PEER_FIN_GRACE_MS from now: for a socket whose HTTP/2
 * session was destroyed, which node ends and lets go only once its end went out, never for a peer
 * that reads nothing. An unref'd timer, cleared on its close.
 */
export const destroyAfterGrace = (socket: Duplex): void => {
  if (socket.destroyed) return
  const timer = setTimeout(destroy, PEER_FIN_GRACE_MS, socket)
  timer.unref()
  socket.once("close", () => clearTimeout(timer))
}

/** `socket` is destroyed if it is still open PEER_FIN_GRACE_MS after its end went out ('finish'). */
export const boundPeerFin = (socket: Duplex): void => {
  socket.once("finish", () => destroyAfterGrace(socket))
}

/** What a lingering close reads and drops at most before it gives up on the peer's FIN. */
const LINGER_BYTES = 16 * 1024 * 1024

/**
 * nginx's lingering close, for a socket whose end was asked for (end() called) with the peer maybe
 * still sending (a body after a refused request): once this side's end went out ('finish'), what
 * the peer sends is read and dropped until its FIN, for at most PEER_FIN_GRACE_MS or LINGER_BYTES,
 * and the socket is destroyed then. Destroyed at 'finish' with the peer's bytes unread or still
 * coming, the kernel resets the connection, and the peer's kernel may drop the answer unread.
 */
export const lingerAfterEnd = (socket: Duplex): void => {
  if (socket.destroyed) return
  if (socket.writableFinished) linger(socket)
  else socket.once("finish", () => linger(socket))
}

const linger = (socket: Duplex): void => {
  if (socket.readableEnded) return destroy(socket)
  let bytes = 0
  socket.on("data", (chunk: Buffer) => {
    bytes += chunk.length
    if (bytes > LINGER_BYTES) socket.destroy()
  })
  socket.once("end", () => socket.destroy())
  destroyAfterGrace(socket)
  socket.resume()
}
