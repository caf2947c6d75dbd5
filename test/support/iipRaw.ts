// Test helpers for the IIP tests in test/iip: an independent packet builder and incremental
// packet parser (written from the spec, not from src/, so the tests check src against the wire
// format rather than against itself), a raw TCP client that speaks bytes, bounded waits, a
// cleanup stack, and a way to force a garbage collection before reading memory figures.
import * as net from "node:net"
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"

/** Builds one packet: status, path, NUL, u32 BE channel id, u32 BE length, data. */
export const frame = (
  status: number,
  path: string,
  channelId: number,
  data: Uint8Array | string,
  declaredLength?: number
): Buffer => {
  const body = typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  const pathBytes = Buffer.from(path, "utf8")
  const header = Buffer.alloc(1 + pathBytes.length + 9)
  header[0] = status
  pathBytes.copy(header, 1)
  header[1 + pathBytes.length] = 0
  header.writeUInt32BE(channelId >>> 0, 2 + pathBytes.length)
  header.writeUInt32BE((declaredLength ?? body.length) >>> 0, 6 + pathBytes.length)
  return body.length === 0 ? header : Buffer.concat([header, body])
}

export const hex = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex")

export interface RawPacket {
  readonly status: number
  readonly path: string
  readonly channelId: number
  readonly data: Buffer
  /** Everything of the packet before its data, exactly as received. */
  readonly header: Buffer
}

/** The packet's bytes exactly as they crossed the socket, in hex. */
export const packetHex = (packet: RawPacket): string => hex(Buffer.concat([packet.header, packet.data]))

/** Incremental parser of a packet stream; accepts any split of the bytes. */
export class RawParser {
  private head: Buffer = Buffer.alloc(0)
  private inBody = false
  private current: { status: number; path: string; channelId: number; header: Buffer; length: number } | undefined
  private parts: Array<Buffer> = []
  private got = 0

  push(chunk: Buffer): Array<RawPacket> {
    const out: Array<RawPacket> = []
    let offset = 0
    while (offset < chunk.length) {
      if (!this.inBody) {
        const rest = chunk.subarray(offset)
        const combined = this.head.length > 0 ? Buffer.concat([this.head, rest]) : rest
        const nul = combined.indexOf(0, 1)
        if (nul === -1 || nul + 9 > combined.length) {
          this.head = Buffer.from(combined)
          return out
        }
        const headerLength = nul + 9
        const header = Buffer.from(combined.subarray(0, headerLength))
        offset += headerLength - this.head.length
        this.head = Buffer.alloc(0)
        this.current = {
          status: header[0]!,
          path: header.toString("utf8", 1, nul),
          channelId: header.readUInt32BE(nul + 1),
          header,
          length: header.readUInt32BE(nul + 5)
        }
        this.inBody = true
        this.parts = []
        this.got = 0
      }
      const current = this.current!
      const take = Math.min(current.length - this.got, chunk.length - offset)
      if (take > 0) this.parts.push(chunk.subarray(offset, offset + take))
      this.got += take
      offset += take
      if (this.got === current.length) {
        const data = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.got)
        out.push({ status: current.status, path: current.path, channelId: current.channelId, data, header: current.header })
        this.inBody = false
        this.current = undefined
        this.parts = []
      }
    }
    return out
  }
}

/** Rejects with `what` unless `promise` settles within `ms`. */
export const withTimeout = <A>(promise: Promise<A>, ms: number, what: string): Promise<A> => {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/**
 * Polls `condition` every couple of milliseconds until it holds, failing after `timeoutMs`. Only for
 * states that announce themselves with no event (pool sizes, pause flags).
 */
/** Resolves once `condition` holds, checked after each turn of the event loop (no timer: a test may fake them); fails after `withinMs`. */
export const untilTurn = (condition: () => boolean, what: string, withinMs = 5000): Promise<void> =>
  new Promise((resolve, reject) => {
    const deadline = performance.now() + withinMs
    const check = () => (condition() ? resolve() : performance.now() > deadline ? reject(new Error(`timed out waiting for ${what}`)) : setImmediate(check))
    check()
  })

export const waitFor = async (condition: () => boolean, timeoutMs: number, what: string): Promise<void> => {
  const deadline = performance.now() + timeoutMs
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise<void>((resolve) => setTimeout(resolve, 2))
  }
}

/**
 * Reads a state another process holds (an admin's view) until `done` holds or `limitMs` passed,
 * one read at a time; returns the last value read and how long it took, for the test to assert on.
 */
export const readUntil = async <A>(read: () => Promise<A>, done: (value: A) => boolean, limitMs: number): Promise<{ value: A; elapsedMs: number }> => {
  const start = performance.now()
  let value = await read()
  while (!done(value) && performance.now() - start < limitMs) {
    await new Promise<void>((resolve) => setTimeout(resolve, 20))
    value = await read()
  }
  return { value, elapsedMs: performance.now() - start }
}

