// One HTTP/2 connection of the sidecar's gRPC app legs over a socket, either role: the server side
// of the local app's gRPC client -> sidecar A, the client side of sidecar B -> its local gRPC app.
// This module is the reader's side: socket chunks go through the FrameReader, and each frame it
// hands here becomes stream state, a decoded header list or a DATA view for the leg's handler
// (h2Handlers.ts), or a stream or connection error: heads checked (headerCheck.ts) and streams
// opened, content-length held against DATA, the peer's SETTINGS applied, PING, GOAWAY,
// WINDOW_UPDATE. The leg's calls, the streams' lifecycle, the flush, the timers and the end:
// h2ConnectionCore.ts.
import { ErrorCode, type H2FrameError, SettingId } from "./frames.ts"
import { H2ConnectionCore } from "./h2ConnectionCore.ts"
import { TINY_WINDOW_UPDATE } from "./h2Guards.ts"
import { CONNECTION_OVERFLOW, STREAM_OVERFLOW } from "./h2ReceiveFlow.ts"
import { H2Stream, H2StreamEnded, StreamState } from "./h2Streams.ts"
import { checkRequestHead, checkResponseHead, checkTrailers, declaredLength } from "./headerCheck.ts"
import { HpackError } from "./hpackTables.ts"

export type { H2ClientHandler, H2ServerHandler, H2Socket, H2StreamHandler } from "./h2Handlers.ts"

export class H2Connection extends H2ConnectionCore {
  /** The SETTINGS frame being read: each id's last value (-1: absent). */
  private readonly peerSettings = { tableSize: -1, initialWindow: -1, maxFrameSize: -1, maxConcurrent: -1, maxHeaderList: -1 }
  /** The writer's DATA count at the last PING: a PING after more of our DATA is not charged to the ping budget. */
  private dataAtPing = 0

  // ---- the reader's frames (FrameHandler) ----

  override onData(streamId: number, data: Buffer, flowLength: number, endStream: boolean): void {
    this.delivered++
    if (this.endedWith !== undefined) return
    const stream = this.streams.get(streamId)
    if (stream === undefined || stream.state === StreamState.HALF_CLOSED_REMOTE || (this.role === "client" && !stream.answered)) {
      if (!this.recv.dropped(flowLength)) return this.fail(ErrorCode.FLOW_CONTROL_ERROR, "connection-window", "DATA past the connection's receive window")
      if (stream !== undefined && stream.state === StreamState.HALF_CLOSED_REMOTE) return this.streamFailed(stream, ErrorCode.STREAM_CLOSED, "data-after-end")
      if (stream !== undefined) return this.streamFailed(stream, ErrorCode.PROTOCOL_ERROR, "data-before-head")
      if (this.isIdle(streamId)) return this.fail(ErrorCode.PROTOCOL_ERROR, "idle-stream", `DATA on idle stream ${streamId}`)
      return this.onClosedStream(streamId)
    }
    const counted = this.recv.received(stream, flowLength, data.length)
    if (counted === CONNECTION_OVERFLOW) return this.fail(ErrorCode.FLOW_CONTROL_ERROR, "connection-window", "DATA past the connection's receive window")
    if (counted === STREAM_OVERFLOW) return this.streamFailed(stream, ErrorCode.FLOW_CONTROL_ERROR, "stream-window")
    if (flowLength === 0 && !endStream && this.guards.emptyFrames.take(this.now) > 0) return this.calm("empty-frames")
    if (stream.declaredLength >= 0) {
      stream.receivedLength += data.length
      if (stream.receivedLength > stream.declaredLength || (endStream && stream.receivedLength !== stream.declaredLength)) return this.streamFailed(stream, ErrorCode.PROTOCOL_ERROR, "content-length")
    }
    if (endStream) this.remoteEnd(stream)
    this.handler.onData(stream, data, endStream)
    if (endStream) this.closeIfDone(stream)
  }

