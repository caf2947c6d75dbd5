// The options an IIP client (client.ts) and an IIP server (server.ts) share: how either side speaks
// on a connection once it is up. Each extends them with what only a dialer or a listener has, and
// checks these with checkPeerOptions when it is constructed (optionLimits.ts).
import type { ConnectionLimits } from "../mux/connection.ts"
import type { CompressionOptions } from "../protocol/compression.ts"
import type { KeepAliveOptions } from "./keepAlive.ts"
import type { Log } from "./log.ts"
import { checkOptions, count, durationMs, type Limits } from "./optionLimits.ts"
import type { Supervisor } from "./supervisor.ts"

export interface PeerOptions {
  readonly connectionLimits?: Partial<ConnectionLimits>
  /** This node's name in hellos. */
  readonly node?: string
  /** Largest metadata block this side accepts per message in mesh mode (default 8 KiB, at most 65535). */
  readonly maxMetaBytes?: number
  /**
   * Body compression in mesh mode (PROTOCOL.md §12.1). Unset: offers zstd and gzip, so it reads what
   * the peer compresses, and sends its own bodies as they are; `{}` (or codecs, minBytes): also
   * compresses its bodies from 1 KiB; false: offers none.
   */
  readonly compression?: CompressionOptions | false
  readonly keepAlive?: KeepAliveOptions | false
  readonly log?: Log
  readonly supervisor?: Supervisor
}

const connectionLimits: Limits<ConnectionLimits> = {
  maxMessageBytes: count(1),
  // 0: every body streams (PROTOCOL.md §13).
  maxWholeBodyBytes: count(0),
  maxReceivePathBytes: count(1),
  writeHighWaterBytes: count(1),
  maxWriteQueueBytes: count(1)
}

const keepAliveLimits: Limits<KeepAliveOptions> = { intervalMs: durationMs(1), timeoutMs: durationMs(1), busyIntervalMs: durationMs(1), busyTimeoutMs: durationMs(1) }

/** Throws OptionInvalid (optionLimits.ts) for a shared option out of range, named `owner option`. */
export const checkPeerOptions = (owner: string, options: PeerOptions): void => {
  // The metadata length is 16 bits on the wire (PROTOCOL.md): a larger one was cut to 65535 unsaid.
  checkOptions(owner, { maxMetaBytes: count(1, 0xffff) }, options)
  checkOptions(`${owner} connectionLimits`, connectionLimits, options.connectionLimits)
  if (options.keepAlive !== false) checkOptions(`${owner} keepAlive`, keepAliveLimits, options.keepAlive)
  if (options.compression !== false) checkOptions(`${owner} compression`, { minBytes: count(0) }, options.compression)
}
