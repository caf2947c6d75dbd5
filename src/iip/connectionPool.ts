// An IIP client's connections to its server (client.ts) and the channels opened on each: which
// free channel takes the next request, whether a connection may open another channel, and which
// channels opened for streams are left over. The client dials, adopts and drops connections, opens
// the channels and keeps the queue and the timers; this module looks at the pool, trims it, takes
// out channels the server refused, and tells the client when a congested connection drained.
import type { ClientChannel, ClientSession } from "../mux/clientSession.ts"
import type { MeshSession, OwnChannel } from "../mux/meshSession.ts"

export type Link = { readonly mode: "plain"; readonly session: ClientSession } | { readonly mode: "mesh"; readonly session: MeshSession }

/** One pooled connection and the channels opened on it. */
export interface Pooled {
  readonly link: Link
  readonly channels: Array<ClientChannel | OwnChannel>
  opening: number
  waitingWritable: boolean
  /** The server said go-away: no new requests here. */
  draining: boolean
  /**
   * Plain IIP: channels the server had given when it refused one (Infinity while none refused).
   * Plain IIP closes no channel, so its count on this connection only grows: no more is asked for
   * here (a budget it shares across connections may free when another closes; this one waits).
   */
  plainCap: number
  /** A mesh call was answered on it (IipClient's redial back-off: a connection that ends unused counts as a failed dial). */
  answered: boolean
  /** Drained or closed, counted for that back-off once. */
  ended: boolean
  /** When it was adopted (monotonicMs): one that lived the back-off's cap does not count for it. */
  readonly since: number
}

const isDone = (call: { readonly done: boolean }): boolean => call.done

/** Every call on a mesh channel given up by its caller, the peer told to stop it (none held, unsent). */
const allGivenUp = (channel: OwnChannel): boolean => channel.held === 0 && channel.fifo.every(isDone)

/** A stream holds the channel, or will: a tunnel was sent on it and its answer has not begun (OwnChannel.tunnelOpening). */
const heldByStream = (channel: ClientChannel | OwnChannel): boolean => channel.streaming || (channel as OwnChannel).tunnelOpening === true

export class ConnectionPool {
  readonly connections: Array<Pooled> = []
  readonly maxConnections: number
  private readonly maxChannelsPerConnection: number
  private readonly streamChannelsPerConnection: number
  /** ClientOptions.pipelineAtLimit: at the limit, a request goes behind others on the least-loaded channel. */
  private readonly pipelineAtLimit: boolean
  /** A congested connection can take writes again: requests waiting for a channel may go. */
  private readonly onWritable: () => void

  constructor(maxConnections: number, maxChannelsPerConnection: number, streamChannelsPerConnection: number, pipelineAtLimit: boolean, onWritable: () => void) {
    this.maxConnections = maxConnections
    this.maxChannelsPerConnection = maxChannelsPerConnection
    this.streamChannelsPerConnection = streamChannelsPerConnection
    this.pipelineAtLimit = pipelineAtLimit
    this.onWritable = onWritable
  }

  /**
   * A free channel on a connection that can take a request; undefined when every channel is busy.
   * A tunnel (RequestOptions.tunnel) only where the connection has a stream place left.
   * Never one with a request its caller still waits for: the server answers a channel's requests
   * in order, so a request written behind a hanging one would hang with it (the client opens
   * another channel, or waits for the first to free). Nor one a stream holds (its request body
   * going out, or its answer coming in and perhaps not read yet). Failing an idle one, a mesh
   * channel whose calls were all given up (cancelled or out of time): the peer was told to stop
   * them and answers each at once, so a request behind them waits a round trip, not for a
   * handler; and their late answers free the channel without a word to the client.
   */
  pick(tunnel = false): readonly [Pooled, ClientChannel | OwnChannel] | undefined {
    for (let p = 0; p < this.connections.length; p++) {
      const pooled = this.connections[p]!
      if (!this.usable(pooled) || (tunnel && !this.hasStreamPlace(pooled))) continue
      const channels = pooled.channels
      for (let c = 0; c < channels.length; c++) {
        const channel = channels[c]!
        if (!channel.streaming && channel.outstanding === 0) return [pooled, channel]
      }
    }
    // At the limit, pipelining goes behind the least-loaded channel (calls given up there are
    // answered at once). Else, only when no channel is free: a mesh channel whose calls were all
    // given up (walking each busy channel's calls on every pick would cost a scan per request).
    if (this.pipelineAtLimit && this.atCapacity()) return this.leastLoaded(tunnel)
    for (let p = 0; p < this.connections.length; p++) {
      const pooled = this.connections[p]!
      if (pooled.link.mode !== "mesh" || pooled.draining || pooled.link.session.connection.closed || pooled.link.session.connection.writer.congested) continue
      if (tunnel && !this.hasStreamPlace(pooled)) continue
      for (const channel of pooled.channels) if (!channel.streaming && allGivenUp(channel as OwnChannel)) return [pooled, channel]
    }
    return undefined
  }

