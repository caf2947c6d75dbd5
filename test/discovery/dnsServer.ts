// A tiny authoritative DNS server on 127.0.0.1 over UDP for the DNS SRV tests: it answers SRV and A
// queries from a zone the test sets (and changes) at will. A name in the zone with no records of the
// asked type gets an empty NOERROR answer (Node: ENODATA); a name not in the zone gets NXDOMAIN
// (ENOTFOUND); a name in `servfail` gets SERVFAIL, one in `silent` no answer at all; `rewrite` can garble or drop answers. With
// `tcp`, it also answers over TCP on the same port and truncates UDP answers past 1,232 bytes (the
// resolver then asks again over TCP), so an answer can hold up to 64 KiB of records. Every query is
// recorded in `queries`. Written here because dns2 compresses SRV targets, which Node's resolver rejects.
import { createSocket, type Socket } from "node:dgram"
import { once } from "node:events"
import { createServer, type Server, type Socket as TcpSocket } from "node:net"

export interface SrvRecord {
  readonly priority?: number
  readonly weight: number
  readonly port: number
  readonly target: string
}

export interface Zone {
  readonly srv?: Readonly<Record<string, ReadonlyArray<SrvRecord>>>
  readonly a?: Readonly<Record<string, ReadonlyArray<string>>>
  /** TTL of every record, in seconds (default 1). */
  readonly ttl?: number
  /** Names answered with SERVFAIL (a broken zone, or a server that gave up). */
  readonly servfail?: ReadonlyArray<string>
  /** Names never answered (a server that drops queries it cannot serve): the resolver times out. */
  readonly silent?: ReadonlyArray<string>
}

/** The largest UDP answer sent when the server also answers over TCP (the resolver's EDNS size). */
const MaxUdpAnswer = 1232

const TYPE_A = 1
const TYPE_SRV = 33

const encodeName = (name: string): Buffer =>
  Buffer.concat([
    ...name
      .split(".")
      .filter((label) => label !== "")
      .map((label) => Buffer.concat([Buffer.from([label.length]), Buffer.from(label, "ascii")])),
    Buffer.from([0])
  ])

const u16 = (n: number): Buffer => {
  const b = Buffer.alloc(2)
  b.writeUInt16BE(n)
  return b
}

/** One answer record for the question's name (a pointer to offset 12), uncompressed rdata. */
const record = (type: number, ttl: number, rdata: Buffer): Buffer => {
  const head = Buffer.alloc(12)
  head.writeUInt16BE(0xc00c, 0)
  head.writeUInt16BE(type, 2)
  head.writeUInt16BE(1, 4)
  head.writeUInt32BE(ttl, 6)
  head.writeUInt16BE(rdata.length, 10)
  return Buffer.concat([head, rdata])
}

/** The question's name (lower case) and type, and the offset just past its name. */
const questionOf = (query: Buffer): { readonly name: string; readonly type: number; readonly offset: number } => {
  let offset = 12
  const labels: Array<string> = []
  while (query[offset]! !== 0) {
    const length = query[offset]!
    labels.push(query.toString("ascii", offset + 1, offset + 1 + length))
    offset += length + 1
  }
  offset += 1
  return { name: labels.join(".").toLowerCase(), type: query.readUInt16BE(offset), offset }
}

const answer = (query: Buffer, zone: Zone): Buffer => {
  const { name, type, offset } = questionOf(query)
  const ttl = zone.ttl ?? 1
  const srv = zone.srv?.[name]
  const a = zone.a?.[name]
  const answers: Array<Buffer> = []
  if (type === TYPE_SRV) {
    for (const r of srv ?? []) answers.push(record(TYPE_SRV, ttl, Buffer.concat([u16(r.priority ?? 0), u16(r.weight), u16(r.port), encodeName(r.target)])))
  } else if (type === TYPE_A) {
    for (const address of a ?? []) answers.push(record(TYPE_A, ttl, Buffer.from(address.split(".").map(Number))))
  }
  const rcode = zone.servfail?.includes(name) === true ? 2 : srv === undefined && a === undefined ? 3 : 0
  if (rcode === 2) answers.length = 0
  const header = Buffer.alloc(12)
  header.writeUInt16BE(query.readUInt16BE(0), 0)
  header.writeUInt16BE(0x8000 | 0x0400 | (query.readUInt16BE(2) & 0x0100) | 0x0080 | rcode, 2)
  header.writeUInt16BE(1, 4)
  header.writeUInt16BE(answers.length, 6)
  return Buffer.concat([header, query.subarray(12, offset + 4), ...answers])
}

/** An answer too long for UDP: the header with TC set and the question, no records. */
const truncated = (bytes: Buffer, query: Buffer): Buffer => {
  const { offset } = questionOf(query)
  const header = Buffer.from(bytes.subarray(0, 12))
  header.writeUInt16BE(header.readUInt16BE(2) | 0x0200, 2)
  header.writeUInt16BE(0, 6)
  return Buffer.concat([header, query.subarray(12, offset + 4)])
}

/** A query the server received. */
export interface Query {
  readonly name: string
  readonly type: number
  readonly tcp: boolean
}

