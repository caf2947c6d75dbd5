// Errors a connection reports to the code above it. Every request that does not succeed ends in
// exactly one of these (or a handler's own answer), never in silence.
import * as Data from "effect/Data"

/** The connection is gone; `reason` says why (peer closed, protocol rule, socket error, local close). */
export class ConnectionClosed extends Data.TaggedError("ConnectionClosed")<{
  readonly message: string
  /** Whether the request was already written: if so the peer may have processed it. */
  readonly sent: boolean
}> {}

/** No answer arrived within the request's timeout. The channel stays paired: the late answer is consumed. */
export class RequestTimeout extends Data.TaggedError("RequestTimeout")<{
  readonly message: string
  readonly timeoutMs: number
}> {}

/** A limit was reached (pending requests, queued bytes, connections, channels); nothing was sent. */
export class Overloaded extends Data.TaggedError("Overloaded")<{
  readonly message: string
  readonly limit: string
}> {}

/** The peer refused or botched `/sys/new_channel`. */
export class ChannelOpenFailed extends Data.TaggedError("ChannelOpenFailed")<{
  readonly message: string
}> {}

/** The TCP connection (or the TLS handshake on it) could not be made. */
export class ConnectFailed extends Data.TaggedError("ConnectFailed")<{
  readonly message: string
  readonly address: string
  /** The peer's host said nothing listens there (ECONNREFUSED), as opposed to a timeout. */
  readonly refused?: boolean
  /** A TLS refusal's token (src/iip/tls.ts TlsRefusalReason): the connection was made and its handshake refused. */
  readonly tls?: string
  /**
   * The endpoint was learned from another host and its address (a name: after resolution) is on this
   * host, or the metadata service: not dialled (src/iip/dialGuard.ts).
   */
  readonly notPeer?: boolean
  /** With notPeer: the address and port are this process's own listener (src/iip/ownListeners.ts), whatever the endpoint's source. */
  readonly ownListener?: boolean
  /**
   * The caller's own wait (shorter than the connect timeout: a per-try deadline) ran out while the
   * connection was still being made: no verdict on the endpoint, which may connect a moment later.
   */
  readonly waitedOut?: boolean
}> {}
