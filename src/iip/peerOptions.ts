// The options an IIP client (client.ts) and an IIP server (server.ts) share: how either side speaks
// on a connection once it is up. Each extends them with what only a dialer or a listener has.
import type { ConnectionLimits } from "../mux/connection.ts"
import type { CompressionOptions } from "../protocol/compression.ts"
import type { KeepAliveOptions } from "./keepAlive.ts"
import type { Log } from "./log.ts"
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
