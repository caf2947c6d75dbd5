// Inbound upgrades (PROTOCOL.md §17.4): a peer's request that carries `http-upgrade` goes to the
// app on a connection of its own, never one of the pool's (appPool.ts), since an upgraded socket
// is never reused and a long-lived one must not hold a pool slot. The head is the one inbound.ts
// checked and filtered, plus `connection: upgrade` and the protocols, and no body: the peer's
// streamed body is the upgraded connection's bytes, written to the app only after its 101. A 101
// goes back with the app's end-to-end headers and the protocol it switched to, its bytes as the
// streamed answer; any other answer goes back as it is and the app's connection closes (the
// caller's bytes never reach an app that did not switch). No answer within the deadline is
// `deadline_exceeded`; a refused connection `app_unavailable` (not processed). After the 101, a
// connection silent both ways for the upgrade idle timeout is closed; a cancel from the caller
// closes it at once.
//
// Open tunnels are bounded on their own (`maxTunnels`, counted from the upgrade request to the
// app until its connection closes), and so are those of one peer sidecar (`maxTunnelsPerPeer`, by
// the address its connection comes from: tunnelSeats.ts): past either a new upgrade is refused
// `overloaded`, not processed, before the app is asked. So is one that, stalled, would not fit in the server's tunnels' pool
// or its connection's share of it (a window of unread bytes: IncomingStream.tunnelPoolHasRoom); healthy tunnels hold next to
// nothing there, so this caps stalled ones, not their number. Once its 101 is back a tunnel holds
// its channel and its place here, but no place among the requests waiting for an answer
// (RequestContext.longLived), and its unread bytes count only in the tunnels' pool, so open
// WebSockets, stalled or not, never make this side refuse ordinary requests. One whose bytes do
// not fit in the pool is ended by the mux (IncomingStream.holdAsTunnel) as a cancel ends one: its
// app's connection is closed here, A closes its caller's, and it is counted (the request's error,
// 101 inbound overloaded) and logged (`tunnel-overloaded`, throttled). One whose caller's bytes
// wait unread by the app for the stall timeout (tunnelStalls.ts: the app stopped reading, or a
// caller left while A had paused its socket) is ended too, its bytes released: its answer ends
// `deadline_exceeded` (A closes its caller's connection), counted (101 inbound deadline_exceeded).
import type * as http from "node:http"
import type * as net from "node:net"
import type { HandlerValue } from "../iip/dispatch.ts"
import type { Log, LogThrottle } from "../iip/log.ts"
import { failure, reply } from "../iip/server.ts"
import { RemoteError } from "../mux/meshChannels.ts"
import type { CancelSignal } from "../mux/cancellation.ts"
import type { IncomingRequest } from "../mux/request.ts"
import type { IncomingStream } from "../mux/streams.ts"
import { MeshErrorCode } from "../protocol/mesh.ts"
import type { MetaEntries } from "../protocol/metaEntries.ts"
import { endToEndHeaders, type OnInvalidHeader, switchedAmong, upgradeProtocols } from "./headerFilter.ts"
import { HttpMeta, responseMeta } from "./httpEnvelope.ts"
import type { InboundObservation } from "./observe.ts"
import { AppErrorCode } from "./proxyError.ts"
import { peerHost, type TunnelSeats } from "./tunnelSeats.ts"
import type { TunnelStalls } from "./tunnelStalls.ts"
import { pipeToSocket, SocketSource } from "./upgradePipe.ts"
import { nodeHttp } from "../toolkit/nodeHttp.ts"

export interface AppUpgradeLeg {
  readonly appHost: string
  readonly appPort: number
  /** host:port, for messages, metrics and spans. */
  readonly address: string
  readonly upgradeIdleTimeoutMs: number
  readonly onInvalidHeaders: OnInvalidHeader | undefined
  /** Upgrades open or under way, shared by every request of the leg: their places, in all and per peer. */
  readonly tunnels: TunnelSeats
  /** Where a tunnel ended for want of room in the tunnels' pool is said (`tunnel-overloaded`, within `overloadLines`: tunnelLines()). */
  readonly log: Log
  readonly overloadLines: LogThrottle
  /** Ends tunnels whose caller's bytes the app takes none of for the upgrade stall timeout. */
  readonly stalls: TunnelStalls
}