  override onHeaders(streamId: number, block: Buffer, endStream: boolean): void {
    this.delivered++
    if (this.endedWith !== undefined) return
    // Decoded always, whatever becomes of the stream: HPACK's table must stay in step.
    const fields = this.decoder.decode(block)
    if (fields instanceof HpackError) return this.fail(ErrorCode.COMPRESSION_ERROR, "hpack", `HPACK: ${fields.reason}`)
    const stream = this.streams.get(streamId)
    if (stream === undefined) {
      if (this.role === "server" && streamId > this.lastPeerId) {
        if (streamId % 2 === 0) return this.fail(ErrorCode.PROTOCOL_ERROR, "even-stream-id", `the client opened stream ${streamId}`)
        this.lastPeerId = streamId
        // Above our GOAWAY's last stream: never processed (the peer may retry it elsewhere).
        if (this.goingAway && streamId > this.goAwaySent) return
        // A list past the decode budget: ENHANCE_YOUR_CALM, as nghttp2 refuses one past its limit (an HPACK bomb); any other malformed one PROTOCOL_ERROR.
        if (!Array.isArray(fields)) return this.refuse(streamId, fields.reason === "header-list-too-large" ? ErrorCode.ENHANCE_YOUR_CALM : ErrorCode.PROTOCOL_ERROR)
        return this.newStream(streamId, fields, endStream)
      }
      if (this.isIdle(streamId)) return this.fail(ErrorCode.PROTOCOL_ERROR, "idle-stream", `HEADERS on stream ${streamId}, which this side never opened`)
      // A request head on a lower id than the last one, on no stream we reset: ids only grow (RFC 9113 5.1.1).
      if (this.role === "server" && !this.recentlyReset.has(streamId))
        return this.fail(ErrorCode.PROTOCOL_ERROR, "stream-id-backwards", `HEADERS on stream ${streamId} after stream ${this.lastPeerId}`)
      return this.onClosedStream(streamId)
    }
    if (stream.state === StreamState.HALF_CLOSED_REMOTE) return this.streamFailed(stream, ErrorCode.STREAM_CLOSED, "headers-after-end")
    if (!Array.isArray(fields)) return this.streamFailed(stream, ErrorCode.PROTOCOL_ERROR, fields.reason)
    if (this.role === "client" && !stream.answered) return this.onResponseHead(stream, fields, endStream)
    // A second header block: trailers, which must end the stream.
    if (!endStream) return this.streamFailed(stream, ErrorCode.PROTOCOL_ERROR, "headers-without-end-stream")
    const rejected = checkTrailers(fields)
    if (rejected !== undefined) return this.streamFailed(stream, ErrorCode.PROTOCOL_ERROR, rejected.reason)
    if (stream.declaredLength >= 0 && stream.receivedLength !== stream.declaredLength) return this.streamFailed(stream, ErrorCode.PROTOCOL_ERROR, "content-length")
    this.remoteEnd(stream)
    this.handler.onTrailers(stream, fields)
    this.closeIfDone(stream)
  }

  override onRstStream(streamId: number, errorCode: number): void {
    this.delivered++
    if (this.endedWith !== undefined) return
    const stream = this.streams.get(streamId)
    if (stream === undefined) {
      if (this.isIdle(streamId)) return this.fail(ErrorCode.PROTOCOL_ERROR, "idle-stream", `RST_STREAM on idle stream ${streamId}`)
      return this.ignored()
    }
    const premature = this.role === "server" && !stream.answered && this.now - stream.startedAt < this.limits.prematureLifetimeMs && this.now < stream.deadlineAt
    // The leg hears of the reset before a guard it trips may end the connection (and every other stream).
    stream.state = StreamState.CLOSED
    this.handler.onReset(stream, errorCode)
    this.closeStream(stream, premature)
  }

  /** Each id's last value in the frame; applied once at its end (a 16 KiB frame repeats a setting 2,730 times). */
  override onSetting(id: number, value: number): void {
    switch (id) {
      case SettingId.HEADER_TABLE_SIZE:
        this.peerSettings.tableSize = value
        break
      case SettingId.INITIAL_WINDOW_SIZE:
        this.peerSettings.initialWindow = value
        break
      case SettingId.MAX_FRAME_SIZE:
        this.peerSettings.maxFrameSize = value
        break
      case SettingId.MAX_CONCURRENT_STREAMS:
        this.peerSettings.maxConcurrent = value
        break
      case SettingId.MAX_HEADER_LIST_SIZE:
        this.peerSettings.maxHeaderList = value
        break
    }
  }

