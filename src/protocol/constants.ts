// Wire constants of IIP (PROTOCOL.md §2-§5): status values, limits, system paths and error codes.
// Everything above this layer names these constants; test/protocol/constants.test.ts pins them.

/** The status byte that opens every packet (PROTOCOL.md §2.1). */
export const Status = {
  /** request, first packet, more follow */
  RequestFirstMore: 0,
  /** request, first packet, complete (the normal one-packet request) */
  RequestWhole: 1,
  /** request, continuation, more follow */
  RequestContinue: 2,
  /** request, continuation, last */
  RequestLast: 3,
  /** response, first packet, more follow */
  ResponseFirstMore: 4,
  /** response, first packet, complete (the normal one-packet response) */
  ResponseWhole: 5,
  /** response, continuation, more follow */
  ResponseContinue: 6,
  /** response, continuation, last */
  ResponseLast: 7,
  /** the peer closes the connection now; nothing after this byte is read */
  Close: 8
} as const
export type Status = (typeof Status)[keyof typeof Status]

/** The channel status before any packet was received on it ("none"). */
export const StatusNone = 255

export const Limits = {
  /** Longest path this side sends (the reference's MaxPathLen). */
  maxSendPathBytes: 2048,
  /**
   * Longest path this side accepts. The reference has no explicit limit: it scans a 512 KiB read
   * buffer. We bound the scan much lower; a Go HTTP adapter path carrying headers in
   * `__http_hdr__` stays far below it.
   */
  maxReceivePathBytes: 64 * 1024,
  /** Largest data field of one packet, inclusive (the reference's MaxPacketSize). */
  maxPacketData: 16 * 1024 * 1024,
  /** Smallest data field: a length of 0 is illegal on the wire. */
  minPacketData: 1,
  /** Fixed bytes of a packet besides path and data: status, NUL, channel id, length. */
  packetOverhead: 10,
  /** Largest channel id. */
  maxChannelId: 0xffff_ffff
} as const

/** The system channel that exists on every connection from the start. */
export const SystemChannel = 0

export const SystemPath = {
  newChannel: "/sys/new_channel",
  deleteChannel: "/sys/delete_channel"
} as const

/** The data the reference sends when a request has no body: an empty body is illegal on the wire. */
export const EmptyBody: Uint8Array = Uint8Array.of(0x7b, 0x7d) // "{}"

/** Error codes of the reference (variants.go); only 101 and 102 reach the wire there. */
export const ErrorCode = {
  handlerFailed: -1,
  packetUncompleted: 100,
  handleNoResponse: 101,
  handleError: 102,
  requestTimeout: 103,
  unknown: 104,
  responseHandlerNotImplemented: 105,
  channelCreateLimited: 106,
  serverConnectionsLimited: 107,
  clientConnectionsLimited: 108
} as const