export interface AppUpgradeRequest {
  readonly method: string
  readonly path: string
  /** Flat name, value list: the filtered end-to-end headers and the hop's own (host). */
  readonly headers: Array<string>
  /** The protocols asked for, as `upgradeProtocols` gives them. */
  readonly protocols: string
}

const noBody = Buffer.alloc(0)
/**
 * Methods node's client sends without body framing when none is given. For the others (POST, PUT...)
 * it would declare `transfer-encoding: chunked` and end with an empty chunk, whose "0\r\n\r\n" an
 * app that switches reads as the upgraded connection's first bytes: they declare `content-length: 0`.
 */
const UNFRAMED_BY_NODE = new Set(["GET", "HEAD", "DELETE", "OPTIONS", "TRACE", "CONNECT"])

/** Runs one upgrade with the app; resolves with the answer the peer gets (a 101 streams the app's bytes). */
export const upgradeApp = (leg: AppUpgradeLeg, request: IncomingRequest, app: AppUpgradeRequest, observation: InboundObservation, deadlineMs: number): Promise<HandlerValue> =>
  new Promise<HandlerValue>((resolve) => {
    const peerBytes = request.context.stream
    const tunnels = leg.tunnels
    const refuse = (message: string) => {
      peerBytes?.discard()
      observation.end(leg.address, 503, { hop: "inbound", reason: MeshErrorCode.overloaded })
      resolve(failure(MeshErrorCode.overloaded, message, false))
    }
    // Stalled, it would hold a window unread: admitted without room for it, it would be ended as soon as it stalled (PROTOCOL.md §8).
    if (peerBytes !== undefined && !peerBytes.tunnelPoolHasRoom()) {
      tunnels.refusedFor("bytes")
      return refuse("the tunnels' pool (bytes upgraded connections hold that their apps have not read), or this connection's share of it, has no room for one more stream window; raise maxQueuedBytes (or maxQueuedBytesPerConnection, a connection's share), or retry elsewhere")
    }
    const peer = peerHost(request.context.remoteAddress)
    const full = tunnels.take(peer)
    if (full !== undefined) return refuse(`${full}; retry elsewhere`)
    let counted = true
    /** Once, when the upgrade fails or is answered without switching (after a switch, runTunnel gives the place back at the close). */
    const countOut = () => {
      if (!counted) return
      counted = false
      tunnels.give(peer)
    }
    let answered = false
    let timer: NodeJS.Timeout | undefined
    const answer = (value: HandlerValue) => {
      if (answered) return
      answered = true
      clearTimeout(timer)
      resolve(value)
    }
    const giveUp = (status: number, reason: string, hop: "inbound" | "app", value: HandlerValue) => {
      countOut()
      peerBytes?.discard()
      observation.end(leg.address, status, { hop, reason })
      answer(value)
    }
    let outgoing: http.ClientRequest
    try {
      outgoing = nodeHttp.request({
        host: leg.appHost,
        port: leg.appPort,
        method: app.method,
        path: app.path,
        headers: UNFRAMED_BY_NODE.has(app.method)
          ? [...app.headers, "connection", "upgrade", "upgrade", app.protocols]
          : [...app.headers, "connection", "upgrade", "upgrade", app.protocols, "content-length", "0"],
        agent: false,
        setHost: false
      })
    } catch (error) {
      // inbound.ts checked the head as the pool would; node's own checks are the last word.
      return giveUp(400, MeshErrorCode.badRequest, "inbound", failure(MeshErrorCode.badRequest, `cannot form the upgrade request to the app: ${(error as Error).message}`, false))
    }
    timer = setTimeout(() => {
      outgoing.destroy()
      giveUp(504, MeshErrorCode.deadlineExceeded, "inbound", failure(MeshErrorCode.deadlineExceeded, `no answer to the upgrade from the app within ${deadlineMs} ms`, true))
    }, deadlineMs)
    const cancel = request.context.cancel
    const onCancel = () => {
      outgoing.destroy()
      giveUp(502, MeshErrorCode.cancelled, "inbound", failure(MeshErrorCode.cancelled, "request aborted", true))
    }
    if (cancel.aborted) return onCancel()
    cancel.addEventListener("abort", onCancel)
    outgoing.on("error", (error: NodeJS.ErrnoException) => {
      const refused = error.code === "ECONNREFUSED" || error.code === "ENOTFOUND"
      const code = refused ? AppErrorCode.unavailable : AppErrorCode.failed
      giveUp(502, code, "app", failure(code, `app at ${leg.address}: ${error.code ?? error.message}`, !refused))
    })
    outgoing.on("response", (response: http.IncomingMessage) => {
      // Not switched: the answer goes back as it is (an ordinary answer); this connection is the app's no longer.
      countOut()
      peerBytes?.discard()
      // Taken now: an answer framed by the close ends after node has let go of the socket (response.socket is null by then).
      const appSocket = response.socket
      response.on("end", () => {
        observation.end(leg.address, response.statusCode ?? 502, undefined)
        appSocket.destroy()
      })
      response.on("error", () => observation.end(leg.address, 502, { hop: "app", reason: "answer_broke_off" }))
      answer(reply(response, responseMeta(response.statusCode ?? 502, endToEndHeaders(response.rawHeaders, leg.onInvalidHeaders))))
    })
    outgoing.on("upgrade", (response: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      const switched = upgradeProtocols(response.headers.upgrade)
      if (switched === undefined || !switchedAmong(switched, app.protocols)) {
        socket.destroy()
        return giveUp(502, AppErrorCode.failed, "app", failure(AppErrorCode.failed, `app at ${leg.address} switched to no protocol it was asked for`, true))
      }
      cancel.removeEventListener("abort", onCancel)
      // The place goes back when the app's socket closes (runTunnel), not here.
      counted = false
      const tunnel = runTunnel(leg, peer, peerBytes, socket, head, app.path, observation, cancel, responseMeta(101, endToEndHeaders(response.rawHeaders, leg.onInvalidHeaders)).set(HttpMeta.upgrade, switched))
      request.context.longLived()
      answer(tunnel)
    })
    outgoing.end(noBody)
  })