  override onSettingsEnd(): void {
    this.delivered++
    const p = this.peerSettings
    const { tableSize, initialWindow, maxFrameSize, maxConcurrent, maxHeaderList } = p
    p.tableSize = p.initialWindow = p.maxFrameSize = p.maxConcurrent = p.maxHeaderList = -1
    if (this.endedWith !== undefined) return
    if (this.guards.settings.take(this.now) > 0) return this.calm("settings-flood")
    if (tableSize >= 0) this.sender.encoder.setPeerTableSize(tableSize)
    if (initialWindow >= 0) {
      // setInitial walks every open stream.
      const error = this.sender.windows.setInitial(initialWindow)
      if (error !== undefined) return this.frameFailed(error)
    }
    if (maxFrameSize >= 0) this.writer.peerMaxFrameSize = maxFrameSize
    if (maxConcurrent >= 0) this.peerMaxConcurrent = maxConcurrent
    if (maxHeaderList >= 0) this.peerMaxHeaderList = maxHeaderList
    this.peerSettingsDue = 0
    this.peerSpoke = true
    this.writer.settingsAck()
    this.sender.drainAll()
    this.openQueued()
    // Last: the leg reads the values applied (and may end the connection from here).
    if (this.endedWith === undefined) this.handler.onSettings?.()
  }

  override onSettingsAck(): void {
    this.delivered++
    this.settingsAckDue = 0
  }

  override onPing(payload: Buffer, ack: boolean): void {
    this.delivered++
    if (this.endedWith !== undefined) return
    // A PING after some of our DATA is free: a client that tunes its window (grpc-go's BDP estimator)
    // PINGs once a round trip while an answer flows, past 200 a second on loopback, for as long as it
    // flows (measured: 1,096 in 0.5 s, a 400 MiB answer). A flood pays: ACKs at most our DATA writes.
    const dataWrites = this.writer.dataWrites
    const paced = !ack && dataWrites !== this.dataAtPing
    this.dataAtPing = dataWrites
    if (!paced && this.guards.ping.take(this.now) > 0) return this.calm("ping-flood")
    // An ACK of none of ours (a wrong payload, one we never sent) is dropped: the budget above paid for it.
    if (ack) return this.pings.acked(payload, this.now)
    this.handler.onPing?.()
    if (this.endedWith === undefined) this.writer.ping(payload, true)
  }

  override onGoAway(lastStreamId: number, errorCode: number): void {
    this.delivered++
    if (this.endedWith !== undefined) return
    this.goAwayReceived = lastStreamId
    // First, so the leg stops sending requests here before it hears the streams refused below.
    this.handler.onGoAway?.(lastStreamId, errorCode)
    if (this.endedWith !== undefined) return
    this.refuseQueued("goaway")
    if (this.role === "client") {
      for (const stream of [...this.streams.values()]) {
        // A leg's onEnd may have reset another stream or ended the connection (which ended the rest).
        if (stream.id <= lastStreamId || this.streams.get(stream.id) !== stream) continue
        this.forgetStream(stream, false)
        this.handler.onEnd(stream, new H2StreamEnded({ reason: "goaway", code: ErrorCode.REFUSED_STREAM, retryable: true }))
      }
    }
    if (this.streams.size === 0) this.finish("peer-goaway", errorCode, `the peer sent GOAWAY(${lastStreamId}, ${errorCode})`)
  }

