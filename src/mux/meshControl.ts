// The peer's requests on its control channel (PROTOCOL.md §11), as a MeshSession (meshSession.ts)
// receives them once its serving side (meshServing.ts) has read them: a ping is echoed, a cancel
// or a channel's close goes to the serving side, a window grant to the stream it is for (on either
// side's channel), a connection credit grant (§13 `conncredit`) to the session's calls, a refusal of one of this side's channels to the session (which keeps them), and
// a go-away stops new calls; an unknown path is answered not_found. While its answers back up, an
// acceptor stops reading, as for the serving side's (pauseWhileBackedUp); a dialer cannot (it reads
// its own calls' answers there: two peers each waiting for the other to read would both stall), so
// it closes the connection once the answers it queued while backed up pass a bound. The requests
// this side sends on its own control channel are the session's calls and pushes (meshCalls.ts).
import { Status } from "../protocol/constants.ts"
import { decodeChannelId, decodeChannelPair, decodeCredit, emptyMeta, encodeErrorBody, EnvelopeKind, goAwaySaysClosing, MeshErrorCode, MeshPath } from "../protocol/mesh.ts"
import type { Connection } from "./connection.ts"
import { noBody } from "./meshAnswer.ts"
import type { PeerChannelServer } from "./meshServing.ts"
import { failure } from "./request.ts"
import type { SendWindow } from "./streams.ts"

/**
 * A dialer closes the connection once the answers to the peer's control requests it queued while
 * its writer was congested pass this many bytes, counted until the writer drains: a peer that
 * pings and does not read. A live peer that stopped reading for a while pings once a second or so,
 * some 40 bytes an answer.
 */
const MaxBackedUpControlBytes = 1024 * 1024

/** Connections closed so, in this process: each line says how many so far, and goes out at the 1st, 2nd, 4th, 8th... */
let backedUpCloses = 0

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
  private readonly isDialer: boolean
  private readonly log: (event: string, fields: Record<string, unknown>) => void
  private readonly drainListeners: Array<() => void> = []
  /** A dialer's answers queued while its writer is congested, until it drains. */
  private backedUpBytes = 0
  private readonly drained = () => {
    this.backedUpBytes = 0
  }
  /** The peer said go-away: no new calls from this side. */
  peerDraining = false
  /** The peer's go-away said `closing` (§11): it closes this connection only (evicted at its cap), it is not stopping. */
  peerClosing = false
  /** That go-away was one-way, the peer's last write (§11 "Closing now"): what this side's calls still wait for when the connection ends, the peer never read. */
  peerReadNoMore = false

  constructor(
    connection: Connection,
    session: ControlSession,
    serving: PeerChannelServer,
    peerControl: number,
    maxMetaBytes: number,
    isDialer: boolean,
    log: (event: string, fields: Record<string, unknown>) => void
  ) {
    this.connection = connection
    this.isDialer = isDialer
    this.log = log
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
        return this.answer(path, requestId, EnvelopeKind.response, body)
      case MeshPath.cancel: {
        // Malformed, it closes the connection as any malformed control message does: dropped, the
        // request it meant to cancel would run on while its caller believes it stopped.
        const pair = decodeChannelPair(body)
        if (pair === undefined) return this.session.violation("bad-control", `malformed cancel (${body.length} bytes, not 8)`)
        this.serving.cancel(pair[0], pair[1])
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
        if (!this.peerReadNoMore && goAwaySaysClosing(body)) {
          this.peerClosing = true
          // Sent one-way as the peer's last write before its FIN: it read none of the requests still
          // unanswered. Expecting an answer, it drains the connection: it may run what it read.
          this.peerReadNoMore = oneway
        }
        for (const listener of this.drainListeners.splice(0)) listener()
        // The listeners stopped new requests on this connection; the answer tells the peer so.
        if (!oneway) this.answer(path, requestId, EnvelopeKind.response, noBody)
        return
      default:
        if (!oneway) this.answer(path, requestId, EnvelopeKind.error, encodeErrorBody(failure(MeshErrorCode.notFound, `unknown control path ${path}`, false)))
    }
  }

  /**
   * Answers a control request. Its answer backs up as any does when the peer does not read: an
   * acceptor stops reading, a dialer counts it and closes past its bound. Called from the socket's
   * read: nothing is thrown out of it (a write queue over its hard limit closes the connection).
   */
  private answer(path: string, requestId: number, kind: number, body: Uint8Array): void {
    const writer = this.connection.writer
    const before = writer.pendingBytes
    try {
      writer.sendEnvelope(Status.ResponseWhole, path, this.peerControl, kind, 0, requestId, emptyMeta, this.maxMetaBytes, 0, body)
    } catch (error) {
      return this.connection.close(`cannot answer control request ${requestId} (${path}): ${String(error)}`, false)
    }
    if (!this.isDialer) return this.serving.pauseWhileBackedUp()
    if (!writer.congested) return
    if (this.backedUpBytes === 0) writer.whenWritable(this.drained)
    this.backedUpBytes += writer.pendingBytes - before
    if (this.backedUpBytes <= MaxBackedUpControlBytes) return
    backedUpCloses++
    // Powers of two: a peer dialed again and again cannot flood the log.
    if ((backedUpCloses & (backedUpCloses - 1)) === 0) {
      this.log("peer-not-reading", { remote: this.connection.remoteAddress, backedUpBytes: this.backedUpBytes, closedSoFar: backedUpCloses })
    }
    this.connection.close(`the peer does not read the answers to its control requests (${this.backedUpBytes} bytes of them queued while its writer was congested)`, false)
  }
}