/**
 * The upgraded connection from the 101 on, until the app's socket closes: the answer the peer gets
 * (the app's bytes, streamed). Apart from upgradeApp so that what its callbacks hold, for as long as
 * the tunnel is open, is what they use: closures made in upgradeApp would hold its whole scope
 * (the app's request and answer objects, node's agent, the peer's request), about 3 KB a tunnel.
 */
const runTunnel = (leg: AppUpgradeLeg, peer: string, peerBytes: IncomingStream | undefined, socket: net.Socket, head: Buffer, path: string, observation: InboundObservation, cancel: CancelSignal, meta: MetaEntries): HandlerValue => {
  socket.setNoDelay(true)
  socket.setTimeout(leg.upgradeIdleTimeoutMs, () => socket.destroy())
  socket.on("error", () => {})
  cancel.addEventListener("abort", () => socket.destroy())
  const appBytes = new SocketSource(socket, head)
  if (peerBytes === undefined) socket.end()
  else void pipeToSocket(peerBytes, socket).then((bytes) => observation.requestBytes(bytes))
  let stalled = false
  const unwatch = peerBytes === undefined ? undefined : leg.stalls.watch(peerBytes, { app: leg.address, path }, () => {
    stalled = true
    // Its answer ends typed (A closes its caller's connection); the caller's bytes go back to the pool, granted.
    appBytes.fail(new RemoteError({ code: MeshErrorCode.deadlineExceeded, message: `the app at ${leg.address} read none of the upgraded connection's bytes for ${leg.stalls.stallMs} ms`, processed: true }))
    peerBytes.discard()
    socket.destroy()
  })
  socket.once("close", () => {
    unwatch?.()
    leg.tunnels.give(peer)
    // The pipe to the app stops waiting for bytes nobody can take, and they are granted back: failed
    // instead, the mux drops them without a grant (the stream ended) and A's sender, out of credit
    // while the app read nothing, would wait for them, its channel held, until the connection closes.
    peerBytes?.discard()
    observation.responseBytes(appBytes.bytes)
    // Ended by the mux for want of room in the tunnels' pool (the cancel closed this socket).
    const overloaded = peerBytes?.overloaded
    if (overloaded !== undefined) {
      const admitted = leg.overloadLines.admit()
      if (admitted !== undefined) leg.log("tunnel-overloaded", { app: leg.address, path, message: `${overloaded.message}; raise maxQueuedBytes (or maxQueuedBytesPerConnection, a connection's share), or find why the app stopped reading`, ...admitted })
    }
    const reason = overloaded !== undefined ? MeshErrorCode.overloaded : stalled ? MeshErrorCode.deadlineExceeded : undefined
    observation.end(leg.address, 101, reason === undefined ? undefined : { hop: "inbound", reason })
  })
  return reply(appBytes, meta)
}