  override onWindowUpdate(streamId: number, increment: number): void {
    this.delivered++
    if (this.endedWith !== undefined) return
    if (increment < TINY_WINDOW_UPDATE && this.guards.tinyWindowUpdates.take(this.now) > 0) return this.calm("tiny-window-updates")
    if (streamId === 0) {
      const error = this.sender.windows.growConnection(increment)
      if (error !== undefined) return this.frameFailed(error)
      return this.sender.drainAll()
    }
    const stream = this.streams.get(streamId)
    if (stream === undefined) {
      if (this.isIdle(streamId)) return this.fail(ErrorCode.PROTOCOL_ERROR, "idle-stream", `WINDOW_UPDATE on idle stream ${streamId}`)
      return this.ignored()
    }
    const error = this.sender.windows.growStream(stream, streamId, increment)
    if (error !== undefined) return this.streamFailed(stream, error.code, error.reason)
    this.sender.drain(stream)
  }

  override onError(error: H2FrameError): void {
    this.delivered++
    if (this.endedWith !== undefined) return
    this.frameFailed(error)
  }

  private newStream(streamId: number, fields: Array<string>, endStream: boolean): void {
    if (checkRequestHead(fields) !== undefined) return this.refuse(streamId, ErrorCode.PROTOCOL_ERROR)
    const length = declaredLength(fields)
    // Repeated or not a number; or a length its END_STREAM on the head already contradicts.
    if (length === -2 || (endStream && length > 0)) return this.refuse(streamId, ErrorCode.PROTOCOL_ERROR)
    if (this.streams.size >= this.limits.maxConcurrentStreams) return this.refuse(streamId, ErrorCode.REFUSED_STREAM)
    const stream = new H2Stream(this.limits.streamWindow, this.now)
    stream.id = streamId
    stream.state = endStream ? StreamState.HALF_CLOSED_REMOTE : StreamState.OPEN
    stream.declaredLength = length
    this.streams.set(streamId, stream)
    this.sender.opened(stream)
    this.handler.onRequest(stream, fields, endStream)
  }

  private onResponseHead(stream: H2Stream, fields: Array<string>, endStream: boolean): void {
    const rejected = checkResponseHead(fields)
    if (rejected !== undefined) return this.streamFailed(stream, ErrorCode.PROTOCOL_ERROR, rejected.reason)
    // 1xx: informational, the final head follows (and cannot be END_STREAM itself).
    if (fields[1]!.charCodeAt(0) === 0x31) {
      if (endStream) return this.streamFailed(stream, ErrorCode.PROTOCOL_ERROR, "informational-end-stream")
      // RFC 9110 15.2 sets no bound; a peer sending them without end would cost a decode each for as
      // long as the stream's deadline lasts (one 103 after another kept a core busy for 10 s).
      if (++stream.interimHeads > MAX_INTERIM_HEADS) this.streamFailed(stream, ErrorCode.ENHANCE_YOUR_CALM, "too-many-interim-heads")
      return
    }
    // A head that ends the stream has no DATA to count; nor has a HEAD's, a 204's or a 304's answer,
    // whose content-length may be non-zero (8.1.1) and whose END_STREAM may come in a DATA frame.
    const declared = declaredLength(fields)
    if (declared === -2) return this.streamFailed(stream, ErrorCode.PROTOCOL_ERROR, "bad-content-length")
    if (!endStream && !stream.headRequest && !noContentStatus(fields[1]!)) stream.declaredLength = declared
    stream.answered = true
    if (endStream) this.remoteEnd(stream)
    this.handler.onResponse(stream, fields, endStream)
    if (endStream) this.closeIfDone(stream)
  }

  /** DATA or HEADERS for a stream that is over: dropped if we reset it (the peer had not seen it yet), else STREAM_CLOSED. */
  private onClosedStream(streamId: number): void {
    // Reset by us, or above our GOAWAY's last stream (never processed): the peer had not seen it yet.
    if (this.recentlyReset.has(streamId) || (this.goingAway && this.role === "server" && streamId > this.goAwaySent)) return this.ignored()
    this.refuse(streamId, ErrorCode.STREAM_CLOSED)
  }
}

/** Interim (1xx) heads a stream takes before its final one: Go's client takes 5, as the HTTP/1.1 app pool (appPool.ts) does. */
const MAX_INTERIM_HEADS = 5

/** A 204 or 304 answer has no content, whatever its content-length says (RFC 9110 6.4.1). */
const noContentStatus = (status: string): boolean => status === "204" || status === "304"
