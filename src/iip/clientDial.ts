// How an IIP client (client.ts) gets a connection: one attempt over TCP, TLS over TCP or WebSocket,
// then the hello (PROTOCOL.md §10) that makes it a mesh connection or leaves it plain; and the
// delay before the next attempt when one fails. The client's redial loop runs the attempts and
// adopts the connection into its pool (connectionPool.ts).
import * as net from "node:net"
import { ClientSession } from "../mux/clientSession.ts"
import { type ByteStream, type ConnectionLimits, Connection } from "../mux/connection.ts"
import { ConnectFailed } from "../mux/errors.ts"
import { LateTimer } from "../mux/lateTimer.ts"
import { MeshSession, type OwnChannel } from "../mux/meshSession.ts"
import type { Dispatch } from "../mux/request.ts"
import { dialWebSocket } from "../mux/webSocketStream.ts"
import { compressionFor, pickCodec } from "../protocol/compression.ts"
import { agree, decodeHello, encodeHello, grantedCredit, type Hello, MeshPath } from "../protocol/mesh.ts"
import type { ClientOptions, ReconnectOptions } from "./clientOptions.ts"
import type { Link } from "./connectionPool.ts"
import { type DialRefusal, dialRefusal, guardedLookup, urlHost } from "./dialGuard.ts"
import type { Log } from "./log.ts"
import { decodeTlsRefusal, dialTls, type TlsRefusal } from "./tls.ts"

/** What a refused dial's ConnectFailed says. */
const REFUSED: Record<DialRefusal, string> = {
  "not-peer": "its address is on this host (or the metadata service), refused for an endpoint from another host",
  "own-listener": "this process itself listens there, refused: the dial would call itself"
}

/** The redial delay after `failures` failed attempts. */
export const backoffDelay = (failures: number, options: ReconnectOptions, random: number): number => {
  const ceiling = Math.min(options.maxMs, options.baseMs * 2 ** Math.min(failures, 30))
  return Math.round(ceiling * (0.5 + random / 2))
}

/** What every attempt of one client uses. */
export interface DialSettings {
  readonly address: string
  readonly options: ClientOptions
  readonly connectTimeoutMs: number
  readonly limits: ConnectionLimits
  readonly log: Log
  readonly hello: Hello
  /** Serves the calls the server makes on a mesh connection (calls in both directions). */
  readonly dispatch: Dispatch
  /** A mesh connection's channel is free again (its request or stream ended). */
  readonly onChannelFree: () => void
  /** A plain connection's channel is free again: its last outstanding request was answered (its caller not yet told). */
  readonly onPlainChannelFree: () => void
  /** The server refused one of a mesh connection's channels (§11 `refuse`). */
  readonly onChannelRefused: (channel: OwnChannel) => void
  /** The client was closed meanwhile: the connection is not taken. */
  readonly closed: () => boolean
}

