// What an IIP client (client.ts) is made with and what its callers get back: the client's and each
// request's options (the client's checked at construction, checkClientOptions), and the errors a
// request can end with.
import type { CancelSignal } from "../mux/cancellation.ts"
import type { ChannelOpenFailed, ConnectFailed, ConnectionClosed, Overloaded, RequestTimeout } from "../mux/errors.ts"
import type { MeshCallError } from "../mux/meshSession.ts"
import type { PacketEncodeError } from "../protocol/errors.ts"
import { MaxDeadlineMs, type Meta } from "../protocol/mesh.ts"
import type { LogThrottle } from "./log.ts"
import { checkOptions, count, countOrInfinity, durationMs, durationOrInfinityMs, type Limits } from "./optionLimits.ts"
import type { SelfDialCheck } from "./ownListeners.ts"
import { checkPeerOptions, type PeerOptions } from "./peerOptions.ts"
import type { ClientTlsOptions } from "./tls.ts"

export type ClientError = ConnectionClosed | RequestTimeout | Overloaded | ChannelOpenFailed | ConnectFailed | PacketEncodeError | MeshCallError
export type ClientCallback = (error: ClientError | undefined, data: Buffer | undefined) => void

export interface ReconnectOptions {
  /** First redial delay; each failure doubles it, up to `maxMs`; each delay is jittered to 50-100%. */
  readonly baseMs: number
  readonly maxMs: number
}

export interface ClientOptions extends PeerOptions {
  readonly host: string
  readonly port: number
  /** "websocket": IIP over WebSocket binary messages (PROTOCOL.md §18) to ws://host:port + `webSocketPath`. Default "tcp". */
  readonly transport?: "tcp" | "websocket"
  /** Path of the server's WebSocket endpoint (default "/iip"). */
  readonly webSocketPath?: string
  readonly maxConnections?: number
  readonly maxChannelsPerConnection?: number
  /**
   * Channels a mesh connection may open past maxChannelsPerConnection, one for each that a stream
   * holds (a WebSocket, a long streamed answer: out of use for its whole life), so that streams
   * never take every channel from other requests; the connection's channels never more than half
   * what the server takes (ConnectionPool.streamPlaces). Left over once the streams end, they close (`trim`). Default 0: streams count against
   * maxChannelsPerConnection like any request.
   */
  readonly streamChannelsPerConnection?: number
  /**
   * At the channel limit (every connection's channels open and busy), write a request behind the
   * others on the least-loaded channel instead of waiting in the client's queue for one to free,
   * as the Go clients do. Below the limit a request always takes a free or new channel. Default
   * true: at 64 in flight over 16 channels, waiting in the queue cost about twice the CPU per
   * request (bench echo: 8-14 against 4-5 µs), since fewer requests share each read and write;
   * the price is that one slow request holds up those written behind it. False for a caller whose
   * requests must never wait on another's (the sidecar, which opens channels enough instead).
   */
  readonly pipelineAtLimit?: boolean
  /**
   * Mesh mode: the stream window this client states in its hello (PROTOCOL.md §13), what a peer may
   * send on a stream before a grant, its streamed answers' included (default 1 MiB). Lower, it may
   * grant a stream more as it sees fit (IncomingStream.countUnreadIn: the sidecar's answers).
   */
  readonly streamWindow?: number
  /** Idle channels kept open ahead of need, so a burst finds channels ready (default 1; 0: a channel opens only when a request waits for one). */
  readonly idleChannelsAhead?: number
  /** Requests in flight plus waiting; one more fails with Overloaded. */
  readonly maxPending?: number
  /**
   * Mesh mode, calls the server makes to this client (PROTOCOL.md §10): how many of them one
   * connection may have read and not yet answered, or answered and not yet written, stated in the
   * hello as `maxRequests` (default 1024, as a server's). An iip-mesh server keeps within it; past
   * it a call is refused `overloaded`, processed: false.
   */
  readonly maxQueuedRequestsPerConnection?: number
  /**
   * Mesh mode: the bytes of the server's calls one connection may make this client hold, stated
   * in the hello as `maxBytes` (the server's connection credit under `conncredit`, §13; default 64
   * MiB, as a server's); a call whose body does not fit beside what is held is refused `overloaded`.
   */
  readonly maxQueuedBytesPerConnection?: number
  /** A connection and its hello within this (default 3000; at most MaxDeadlineMs, 24 h). */
  readonly connectTimeoutMs?: number
  /** Default per-request timeout; 0 means none. */
  readonly requestTimeoutMs?: number
  /** Offer mesh mode (default true). A plain IIP server declines and the connection stays plain. */
  readonly mesh?: boolean
  readonly reconnect?: ReconnectOptions
  /**
   * Requests queued while no connection is up wait for the next attempt, within their deadline
   * (default true: one server, worth waiting for). False fails them at once with the attempt's
   * error (nothing was sent), for a caller with other servers to go to.
   */
  readonly waitForReconnect?: boolean
  /**
   * Told when the server says go-away (a graceful stop; not a go-away `closing`, one connection
   * evicted at its cap, PROTOCOL.md §11), or when a connection to it is closed for
   * not answering a ping (a frozen peer): the balancer holds the endpoint out without failing it.
   */
  readonly onPeerState?: (state: "go-away" | "unresponsive") => void
  /**
   * Run every connection inside TLS (PROTOCOL.md §19): mutual TLS with a mesh peer, or the Go
   * reference's TLS mode. A refused handshake fails with ConnectFailed naming the reason (`tls`).
   * TCP transport only: over WebSocket it is not used.
   */
  readonly tls?: ClientTlsOptions
  /**
   * Dial only peers' addresses: `host` (a name: every address it resolves to) must not be this
   * host's loopback, unspecified, multicast or broadcast, or the cloud metadata service
   * (src/iip/dialGuard.ts); else the attempt fails with ConnectFailed `notPeer`, nothing connected.
   * For servers learned from another host (mDNS, DNS SRV, Kubernetes). Default false.
   */
  readonly peersOnly?: boolean
  /**
   * Never connect where this process itself listens (src/iip/ownListeners.ts): when `host` (a name:
   * any address it resolves to) at `port` reaches one of its listeners, the attempt fails with
   * ConnectFailed `notPeer` and `ownListener`, nothing connected. Whatever `peersOnly` says.
   */
  readonly notSelf?: SelfDialCheck
  /**
   * Bounds the `connect-failed` lines (the rest counted in the next line's suppressedBefore): a
   * server failing for hours is redialled at back-off rate. Shared by the clients of one owner (a
   * sidecar's endpoint registry), it bounds the lines over all their servers. Default: this
   * client's own, 10 lines a minute.
   */
  readonly connectFailedLines?: LogThrottle
}