export class LoopbackDnsServer {
  /** What the server answers from now on. */
  zone: Zone
  /** Turns each answer into the bytes sent (undefined: no answer at all), for hostile-server tests. */
  rewrite: ((answer: Buffer) => Buffer | undefined) | undefined = undefined
  /** Answers are sent this long after their query (pacing: lookups started together pile up). */
  answerDelayMs = 0
  /** The most queries received and not yet answered at any one time. */
  mostOutstanding = 0
  private outstanding = 0
  /** Every query received, in order, over UDP and TCP. */
  readonly queries: Array<Query> = []
  private readonly queryWaiters = new Set<() => void>()
  /** Answers held back by answerDelayMs: cleared on close, where a send would throw. */
  private readonly delayed = new Set<ReturnType<typeof setTimeout>>()
  readonly port: number
  private readonly socket: Socket
  private readonly tcp: Server | undefined
  private readonly connections = new Set<TcpSocket>()

  private constructor(socket: Socket, tcp: Server | undefined, zone: Zone) {
    this.socket = socket
    this.tcp = tcp
    this.zone = zone
    this.port = socket.address().port
    socket.on("message", (query, peer) => {
      const bytes = this.answerTo(query, false)
      this.later(() => {
        if (bytes !== undefined) socket.send(tcp !== undefined && bytes.length > MaxUdpAnswer ? truncated(bytes, query) : bytes, peer.port, peer.address)
      })
    })
    tcp?.on("connection", (connection) => {
      // Messages over TCP are framed by a 2-byte length (RFC 1035 4.2.2).
      let held = Buffer.alloc(0)
      this.connections.add(connection)
      connection.on("close", () => this.connections.delete(connection))
      connection.on("error", () => {})
      connection.on("data", (chunk) => {
        held = Buffer.concat([held, chunk])
        while (held.length >= 2 && held.length >= 2 + held.readUInt16BE(0)) {
          const query = held.subarray(2, 2 + held.readUInt16BE(0))
          held = held.subarray(2 + query.length)
          const bytes = this.answerTo(query, true)
          this.later(() => {
            if (bytes !== undefined && !connection.destroyed) connection.write(Buffer.concat([u16(bytes.length), bytes]))
          })
        }
      })
    })
  }

  private later(send: () => void): void {
    this.outstanding += 1
    this.mostOutstanding = Math.max(this.mostOutstanding, this.outstanding)
    const done = () => {
      this.outstanding -= 1
      send()
    }
    if (this.answerDelayMs === 0) return done()
    const timer = setTimeout(() => {
      this.delayed.delete(timer)
      done()
    }, this.answerDelayMs)
    this.delayed.add(timer)
  }

  private answerTo(query: Buffer, tcp: boolean): Buffer | undefined {
    const { name, type } = questionOf(query)
    this.queries.push({ name, type, tcp })
    for (const check of this.queryWaiters) check()
    if (this.zone.silent?.includes(name) === true) return undefined
    return this.rewrite === undefined ? answer(query, this.zone) : this.rewrite(answer(query, this.zone))
  }

  /** Resolves once `count` queries that `match` have been received (counting those already were); rejects after `timeoutMs`. */
  received(match: (query: Query) => boolean, count: number, timeoutMs = 5000): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.queries.filter(match).length < count) return
        this.queryWaiters.delete(check)
        clearTimeout(timer)
        resolve()
      }
      const timer = setTimeout(() => {
        this.queryWaiters.delete(check)
        reject(new Error(`${this.queries.filter(match).length} of ${count} matching queries within ${timeoutMs} ms`))
      }, timeoutMs)
      this.queryWaiters.add(check)
      check()
    })
  }

  /** Listens on 127.0.0.1, on `port` (default: any free one); with `tcp`, over TCP on the same port too. */
  static async start(zone: Zone, port = 0, options: { readonly tcp?: boolean } = {}): Promise<LoopbackDnsServer> {
    for (let attempt = 0; ; attempt++) {
      const socket = createSocket("udp4")
      socket.bind(port, "127.0.0.1")
      await once(socket, "listening")
      if (options.tcp !== true) return new LoopbackDnsServer(socket, undefined, zone)
      // The UDP port picked may be taken for TCP: then another one.
      const tcp = createServer()
      const listening = new Promise<boolean>((resolve) => {
        tcp.once("listening", () => resolve(true))
        tcp.once("error", () => resolve(false))
      })
      tcp.listen(socket.address().port, "127.0.0.1")
      if (await listening) return new LoopbackDnsServer(socket, tcp, zone)
      socket.close()
      if (port !== 0 || attempt >= 20) throw new Error(`no port free for both UDP and TCP (port ${port})`)
    }
  }

  get address(): string {
    return `127.0.0.1:${this.port}`
  }

  async close(): Promise<void> {
    for (const timer of this.delayed) clearTimeout(timer)
    this.delayed.clear()
    const closed = once(this.socket, "close")
    this.socket.close()
    if (this.tcp !== undefined) {
      this.tcp.close()
      for (const connection of this.connections) connection.destroy()
    }
    await closed
  }
}