/** A promise with its resolve function outside. */
export const deferred = <A = void>(): { promise: Promise<A>; resolve: (value: A) => void } => {
  let resolve!: (value: A) => void
  const promise = new Promise<A>((r) => {
    resolve = r
  })
  return { promise, resolve }
}

/** Cleanup actions run in reverse order; every action runs even when an earlier one throws. */
export class Cleanup {
  private readonly actions: Array<() => unknown> = []

  add(action: () => unknown): void {
    this.actions.push(action)
  }

  async run(): Promise<void> {
    const errors: Array<unknown> = []
    for (const action of this.actions.splice(0).reverse()) {
      try {
        await action()
      } catch (error) {
        errors.push(error)
      }
    }
    if (errors.length > 0) throw errors[0]
  }
}

/** A raw TCP connection that writes bytes and parses what comes back into packets. */
export class RawClient {
  readonly socket: net.Socket
  readonly packets: Array<RawPacket> = []
  /** Every byte received, in order (for "nothing was answered" checks). */
  bytesIn = 0
  closedAt: number | undefined
  private readonly parser = new RawParser()
  private readonly waiters: Array<() => void> = []
  readonly closed: Promise<void>

  private constructor(socket: net.Socket) {
    this.socket = socket
    socket.on("error", () => {}) // resets after a server-side close are expected
    socket.on("data", (chunk: Buffer) => {
      this.bytesIn += chunk.length
      for (const packet of this.parser.push(chunk)) this.packets.push(packet)
      this.wake()
    })
    this.closed = new Promise((resolve) =>
      socket.once("close", () => {
        this.closedAt = performance.now()
        this.wake()
        resolve()
      })
    )
  }

  /** `localAddress`: another loopback address (127.0.0.2, ...) to play another source. */
  static connect(port: number, cleanup: Cleanup, localAddress?: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: "127.0.0.1", port, ...(localAddress === undefined ? {} : { localAddress }) })
      cleanup.add(() => socket.destroy())
      socket.once("error", reject)
      socket.once("connect", () => {
        socket.off("error", reject)
        socket.setNoDelay(true)
        resolve(new RawClient(socket))
      })
    })
  }

  get isClosed(): boolean {
    return this.closedAt !== undefined
  }

  write(...chunks: Array<Uint8Array>): void {
    this.socket.write(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks))
  }

  /** The next packet received (in order), waiting at most `timeoutMs`. */
  async next(timeoutMs = 2000): Promise<RawPacket> {
    const deadline = performance.now() + timeoutMs
    while (this.packets.length === 0) {
      if (this.isClosed) throw new Error("connection closed before the next packet arrived")
      const left = deadline - performance.now()
      if (left <= 0) throw new Error(`no packet within ${timeoutMs} ms`)
      await withTimeout(new Promise<void>((resolve) => this.waiters.push(resolve)), left, "the next packet").catch(() => {})
    }
    return this.packets.shift()!
  }

  /** Waits for the socket's 'close' event. */
  waitClose(timeoutMs = 2000): Promise<void> {
    return withTimeout(this.closed, timeoutMs, "the server to close the connection")
  }

  /** Sends `/sys/new_channel` on channel 0 and returns the packet answering it. */
  async newChannel(timeoutMs = 2000): Promise<RawPacket> {
    this.write(frame(1, "/sys/new_channel", 0, "{}"))
    return this.next(timeoutMs)
  }

  destroy(): void {
    this.socket.destroy()
  }

  private wake(): void {
    for (const waiter of this.waiters.splice(0)) waiter()
  }
}

let gcFunction: (() => void) | undefined

/**
 * Runs a full garbage collection, so memory figures measure live data rather than garbage. Twice:
 * V8 frees the collected ArrayBuffers' memory on a background thread after a collection, and the
 * next collection first waits for that to finish; after one, arrayBuffers still counted the garbage
 * (all of it) in over half the tries, and more often on a loaded machine.
 */
export const collectGarbage = (): void => {
  if (gcFunction === undefined) {
    setFlagsFromString("--expose-gc")
    gcFunction = runInNewContext("gc") as () => void
  }
  gcFunction()
  gcFunction()
}

/** process.memoryUsage().arrayBuffers after a full collection. */
export const liveArrayBuffers = (): number => {
  collectGarbage()
  return process.memoryUsage().arrayBuffers
}

/** A plain TCP server on 127.0.0.1, port 0, that plays an IIP server by hand; closed by `cleanup`. */
export const startRawServer = async (
  cleanup: Cleanup,
  onSocket: (socket: net.Socket) => void
): Promise<{ readonly port: number; readonly sockets: Set<net.Socket> }> => {
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on("error", () => {}) // the client may reset the connection
    socket.once("close", () => sockets.delete(socket))
    onSocket(socket)
  })
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject)
      resolve()
    })
  })
  cleanup.add(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      })
  )
  return { port: (server.address() as net.AddressInfo).port, sockets }
}
