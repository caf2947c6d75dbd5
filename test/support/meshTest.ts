// Helpers for the mesh-mode tests (test/iip/mesh*.test.ts): servers and clients on 127.0.0.1
// port 0 registered with a Cleanup, a log sink that keeps events for assertions, promise
// settling without unhandled rejections, percentiles, and hand-played mesh acceptors that answer
// the hello and then do only what the test tells them to (one of them never reads again, one goes
// away at once on every connection).
import type * as net from "node:net"
import { IipClient } from "../../src/iip/client.ts"
import type { ClientOptions } from "../../src/iip/clientOptions.ts"
import { IipServer, type ServerOptions } from "../../src/iip/server.ts"
import { AcceptorControlChannel, encodeEnvelope, encodeGoAway, encodeHello, EnvelopeFlag, EnvelopeKind, type Hello, MeshDefaults, MeshFeatures, MeshPath, MeshVersion } from "../../src/protocol/mesh.ts"
import { type Cleanup, frame, type RawPacket, RawParser, startRawServer, withTimeout } from "./iipRaw.ts"

export interface LogEvent {
  readonly event: string
  readonly fields: Record<string, unknown>
}

/** A log sink that keeps every event. */
export const collectLog = (): { readonly events: Array<LogEvent>; readonly log: (event: string, fields: Record<string, unknown>) => void } => {
  const events: Array<LogEvent> = []
  return { events, log: (event, fields) => void events.push({ event, fields }) }
}

/** An IipServer listening on 127.0.0.1:0, closed by `cleanup`. */
export const startServer = async (cleanup: Cleanup, options: ServerOptions = {}): Promise<IipServer> => {
  const server = new IipServer({ port: 0, log: () => {}, ...options })
  await server.listen()
  cleanup.add(() => server.close())
  return server
}

/** An IipClient for `port`, closed by `cleanup`. */
export const startClient = (cleanup: Cleanup, port: number, options: Partial<ClientOptions> = {}): IipClient => {
  const client = new IipClient({ host: "127.0.0.1", port, log: () => {}, ...options })
  cleanup.add(() => client.close())
  return client
}

export type Settled<A> = { readonly ok: true; readonly value: A } | { readonly ok: false; readonly error: unknown }

/** The outcome of a promise as a value: never rejects, so a pending call cannot become an unhandled rejection. */
export const settle = <A>(promise: Promise<A>): Promise<Settled<A>> =>
  promise.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error })
  )

/** The error a promise rejects with; throws if it resolves. */
export const rejection = async (promise: Promise<unknown>, what = "the call"): Promise<unknown> => {
  const result = await settle(promise)
  if (result.ok) throw new Error(`expected ${what} to fail, it resolved with ${String(result.value)}`)
  return result.error
}

/** The error a streamed answer's reading ends in, read to its end within `withinMs`; throws if it ends well. */
export const streamEndError = async (stream: AsyncIterable<Uint8Array>, withinMs: number): Promise<unknown> => {
  const read = async (): Promise<number> => {
    let bytes = 0
    for await (const chunk of stream) bytes += chunk.length
    return bytes
  }
  return rejection(withTimeout(read(), withinMs, "the streamed answer's end"), "the streamed answer")
}

/** The q-quantile (0..1) of `values` (nearest rank). */
export const percentile = (values: ReadonlyArray<number>, q: number): number => {
  const sorted = [...values].sort((a, b) => a - b)
  if (sorted.length === 0) return Number.NaN
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!
}

/** This library's hello with some fields replaced. */
export const helloOf = (overrides: Partial<Hello> = {}): Hello => ({
  version: MeshVersion,
  node: "raw",
  features: [...MeshFeatures],
  maxMetaBytes: MeshDefaults.maxMetaBytes,
  streamWindow: MeshDefaults.streamWindow,
  maxChannels: MeshDefaults.maxChannels,
  ...overrides
})

/**
 * A hand-played mesh acceptor: answers `/sys/hello` on channel 0 with `hello` (status 5), keeps
 * the dialer's hellos, and records every other packet without answering it.
 */
export const startRawMeshPeer = async (cleanup: Cleanup, hello: Hello = helloOf()) => {
  const packets: Array<RawPacket> = []
  const hellos: Array<Buffer> = []
  const waiters: Array<() => void> = []
  const sockets: Array<net.Socket> = []
  const { port } = await startRawServer(cleanup, (socket) => {
    sockets.push(socket)
    const parser = new RawParser()
    socket.on("data", (chunk: Buffer) => {
      for (const packet of parser.push(chunk)) {
        if (packet.path === MeshPath.hello && packet.channelId === 0) {
          hellos.push(packet.data)
          socket.write(frame(5, MeshPath.hello, 0, encodeHello(hello, true)))
        } else packets.push(packet)
      }
      for (const waiter of waiters.splice(0)) waiter()
    })
  })
  /** Waits (bounded) for the first recorded packet that matches and removes it. */
  const take = async (match: (packet: RawPacket) => boolean, timeoutMs: number, what: string): Promise<RawPacket> => {
    const found = async (): Promise<RawPacket> => {
      for (;;) {
        const index = packets.findIndex(match)
        if (index !== -1) return packets.splice(index, 1)[0]!
        await new Promise<void>((resolve) => waiters.push(resolve))
      }
    }
    return withTimeout(found(), timeoutMs, what)
  }
  return { port, packets, hellos, sockets, take }
}

/**
 * A hand-played mesh acceptor that reads nothing once in mesh mode: it answers the hello, pauses
 * its socket and hands it to `onMesh`, which writes what the test plays.
 */
export const startDeafAcceptor = async (cleanup: Cleanup, onMesh: (socket: net.Socket) => void): Promise<number> => {
  const { port } = await startRawServer(cleanup, (socket) => {
    const parser = new RawParser()
    socket.on("data", (chunk: Buffer) => {
      for (const packet of parser.push(chunk)) {
        if (packet.path !== MeshPath.hello || packet.channelId !== 0) continue
        socket.write(frame(5, MeshPath.hello, 0, encodeHello(helloOf(), true)))
        socket.pause()
        onMesh(socket)
      }
    })
  })
  return port
}

/**
 * A hand-played mesh acceptor that answers each connection's hello, then goes away (`closing` or
 * not) in the same write, with its FIN unless `fin` is false; the times of its accepts, its sockets.
 */
export const goAwayAtOnce = async (cleanup: Cleanup, closing: boolean, fin = true) => {
  const accepts: Array<number> = []
  const { port, sockets } = await startRawServer(cleanup, (socket) => {
    accepts.push(performance.now())
    const parser = new RawParser()
    socket.on("data", (chunk: Buffer) => {
      for (const packet of parser.push(chunk)) {
        if (packet.path !== MeshPath.hello || packet.channelId !== 0) continue
        const goAway = encodeEnvelope(EnvelopeKind.request, EnvelopeFlag.oneway, 1, new Map(), encodeGoAway("stopping", closing), 8192)
        const answer = Buffer.concat([frame(5, MeshPath.hello, 0, encodeHello(helloOf(), true)), frame(1, MeshPath.goAway, AcceptorControlChannel, goAway)])
        if (fin) socket.end(answer)
        else socket.write(answer)
      }
    })
  })
  return { port, accepts, sockets }
}
