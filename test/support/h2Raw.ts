// An HTTP/2 app written frame by frame, for the answers node:http2 cannot be made to send (a
// RST_STREAM at an exact point of an answer, say): it takes a client's preface and SETTINGS, and
// hands each request's HEADERS frame (stream id, flags) to the test, which writes its answer's frames.
import type * as net from "node:net"
import { type Cleanup, startRawServer } from "./iipRaw.ts"

export const FrameType = { data: 0, headers: 1, rstStream: 3, settings: 4, ping: 6, windowUpdate: 8 } as const
export const FrameFlag = { endStream: 1, ack: 1, endHeaders: 4 } as const

/** One HTTP/2 frame: its 9-byte head (length, type, flags, stream id), then the payload. */
export const h2Frame = (type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer => {
  const head = Buffer.alloc(9)
  head.writeUIntBE(payload.length, 0, 3)
  head[3] = type
  head[4] = flags
  head.writeUInt32BE(stream, 5)
  return Buffer.concat([head, payload])
}

/** A RST_STREAM frame with its error code (0: NO_ERROR). */
export const rstStream = (stream: number, code = 0): Buffer => {
  const payload = Buffer.alloc(4)
  payload.writeUInt32BE(code, 0)
  return h2Frame(FrameType.rstStream, 0, stream, payload)
}

/** HPACK of a `:status 200` head (static index 8), no other field. */
export const STATUS_200 = Buffer.from([0x88])

/** RFC 9113's initial flow-control window, of the connection and of each stream (6.9.2). */
export const INITIAL_WINDOW = 65_535

/**
 * A raw HTTP/2 app on 127.0.0.1 port 0: its SETTINGS first, the client's acknowledged; each
 * HEADERS frame of a request goes to `onRequest` with the socket, each WINDOW_UPDATE's increment
 * to `onWindowUpdate` (stream 0: the connection's), for an app that sends as much as the client's
 * windows allow (frames after it, a request body's DATA say, are read and ignored).
 */
export const startRawH2App = async (
  cleanup: Cleanup,
  onRequest: (socket: net.Socket, stream: number) => void,
  onWindowUpdate: (stream: number, increment: number) => void = () => {}
): Promise<{ readonly port: number }> =>
  startRawServer(cleanup, (socket) => {
    socket.write(h2Frame(FrameType.settings, 0, 0))
    let read = Buffer.alloc(0)
    let at = 24 // the client's preface
    socket.on("data", (data: Buffer) => {
      read = Buffer.concat([read, data])
      for (let length = 0; at + 9 <= read.length && at + 9 + (length = read.readUIntBE(at, 3)) <= read.length; at += 9 + length) {
        const type = read[at + 3]
        const stream = read.readUInt32BE(at + 5) & 0x7fffffff
        if (type === FrameType.settings && (read[at + 4]! & FrameFlag.ack) === 0) socket.write(h2Frame(FrameType.settings, FrameFlag.ack, 0))
        if (type === FrameType.headers) onRequest(socket, stream)
        if (type === FrameType.windowUpdate && length === 4) onWindowUpdate(stream, read.readUInt32BE(at + 9) & 0x7fffffff)
      }
    })
  })
