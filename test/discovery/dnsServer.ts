// A tiny authoritative DNS server on 127.0.0.1 over UDP for the DNS SRV tests: it answers SRV and A
// queries from a zone the test sets (and changes) at will. A name in the zone with no records of the
// asked type gets an empty NOERROR answer (Node: ENODATA); a name not in the zone gets NXDOMAIN
// (ENOTFOUND); `rewrite` can garble or drop answers. Written here because dns2 compresses SRV
// targets, which Node's resolver rejects.
import { createSocket, type Socket } from "node:dgram"
import { once } from "node:events"

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
}

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

const answer = (query: Buffer, zone: Zone): Buffer => {
  let offset = 12
  const labels: Array<string> = []
  while (query[offset]! !== 0) {
    const length = query[offset]!
    labels.push(query.toString("ascii", offset + 1, offset + 1 + length))
    offset += length + 1
  }
  offset += 1
  const type = query.readUInt16BE(offset)
  const name = labels.join(".").toLowerCase()
  const ttl = zone.ttl ?? 1
  const srv = zone.srv?.[name]
  const a = zone.a?.[name]
  const answers: Array<Buffer> = []
  if (type === TYPE_SRV) {
    for (const r of srv ?? []) answers.push(record(TYPE_SRV, ttl, Buffer.concat([u16(r.priority ?? 0), u16(r.weight), u16(r.port), encodeName(r.target)])))
  } else if (type === TYPE_A) {
    for (const address of a ?? []) answers.push(record(TYPE_A, ttl, Buffer.from(address.split(".").map(Number))))
  }
  const rcode = srv === undefined && a === undefined ? 3 : 0
  const header = Buffer.alloc(12)
  header.writeUInt16BE(query.readUInt16BE(0), 0)
  header.writeUInt16BE(0x8000 | 0x0400 | (query.readUInt16BE(2) & 0x0100) | 0x0080 | rcode, 2)
  header.writeUInt16BE(1, 4)
  header.writeUInt16BE(answers.length, 6)
  return Buffer.concat([header, query.subarray(12, offset + 4), ...answers])
}

export class LoopbackDnsServer {
  /** What the server answers from now on. */
  zone: Zone
  /** Turns each answer into the bytes sent (undefined: no answer at all), for hostile-server tests. */
  rewrite: ((answer: Buffer) => Buffer | undefined) | undefined = undefined
  readonly port: number
  private readonly socket: Socket

  private constructor(socket: Socket, zone: Zone) {
    this.socket = socket
    this.zone = zone
    this.port = socket.address().port
    socket.on("message", (query, peer) => {
      const bytes = this.rewrite === undefined ? answer(query, this.zone) : this.rewrite(answer(query, this.zone))
      if (bytes !== undefined) socket.send(bytes, peer.port, peer.address)
    })
  }

  /** Listens on 127.0.0.1, on `port` (default: any free one). */
  static async start(zone: Zone, port = 0): Promise<LoopbackDnsServer> {
    const socket = createSocket("udp4")
    socket.bind(port, "127.0.0.1")
    await once(socket, "listening")
    return new LoopbackDnsServer(socket, zone)
  }

  get address(): string {
    return `127.0.0.1:${this.port}`
  }

  async close(): Promise<void> {
    const closed = once(this.socket, "close")
    this.socket.close()
    await closed
  }
}
