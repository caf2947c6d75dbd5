// Read memory reused over mutual TLS never corrupts what the app holds (src/mux/readSlabs.ts): a
// long seeded random mix of whole messages (1 B to 200 KiB) and streams (chunks of 1 B to 100 KiB,
// read as leases held across later reads or kept from the async iterator), many at once on one
// mTLS connection, each body's bytes checked where they are used (the handler, the echoed answer,
// the relayed stream back at the client) and every kept body and chunk checked again at the end,
// after all the reads that reused the slabs. The server is in permissive mode in one run (its
// first bytes sniffed before TLS is known, as `--mtls permissive` does) and mTLS-only in the other.
import { createHash, type Hash } from "node:crypto"
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import { IipServer, reply } from "../../src/iip/server.ts"
import { slabCounts } from "../../src/mux/readSlabs.ts"
import type { IncomingStream } from "../../src/mux/streams.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { collectLog, type LogEvent } from "../support/meshTest.ts"
import { byteAt, firstWrong, KiB } from "../support/testBodies.ts"
import { makeMtlsPair, mtlsClient, type MtlsPair, serverTls } from "../support/mtlsIipPair.ts"

let pair: MtlsPair
beforeAll(async () => {
  pair = await makeMtlsPair()
})

/** Seeds of the server's lease readers, one each. */
let leaseReaders = 0

/** A seeded generator (mulberry32): the same mix every run of a seed. */
const random = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

/** A body of `length` bytes starting at body offset `at`: 4 bytes naming `at`, then the body's bytes after them. */
const numbered = (at: number, length: number): Buffer => {
  const out = Buffer.allocUnsafe(length)
  for (let i = 0; i < length; i++) out[i] = byteAt(at + i)
  if (length >= 4) out.writeUInt32BE(at, 0)
  return out
}

/** Whether `bytes` is a whole numbered body: its offset, or -1 when a byte is wrong. */
const checkNumbered = (bytes: Buffer): number => {
  if (bytes.length < 4) return 0
  const at = bytes.readUInt32BE(0)
  return firstWrong(bytes.subarray(4), at + 4) === -1 ? at : -1
}

/** A stream of `total` body bytes from offset `at` in chunks of 1 B to 100 KiB (`next` picks). */
async function* streamBody(at: number, total: number, next: () => number): AsyncGenerator<Buffer> {
  for (let sent = 0; sent < total; ) {
    const size = Math.min(total - sent, 1 + Math.floor(next() * (next() < 0.3 ? 64 : 100 * KiB)))
    yield numbered(at + sent, size)
    sent += size
  }
}

/**
 * Reads a stream as leases, holding up to 8 of them (released in random order, as a relay's
 * writes complete) and checking each chunk's bytes again as it is released: a lease overwritten
 * while held is caught.
 */
const readLeases = async (stream: IncomingStream, next: () => number, chunks: Array<{ bytes: Buffer; copy: Buffer }>, hash: Hash): Promise<number> => {
  const held: Array<{ bytes: Buffer; copy: Buffer; release: () => void }> = []
  let total = 0
  const releaseOne = () => {
    const [lease] = held.splice(Math.floor(next() * held.length), 1)
    if (!lease!.bytes.equals(lease!.copy)) throw new Error(`a held lease of ${lease!.bytes.length} bytes was overwritten`)
    lease!.release()
  }
  for await (const lease of stream.leased()) {
    hash.update(lease.bytes)
    total += lease.bytes.length
    // Now and then one kept for good (abandoned: its memory never read into again).
    if (next() < 0.02) {
      chunks.push({ bytes: lease.bytes, copy: Buffer.from(lease.bytes) })
      lease.abandon()
    } else held.push({ bytes: lease.bytes, copy: Buffer.from(lease.bytes), release: () => lease.release() })
    while (held.length > 8 || (held.length > 0 && next() < 0.4)) releaseOne()
  }
  while (held.length > 0) releaseOne()
  return total
}

