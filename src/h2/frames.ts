// HTTP/2 frame vocabulary (RFC 9113 sections 4, 6, 7, 11): frame types, flags, error codes, setting
// ids and their bounds, and the one error class the frame layer reports. Shared by the reader
// (frameReader.ts), the writer (frameWriter.ts) and the flow-control windows (flowWindow.ts); the
// connection layer above maps an error to RST_STREAM or GOAWAY by its scope.
import * as Data from "effect/Data"

export const FrameType = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9
} as const

export const Flag = {
  END_STREAM: 0x1,
  ACK: 0x1,
  END_HEADERS: 0x4,
  PADDED: 0x8,
  PRIORITY: 0x20
} as const

export const ErrorCode = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  SETTINGS_TIMEOUT: 0x4,
  STREAM_CLOSED: 0x5,
  FRAME_SIZE_ERROR: 0x6,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  COMPRESSION_ERROR: 0x9,
  CONNECT_ERROR: 0xa,
  ENHANCE_YOUR_CALM: 0xb,
  INADEQUATE_SECURITY: 0xc,
  HTTP_1_1_REQUIRED: 0xd
} as const

export const SettingId = {
  HEADER_TABLE_SIZE: 0x1,
  ENABLE_PUSH: 0x2,
  MAX_CONCURRENT_STREAMS: 0x3,
  INITIAL_WINDOW_SIZE: 0x4,
  MAX_FRAME_SIZE: 0x5,
  MAX_HEADER_LIST_SIZE: 0x6,
  ENABLE_CONNECT_PROTOCOL: 0x8,
  NO_RFC7540_PRIORITIES: 0x9
} as const

/** The 24 bytes a client sends before its first frame (RFC 9113 3.4). */
export const CLIENT_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1")
export const FRAME_HEADER_BYTES = 9
/** SETTINGS_MAX_FRAME_SIZE's initial value and lower bound (RFC 9113 6.5.2). */
export const DEFAULT_MAX_FRAME_SIZE = 16_384
export const MAX_MAX_FRAME_SIZE = 16_777_215
/** Every window starts here until SETTINGS or WINDOW_UPDATE say otherwise (RFC 9113 6.9.2). */
export const DEFAULT_WINDOW_SIZE = 65_535
export const MAX_WINDOW_SIZE = 2 ** 31 - 1

/**
 * The peer broke a rule of RFC 9113. A connection error (`streamId` 0) ends the connection with
 * GOAWAY(code); a stream error ends only that stream with RST_STREAM(code) and the connection goes on.
 */
export class H2FrameError extends Data.TaggedError("H2FrameError")<{
  /** The HTTP/2 error code to send (ErrorCode). */
  readonly code: number
  readonly scope: "connection" | "stream"
  /** The stream a stream error ends; 0 for a connection error. */
  readonly streamId: number
  /** Short rule name, stable for logs and tests (e.g. "frame-too-large", "continuation-flood"). */
  readonly reason: string
  readonly message: string
}> {}

/**
 * Builds the error without a stack: it reports the peer's bytes, not a path through our code, and a
 * peer can repeat a stream error at will (a 13-byte WINDOW_UPDATE of 0 each), where capturing the
 * stack made one cost ~6 µs against ~26 ns for a valid frame (measured through the reader).
 */
const withoutStack = (fields: ConstructorParameters<typeof H2FrameError>[0]): H2FrameError => {
  const limit = Error.stackTraceLimit
  Error.stackTraceLimit = 0
  try {
    return new H2FrameError(fields)
  } finally {
    Error.stackTraceLimit = limit
  }
}

export const connectionError = (code: number, reason: string, message: string): H2FrameError =>
  withoutStack({ code, scope: "connection", streamId: 0, reason, message })

export const streamError = (streamId: number, code: number, reason: string, message: string): H2FrameError =>
  withoutStack({ code, scope: "stream", streamId, reason, message })