export interface RequestOptions {
  /**
   * The whole request's timeout: absent, the client's requestTimeoutMs; 0 or less, none; past
   * MaxDeadlineMs (Infinity too), MaxDeadlineMs. NaN is refused with PacketEncodeError
   * `timeout-not-a-number`, nothing sent.
   */
  readonly timeoutMs?: number
  /** Sent with the request in mesh mode (trace context and the like); a plain peer cannot take it. */
  readonly meta?: Meta
  /** Aborting it cancels the request (at the peer too, in mesh mode): an AbortSignal or a Cancellation (src/mux/cancellation.ts). */
  readonly signal?: CancelSignal
  /**
   * `monotonicMs()` (src/mux/clock.ts: whole ms of performance.now(), not Date.now()) as the caller
   * read it in the same synchronous step, `timeoutMs` counting from it: spares `stream` and
   * `streamWith` a clock read. Absent or 0: they read the clock. A Date.now() reading here is refused
   * with PacketEncodeError `now-not-monotonic` (it would put the deadline decades away).
   */
  readonly now?: number
  /**
   * `stream` only: the call holds its channel for its life (an upgraded connection, a WebSocket). It
   * goes only where the connection has a stream place left (ConnectionPool.streamPlaces), never on
   * the requests' channels; with none left, and as many tunnels already waiting as places will
   * come, it fails at once with Overloaded `streamChannels` rather than wait for its deadline.
   * Without streamChannelsPerConnection it is an ordinary stream.
   */
  readonly tunnel?: boolean
}

/** What each numeric option takes (optionLimits.ts). */
const clientLimits: Limits<Omit<ClientOptions, "host" | "port">> = {
  maxConnections: count(1),
  // A hello states it as a positive 31-bit number (mesh.ts decodeHello).
  maxChannelsPerConnection: count(1, 0x7fff_ffff),
  streamChannelsPerConnection: count(0),
  idleChannelsAhead: count(0),
  // Infinity: no bound of the client's own (the sidecar's, whose balancer bounds requests).
  maxPending: countOrInfinity(1),
  maxQueuedRequestsPerConnection: count(1),
  maxQueuedBytesPerConnection: count(1),
  // Infinity: MaxDeadlineMs, as documented; 0 would fail every dial at once.
  connectTimeoutMs: durationOrInfinityMs(1, MaxDeadlineMs),
  // 0: none; a request's timeout is held to MaxDeadlineMs (clampDeadlineMs), Infinity too.
  requestTimeoutMs: durationOrInfinityMs(0, MaxDeadlineMs)
}
const reconnectLimits: Limits<ReconnectOptions> = { baseMs: durationMs(1), maxMs: durationMs(1) }

/** Throws OptionInvalid (optionLimits.ts) for a numeric option of a client out of range. */
export const checkClientOptions = (options: Omit<ClientOptions, "host" | "port">): void => {
  checkOptions("IipClient", clientLimits, options)
  checkOptions("IipClient reconnect", reconnectLimits, options.reconnect)
  checkPeerOptions("IipClient", options)
}