describe.each([
  { mode: "mTLS only", acceptPlain: false },
  { mode: "permissive", acceptPlain: true }
])("read memory over mutual TLS ($mode)", ({ acceptPlain }) => {
  let cleanup: Cleanup
  let server: IipServer
  let events: Array<LogEvent>
  /** Bodies and chunks the server's handlers keep (views of its reads), with copies made on arrival. */
  let kept: Array<{ bytes: Buffer; copy: Buffer }>

  beforeEach(async () => {
    cleanup = new Cleanup()
    const log = collectLog()
    events = log.events
    kept = []
    server = new IipServer({
      port: 0,
      log: log.log,
      compression: false,
      tls: serverTls(pair, acceptPlain)
    })
    // A whole body: checked now, kept (a view of the read), answered back.
    // A body larger than a stream chunk comes as a stream: its chunks kept from the async iterator.
    server.handle("/echo", async (request) => {
      const chunks: Array<Buffer> = []
      if (request.context.stream === undefined) chunks.push(request.data)
      else for await (const chunk of request.context.stream) chunks.push(chunk)
      for (const chunk of chunks) kept.push({ bytes: chunk, copy: Buffer.from(chunk) })
      const data = Buffer.concat(chunks)
      return checkNumbered(data) === -1 ? "wrong on arrival" : data
    })
    // A stream read as leases, some held across later reads: its length and hash.
    server.handle("/leases", async (request) => {
      const seed = ++leaseReaders
      const hash = createHash("sha256")
      const chunks: Array<{ bytes: Buffer; copy: Buffer }> = []
      const total = await readLeases(request.context.stream!, random(seed), chunks, hash)
      kept.push(...chunks)
      return JSON.stringify({ bytes: total, sha256: hash.digest("hex") })
    })
    // A stream relayed back as it comes.
    server.handle("/relay", (request) => reply(request.context.stream!))
    await server.listen()
    cleanup.add(() => server.close())
  })

  afterEach(async () => {
    await cleanup.run()
    expect(events.filter((e) => e.event === "protocol-violation")).toEqual([])
  })

  const client = (): IipClient => mtlsClient(pair, server, cleanup)

  it("a long random mix of messages and streams, many at once, arrives intact and stays intact where kept", async () => {
    const c = client()
    const before = { ...slabCounts }
    const answers: Array<{ bytes: Buffer; copy: Buffer }> = []
    let offset = 0
    const hashOf = (at: number, total: number, next: () => number) => {
      const hash = createHash("sha256")
      // The same chunks as streamBody makes from a generator in the same state.
      let sent = 0
      while (sent < total) {
        const size = Math.min(total - sent, 1 + Math.floor(next() * (next() < 0.3 ? 64 : 100 * KiB)))
        hash.update(numbered(at + sent, size))
        sent += size
      }
      return hash.digest("hex")
    }
    const worker = async (id: number) => {
      const next = random(1000 + id)
      for (let op = 0; op < 30; op++) {
        const kind = next()
        if (kind < 0.6) {
          // A whole message: tiny, a record or two, or many records.
          const size = [1 + Math.floor(next() * 64), 1 + Math.floor(next() * 20 * KiB), 1 + Math.floor(next() * 200 * KiB)][Math.floor(next() * 3)]!
          const at = (offset += size)
          const answer = await c.call("/echo", numbered(at, size), { timeoutMs: 20_000 })
          expect(answer.equals(numbered(at, size)), `echo of ${size} bytes at ${at}`).toBe(true)
          answers.push({ bytes: answer, copy: Buffer.from(answer) })
        } else {
          const total = Math.floor(next() * 1024 * KiB)
          const at = (offset += total)
          const seed = Math.floor(next() * 2 ** 31)
          if (kind < 0.8) {
            const answer = await c.stream("/leases", streamBody(at, total, random(seed)), { timeoutMs: 0 })
            expect(JSON.parse(answer.data.toString())).toEqual({ bytes: total, sha256: hashOf(at, total, random(seed)) })
          } else {
            const answer = await c.stream("/relay", streamBody(at, total, random(seed)), { timeoutMs: 0 })
            const hash = createHash("sha256")
            const chunks: Array<{ bytes: Buffer; copy: Buffer }> = []
            const bytes = await readLeases(answer.stream!, random(seed ^ 1), chunks, hash)
            expect({ bytes, sha256: hash.digest("hex") }, `relay of ${total} bytes at ${at}`).toEqual({ bytes: total, sha256: hashOf(at, total, random(seed)) })
            answers.push(...chunks)
          }
        }
      }
    }
    await withTimeout(Promise.all(Array.from({ length: 12 }, (_, id) => worker(id))), 100_000, "the mix")
    // The mix went through reused slabs on both ends.
    expect(slabCounts.reused - before.reused).toBeGreaterThan(100)
    for (const { bytes, copy } of kept) expect(bytes.equals(copy), `a kept body of ${bytes.length} bytes`).toBe(true)
    for (const { bytes, copy } of answers) expect(bytes.equals(copy), `a kept answer of ${bytes.length} bytes`).toBe(true)
  }, 120_000)
})