  /** Whether a request may go on this connection now; a congested one is watched until it drains. */
  private usable(pooled: Pooled): boolean {
    const connection = pooled.link.session.connection
    // Closed, it is still pooled while its calls fail (each failure drains the queue): a waiting request stays for the next connection.
    if (pooled.draining || connection.closed) return false
    if (connection.writer.congested) {
      this.waitWritable(pooled)
      return false
    }
    return true
  }

  /**
   * The channel with the fewest requests outstanding (pipelineAtLimit), none a stream holds nor a
   * tunnel whose answer has not begun: a request behind it would wait for the stream's end.
   */
  private leastLoaded(tunnel: boolean): readonly [Pooled, ClientChannel | OwnChannel] | undefined {
    let best: readonly [Pooled, ClientChannel | OwnChannel] | undefined
    for (const pooled of this.connections) {
      const connection = pooled.link.session.connection
      if (pooled.draining || connection.closed || connection.writer.congested || (tunnel && !this.hasStreamPlace(pooled))) continue
      for (const channel of pooled.channels) {
        if (!heldByStream(channel) && (best === undefined || channel.outstanding < best[1].outstanding)) best = [pooled, channel]
      }
    }
    return best
  }

  private waitWritable(pooled: Pooled): void {
    if (pooled.waitingWritable) return
    pooled.waitingWritable = true
    pooled.link.session.connection.writer.whenWritable(() => {
      pooled.waitingWritable = false
      this.onWritable()
    })
  }

  /**
   * Channels this side may open on a connection: its own setting, and in mesh mode no more than the
   * server takes (§10), nor than it took when it last refused one (§11 `refuse`); on a plain
   * connection no more than it gave before it refused one.
   */
  channelLimit(pooled: Pooled): number {
    const link = pooled.link
    return link.mode === "mesh" ? Math.min(this.maxChannelsPerConnection, link.session.agreed.maxChannels, link.session.channelCap) : Math.min(this.maxChannelsPerConnection, pooled.plainCap)
  }

  /** The server refused `channel` (§11 `refuse`): no new request goes on it; its session closes it once its calls are answered. */
  dropRefused(channel: OwnChannel): void {
    for (const pooled of this.connections) {
      const index = pooled.channels.indexOf(channel)
      if (index !== -1) pooled.channels.splice(index, 1)
    }
  }

  /**
   * Whether a connection may open another channel. A channel a stream holds is out of use for its
   * whole life, and `pick` skips it: past its own limit, a mesh connection opens one more channel
   * for each such channel, up to its stream places, so streams do not leave other requests without
   * a channel (the sidecar: 40 WebSockets took all 2 x 16, and every later request waited for its
   * deadline). For a waiting `tunnel`, only a connection with a stream place left: a channel opened
   * for it elsewhere could not take it (`pick`), and one opened past the limit is a stream's.
   */
  hasRoom(pooled: Pooled, tunnel = false): boolean {
    if (pooled.draining || (tunnel && !this.hasStreamPlace(pooled))) return false
    const open = pooled.channels.length + pooled.opening
    const limit = this.channelLimit(pooled)
    if (open < limit) return true
    const past = this.pastLimit(pooled)
    if (past === 0 || open >= limit + past) return false
    return tunnel || open - this.streaming(pooled) < limit
  }

  /**
   * Channels streams may hold on a connection beside the requests' `channelLimit`. The budget: a
   * connection opens at most min(limit + streamChannelsPerConnection, maxChannels / 2) channels,
   * half what the server takes (each open stream is a request in the server's per-connection
   * budget, by default as large as maxChannels, and a connection past it is no longer read); the
   * requests keep `limit` of them whatever the streams, streams get the rest. The sidecar's (64
   * request channels, 512 for streams, a far side taking 1,024): min(576, 512) - 64 = 448 a
   * connection, 896 to an endpoint on its 2 connections; before, streams could take all 2 x 512
   * and requests waited for their deadline. A far side taking fewer than twice the requests'
   * channels (maxChannels / 2 <= limit: a peer run with a low --max-channels-per-connection) leaves
   * none past them: there streams get half the requests' channels instead, min(limit / 2,
   * streamChannelsPerConnection), and the requests keep the rest (else every tunnel to it would be
   * refused). None without streamChannelsPerConnection (streams take the requests' channels like
   * any request), on a plain connection, or on one whose server refused a channel (it has none to
   * spare).
   */
  streamPlaces(pooled: Pooled): number {
    if (!this.takesStreams(pooled.link)) return 0
    const past = this.pastLimit(pooled)
    return past > 0 ? past : Math.min(this.streamChannelsPerConnection, Math.floor(this.channelLimit(pooled) / 2))
  }

