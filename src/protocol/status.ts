// The per-channel status state machine (PROTOCOL.md §4.4): which status may follow which on one
// channel, for the side that receives requests (a server) and the side that receives responses
// (a client). The connection reader keeps one `last` value per channel and asks `allowed` before
// it reads a packet's body.
import { Status, StatusNone } from "./constants.ts"

export type Role = "server" | "client"

const isRequestStatus = (s: number) => s <= Status.RequestLast
const isResponseStatus = (s: number) => s >= Status.ResponseFirstMore && s <= Status.ResponseLast

/** True for a status that starts a message (0, 1, 4, 5). */
export const isFirstPacket = (s: number): boolean => (s & 2) === 0 && s !== Status.Close

/** True for a status that ends a message (1, 3, 5, 7). */
export const isLastPacket = (s: number): boolean => (s & 1) === 1 && s !== Status.Close

/**
 * May `status` arrive on a channel whose previous received status is `prev`, at a receiver with
 * `role`? A first packet needs no message in progress; a continuation needs one.
 */
export const statusAllowed = (role: Role, prev: number, status: number): boolean => {
  if (role === "server" ? !isRequestStatus(status) : !isResponseStatus(status)) return false
  const inProgress = prev !== StatusNone && !isLastPacket(prev)
  return isFirstPacket(status) ? !inProgress : inProgress
}
