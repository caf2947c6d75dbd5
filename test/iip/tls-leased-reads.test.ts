// Streams over mutual TLS read into reused memory (src/mux/readSlabs.ts), as they do over plain
// TCP (leased-reads.test.ts): node's TLS layer hands each decrypted record to the buffer a socket
// was given to read into, so a TLS connection that carries a stream switches to slabs too, instead
// of a fresh buffer per record. Client and server in this process (the slab counts are the
// process's), TLS 1.3 with client certificates as between sidecars:
// - calls one at a time hold no slab; the first stream switches the connection; an upload read as
//   leases arrives intact, its reads in slabs used again, and the handler still sees the client's
//   identity; a relayed stream comes back intact, the client's TLS end reading into slabs too;
// - a burst of calls (full records read) holds no slab either: a slab read into by calls alone is
//   never reused (each whole message handed on keeps it), and a small body the handler keeps
//   would hold a whole 64 KiB slab where Node's read held one record; the bodies keep their bytes;
// - request bodies and chunks kept from the async iterator keep their bytes while later streams
//   are read into reused slabs.
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import { IipServer, reply } from "../../src/iip/server.ts"
import { slabCounts } from "../../src/mux/readSlabs.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { collectLog, type LogEvent } from "../support/meshTest.ts"
import { body, firstWrong, hashLeases, type Held, keepChunks, MiB, numberedPiece, relayed, sha256Of } from "../support/testBodies.ts"
import { A, makeMtlsPair, mtlsClient, type MtlsPair, serverTls } from "../support/mtlsIipPair.ts"

let pair: MtlsPair
beforeAll(async () => {
  pair = await makeMtlsPair()
})

describe("leased reads over mutual TLS", () => {
  let cleanup: Cleanup
  let server: IipServer
  let events: Array<LogEvent>
  let identities: Array<string | undefined>
  let bodies: Array<Buffer>

  beforeEach(async () => {
    cleanup = new Cleanup()
    const log = collectLog()
    events = log.events
    identities = []
    bodies = []
    server = new IipServer({
      port: 0,
      log: log.log,
      compression: false,
      tls: serverTls(pair)
    })
    server.handle("/echo", (request) => request.data)
    server.handle("/keep-body", (request) => {
      bodies.push(request.data)
      return "kept"
    })
    server.handle("/stream-echo", (request) => reply(request.context.stream ?? request.data))
    server.handle("/lease-hash", (request) => {
      identities.push(request.context.peerIdentity)
      return hashLeases(request.context.stream!)
    })
    await server.listen()
    cleanup.add(() => server.close())
  })

  afterEach(async () => {
    await cleanup.run()
    expect(events.filter((e) => e.event === "protocol-violation")).toEqual([])
  })

  const client = (): IipClient => mtlsClient(pair, server, cleanup)

  const upload = async (c: IipClient, total: number) => {
    const answer = await c.stream("/lease-hash", body(total), { timeoutMs: 0 })
    return JSON.parse(answer.data.toString()) as { bytes: number; sha256: string }
  }

  it("calls one at a time hold no slab; the first stream switches the connection; an upload read as leases arrives intact, read into slabs used again, from the proven client; a relay's answer too", async () => {
    const c = client()
    const before = { ...slabCounts }
    for (let i = 0; i < 50; i++) expect((await c.call("/echo", `call ${i}`, { timeoutMs: 5000 })).toString()).toBe(`call ${i}`)
    expect(slabCounts).toEqual(before)
    const total = 32 * MiB
    expect(await withTimeout(upload(c, total), 30_000, "the upload")).toEqual({ bytes: total, sha256: await sha256Of(total) })
    const made = slabCounts.made - before.made
    const reused = slabCounts.reused - before.reused
    // 32 MiB is 512 slabs' worth (records of up to 16 KiB, several to a slab): nearly all in slabs read into before.
    expect(reused).toBeGreaterThan(300)
    expect(made).toBeLessThan(64)
    expect(identities).toEqual([A])
    // Back the other way too: a relay's answer is read as leases into the client's slabs.
    const relay = await relayed(c, "/stream-echo", 16 * MiB)
    expect(relay.echoed).toEqual({ bytes: 16 * MiB, sha256: await sha256Of(16 * MiB) })
    expect(relay.reused).toBeGreaterThan(200)
    expect(relay.made).toBeLessThan(96)
  }, 60_000)

  it("a burst of calls holds no slab; kept request bodies and the answers keep their bytes", async () => {
    const c = client()
    const before = { ...slabCounts }
    const piece = (i: number) => numberedPiece(4096 * i)
    const count = 2000
    let next = 0
    const worker = async () => {
      for (let i = next++; i < count; i = next++) expect((await c.call("/keep-body", piece(i), { timeoutMs: 10_000 })).toString()).toBe("kept")
    }
    await Promise.all(Array.from({ length: 64 }, worker))
    expect(slabCounts).toEqual(before)
    // Sent in any order by 64 workers: each body says where it belongs.
    expect(bodies.length).toBe(count)
    const seen = new Set<number>()
    for (const kept of bodies) {
      const at = kept.readUInt32BE(0)
      seen.add(at)
      expect(firstWrong(kept.subarray(4), at + 4), `body at ${at}`).toBe(-1)
    }
    expect(seen.size).toBe(count)
    for (let i = 0; i < 200; i++) expect((await c.call("/echo", piece(i), { timeoutMs: 5000 })).equals(piece(i))).toBe(true)
  }, 60_000)

  it("request bodies and chunks kept from the async iterator keep their bytes while later streams are read into reused slabs", async () => {
    const kept: Array<Held> = []
    server.handle("/keep", (request) => keepChunks(request.context.stream!, kept))
    const c = client()
    for (let i = 0; i < 100; i++) expect((await c.call("/keep-body", numberedPiece(4096 * i), { timeoutMs: 5000 })).toString()).toBe("kept")
    const total = 8 * MiB
    expect((await c.stream("/keep", body(total), { timeoutMs: 0 })).data.toString()).toBe(String(total))
    const before = { ...slabCounts }
    expect((await upload(c, 8 * MiB)).bytes).toBe(8 * MiB)
    expect(slabCounts.reused - before.reused).toBeGreaterThan(64)
    for (const held of kept) expect(firstWrong(held.bytes, held.at), `chunk at ${held.at}`).toBe(-1)
    expect(bodies.length).toBe(100)
    bodies.forEach((kept, i) => {
      expect(kept.readUInt32BE(0), `body ${i}`).toBe(4096 * i)
      expect(firstWrong(kept.subarray(4), 4096 * i + 4), `body ${i}`).toBe(-1)
    })
  }, 60_000)
})