  /** Channels a connection may open past its `channelLimit` for streams: min(limit + streamChannelsPerConnection, maxChannels / 2) - limit, at least 0 (streamPlaces). */
  private pastLimit(pooled: Pooled): number {
    const link = pooled.link
    if (!this.takesStreams(link)) return 0
    const limit = this.channelLimit(pooled)
    return Math.max(0, Math.min(limit + this.streamChannelsPerConnection, Math.floor(link.session.agreed.maxChannels / 2)) - limit)
  }

  /** Streams have places of their own on this link: streamChannelsPerConnection, mesh mode, no channel refused. */
  private takesStreams(link: Link): link is Extract<Link, { readonly mode: "mesh" }> {
    return this.streamChannelsPerConnection !== 0 && link.mode === "mesh" && link.session.channelCap === Infinity
  }

  /**
   * Whether one more tunnel may wait for a stream place, beside `waiting` tunnels already waiting:
   * the places free on live connections, and on those not dialled yet (as many as the most a live
   * one has; with none up, not known: yes), are more. Always without streamChannelsPerConnection.
   */
  tunnelRoom(waiting: number): boolean {
    if (this.streamChannelsPerConnection === 0) return true
    let live = 0
    let most = 0
    let free = 0
    for (const pooled of this.connections) {
      if (pooled.draining || pooled.link.session.connection.closed) continue
      live++
      const places = this.streamPlaces(pooled)
      most = Math.max(most, places)
      free += Math.max(0, places - this.streaming(pooled))
    }
    if (live === 0) return true
    return free + most * Math.max(0, this.maxConnections - live) > waiting
  }

  /** A tunnel may go on this connection: fewer streams hold its channels than it has stream places (any, without streamChannelsPerConnection). */
  private hasStreamPlace(pooled: Pooled): boolean {
    return this.streamChannelsPerConnection === 0 || this.streaming(pooled) < this.streamPlaces(pooled)
  }

  private streaming(pooled: Pooled): number {
    let streaming = 0
    for (const channel of pooled.channels) if (heldByStream(channel)) streaming++
    return streaming
  }

  /** Some mesh connection holds channels past its limit (opened for streams, `hasRoom`) that `trim` may close. */
  hasLeftOver(): boolean {
    for (const pooled of this.connections) {
      if (pooled.link.mode === "mesh" && pooled.link.session.closesChannels && pooled.channels.length > this.channelLimit(pooled)) return true
    }
    return false
  }

  /**
   * Closes idle channels that a mesh connection opened past its limit for streams and that fewer
   * streams hold now: after a burst of WebSockets they would otherwise stay open for the
   * connection's life, here and at the server (whose channel budget they hold). What `hasRoom`
   * allows stays: one channel past the limit per channel a stream holds. True while some left over
   * are busy (a request on them): the client looks again later; streams still open wait for their
   * end. Needs a server that closes channels (§11 `close`); with one that does not, they stay.
   */
  trim(): boolean {
    let leftOver = false
    for (const pooled of this.connections) {
      const link = pooled.link
      if (link.mode !== "mesh" || !link.session.closesChannels) continue
      const channels = pooled.channels as Array<OwnChannel>
      const limit = this.channelLimit(pooled)
      if (channels.length <= limit) continue
      let over = channels.length - this.streaming(pooled) - limit
      for (let i = channels.length - 1; i >= 0 && over > 0; i--) {
        const channel = channels[i]!
        if (channel.outstanding === 0 && !channel.streaming && link.session.closeChannel(channel)) {
          channels.splice(i, 1)
          over--
        }
      }
      if (over > 0) leftOver = true
    }
    return leftOver
  }

  /**
   * Every connection at its own channel limit. Streams are not counted here: a request that finds
   * every channel streaming waits in the queue, and `grow` (which does look) opens one for it.
   */
  atCapacity(): boolean {
    if (this.connections.length < this.maxConnections) return false
    for (const pooled of this.connections) {
      if (!pooled.draining && pooled.channels.length + pooled.opening < this.channelLimit(pooled)) return false
    }
    return true
  }
}
