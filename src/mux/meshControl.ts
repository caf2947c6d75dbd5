// The peer's requests on its control channel (PROTOCOL.md §11), as a MeshSession (meshSession.ts)
// receives them once its serving side (meshServing.ts) has read them: a ping is echoed, a cancel
// or a channel's close goes to the serving side, a window grant to the stream it is for (on either
// side's channel), a connection credit grant (§13 `conncredit`) to the session's calls, a refusal of one of this side's channels to the session (which keeps them), and
// a go-away stops new calls; an unknown path is answered not_found. While its answers back up, an
// acceptor stops reading, as for the serving side's (pauseWhileBackedUp). The requests this side
// sends on its own control channel are the session's calls and pushes (meshCalls.ts).
import { Status } from "../protocol/constants.ts"
import { decodeChannelId, decodeChannelPair, decodeCredit, emptyMeta, encodeErrorBody, EnvelopeKind, MeshErrorCode, MeshPath } from "../protocol/mesh.ts"
import type { Connection } from "./connection.ts"
import { noBody } from "./meshAnswer.ts"
import type { PeerChannelServer } from "./meshServing.ts"
import { failure } from "./request.ts"
import type { SendWindow } from "./streams.ts"

/** What the control channel asks of the session (meshSession.ts, which keeps this side's channels), and how it ends the connection. */
export interface ControlSession {
  /** The window of a request body streaming out on one of this side's channels. */
  sendingOn(channelId: number): SendWindow | undefined
  /** The peer refused one of this side's channels (§11 `refuse`). */
  refusedByPeer(channelId: number): void
  /** The peer granted back connection credit (§13 `conncredit`); ignored where it grants none. */
  creditGranted(bytes: number): void
  /** The peer broke a rule: logged, and the connection closes. */
  violation(rule: string, message: string): void
}

export class ControlReceiver {
  private readonly connection: Connection
  private readonly session: ControlSession
  private readonly serving: PeerChannelServer
  private readonly peerControl: number
  private readonly maxMetaBytes: number
  private readonly drainListeners: Array<() => void> = []
  /** The peer said go-away: no new calls from this side. */
  peerDraining = false

  constructor(connection: Connection, session: ControlSession, serving: PeerChannelServer, peerControl: number, maxMetaBytes: number) {
    this.connection = connection
    this.session = session
    this.serving = serving
    this.peerControl = peerControl
    this.maxMetaBytes = maxMetaBytes
  }

  /** Called when the peer says go-away. */
  onPeerDraining(listener: () => void): void {
    this.drainListeners.push(listener)
  }

  receive(path: string, requestId: number, body: Buffer, oneway: boolean): void {
    switch (path) {
      case MeshPath.ping:
        this.connection.writer.sendEnvelope(Status.ResponseWhole, path, this.peerControl, EnvelopeKind.response, 0, requestId, emptyMeta, this.maxMetaBytes, 0, body)
        // Echoes back up as any answer does: a peer that pings and never reads makes this side stop reading.
        return this.serving.pauseWhileBackedUp()
      case MeshPath.cancel: {
        const pair = decodeChannelPair(body)
        if (pair !== undefined) this.serving.cancel(pair[0], pair[1])
        return
      }
      case MeshPath.window: {
        const pair = decodeChannelPair(body)
        if (pair === undefined) return this.session.violation("bad-control", "malformed window grant")
        // Read in place: the grant's packet keeps its read's slab from nothing (readSlabs.ts).
        this.connection.readInPlace()
        const window = this.session.sendingOn(pair[0]) ?? this.serving.sendingOn(pair[0])
        window?.add(pair[1])
        return
      }
      case MeshPath.credit: {
        const bytes = decodeCredit(body)
        if (bytes === undefined) return this.session.violation("bad-control", "malformed credit grant")
        this.connection.readInPlace()
        this.session.creditGranted(bytes)
        return
      }
      case MeshPath.close: {
        const id = decodeChannelId(body)
        if (id === undefined) return this.session.violation("bad-control", "malformed channel close")
        this.serving.closedByPeer(id)
        return
      }
      case MeshPath.refuse: {
        const id = decodeChannelId(body)
        if (id === undefined) return this.session.violation("bad-control", "malformed channel refusal")
        this.session.refusedByPeer(id)
        return
      }
      case MeshPath.goAway:
        this.peerDraining = true
        for (const listener of this.drainListeners.splice(0)) listener()
        // The listeners stopped new requests on this connection; the answer tells the peer so.
        if (!oneway) {
          this.connection.writer.sendEnvelope(Status.ResponseWhole, path, this.peerControl, EnvelopeKind.response, 0, requestId, emptyMeta, this.maxMetaBytes, 0, noBody)
          this.serving.pauseWhileBackedUp()
        }
        return
      default:
        if (!oneway) {
          const error = encodeErrorBody(failure(MeshErrorCode.notFound, `unknown control path ${path}`, false))
          this.connection.writer.sendEnvelope(Status.ResponseWhole, path, this.peerControl, EnvelopeKind.error, 0, requestId, emptyMeta, this.maxMetaBytes, 0, error)
          this.serving.pauseWhileBackedUp()
        }
    }
  }
}