/** One connection attempt, TLS handshake and hello included; `done` gets the connection, or why there is none. */
export const dialOnce = (settings: DialSettings, done: (error: ConnectFailed | undefined, link: Link | undefined) => void): void => {
  const { address, options, connectTimeoutMs, hello } = settings
  let finished = false
  let abandon = () => {}
  /** Over TLS: the refusal behind a connection that failed after its handshake (TLS 1.3: the server's verdict on our certificate comes then). */
  let refusedAfterHandshake: () => TlsRefusal | undefined = () => undefined
  /** The dial guard refused the address (peersOnly, notSelf), and why: whatever error the transport reports for it. */
  let refused: DialRefusal | undefined
  const fail = (reason: string, refusal?: TlsRefusal) => {
    if (finished) return
    finished = true
    timer.cancel()
    abandon()
    done(
      new ConnectFailed({
        message: `cannot connect to ${address}: ${refused === undefined ? (refusal?.message ?? reason) : REFUSED[refused]}`,
        address,
        refused: reason === "ECONNREFUSED",
        ...(refusal === undefined ? {} : { tls: refusal.reason }),
        ...(refused === undefined ? {} : refused === "own-listener" ? { notPeer: true, ownListener: true } : { notPeer: true })
      }),
      undefined
    )
  }
  // A late timer is this process's stall: a handshake completed meanwhile is not yet seen, and a
  // failed dial holds a healthy endpoint out (connect-own-stall.test.ts). It waits its lateness more first.
  const timer = new LateTimer(connectTimeoutMs, () => fail(`no connection within ${connectTimeoutMs} ms`))
  // The stream is open: say hello, and adopt the connection in the mode the server answers with.
  const opened = (socket: ByteStream) => {
    if (settings.closed()) return fail("client closed")
    const connection = new Connection(socket, "client", settings.limits, settings.log)
    const plain = new ClientSession(connection, settings.onPlainChannelFree)
    const adopt = (link: Link) => {
      // Closed while the hello was on its way: the client's connections are closed already, so
      // this one is not taken (it would stay open, in the pool of a client nobody closes again).
      if (settings.closed()) return fail("client closed")
      timer.cancel()
      finished = true
      done(undefined, link)
    }
    if (options.mesh === false) return adopt({ mode: "plain", session: plain })
    plain.request(plain.system, MeshPath.hello, encodeHello(hello, false), connectTimeoutMs, (error, data) => {
      if (error !== undefined) return fail(`no answer to hello: ${error.message}`, refusedAfterHandshake())
      const refusal = decodeTlsRefusal(data!)
      if (refusal !== undefined) {
        options.tls?.onRefused?.(refusal, undefined)
        return fail(refusal.message, refusal)
      }
      const theirs = decodeHello(data!)
      if (theirs === undefined) return adopt({ mode: "plain", session: plain })
      // The acceptor names the codec it picked from our offer (PROTOCOL.md §12.1).
      const codec = pickCodec(theirs.compression ?? [], hello.compression ?? [])
      const agreed = agree(hello, theirs)
      const mesh = new MeshSession(connection, {
        isDialer: true,
        agreed,
        receiveWindow: hello.streamWindow,
        grantCredit: grantedCredit(hello, agreed),
        dispatch: settings.dispatch,
        statedLimits: hello,
        maxMessageBytes: settings.limits.maxMessageBytes,
        compression: compressionFor(codec, options.compression),
        log: settings.log,
        onChannelFree: settings.onChannelFree,
        onChannelRefused: settings.onChannelRefused
      })
      adopt({ mode: "mesh", session: mesh })
    })
  }
  // An IP literal is connected to without a lookup: checked here, answered as a failed connect is (later, never within this call).
  // Over WebSocket, as the URL parser reads the host too: it turns 127.1 and the like into a literal.
  const guarded = options.peersOnly === true || options.notSelf !== undefined
  if (guarded) {
    const parsed = options.transport === "websocket" ? urlHost(address) : undefined
    refused = dialRefusal(options, options.host, options.port) ?? (parsed === undefined ? undefined : dialRefusal(options, parsed, options.port))
    if (refused !== undefined) {
      queueMicrotask(() => fail("refused"))
      return
    }
  }
  const lookup = guarded ? { lookup: guardedLookup((resolved) => dialRefusal(options, resolved, options.port), (why) => (refused = why)) } : undefined
  if (options.transport === "websocket") {
    abandon = dialWebSocket(address, (error, stream) => (error === undefined ? opened(stream!) : fail(error)), lookup)
    return
  }
  if (options.tls !== undefined) {
    const dial = dialTls(options.host, options.port, options.tls, opened, fail, lookup)
    abandon = dial.abandon
    refusedAfterHandshake = dial.refusedAfterHandshake
    return
  }
  const socket = net.connect({ host: options.host, port: options.port, noDelay: true, ...lookup })
  abandon = () => socket.destroy()
  socket.once("error", (error: NodeJS.ErrnoException) => fail(error.code ?? error.message))
  socket.once("connect", () => {
    socket.removeAllListeners("error")
    opened(socket)
  })
}
