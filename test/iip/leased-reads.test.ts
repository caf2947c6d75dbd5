// Streams read into reused memory (src/mux/readSlabs.ts, IncomingStream.leased) over real TCP in
// mesh mode, server and client in this process (the slab counts are the process's):
// - A connection that only carries calls holds no slab; its first stream switches it to slabs.
// - An upload read as leases arrives intact, and its reads go into slabs used again (few made).
// - A relay (a handler answering with the request's own stream) releases each chunk once its
//   socket took it: the echo arrives intact, both ends on reused slabs.
// - Views that escape are never overwritten: chunks kept from the async iterator, leases held
//   across later reads, and leases still out after their stream was cancelled keep their bytes
//   while the connection carries other streams into reused slabs.
// - A consumer that never releases its leases stalls its sender after one window (bounded memory);
//   other calls on the connection go on; a late release (after cancel, or after the connection
//   closed) is harmless.
// - Compressed chunks (decompressed into buffers of their own) read as leases arrive intact.
// Plus the slab bookkeeping itself (references, taint, retire, the pool's bound).
import { createHash } from "node:crypto"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import { type IipServer, reply } from "../../src/iip/server.ts"
import { emptyReadSlabPool, freeSlabCount, setReadSlabPoolBytes, Slab, slabBytes, slabCounts } from "../../src/mux/readSlabs.ts"
import { type LeasedChunk, StreamFailed } from "../../src/mux/streams.ts"
import { MeshDefaults } from "../../src/protocol/mesh.ts"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { collectLog, type LogEvent, startClient, startServer } from "../support/meshTest.ts"
import { body, firstWrong, hashLeases, type Held, keepChunks, KiB, MiB, numberedPiece, relayed, sha256Of } from "../support/testBodies.ts"

/** A `/hoard` handler that reads its body as leases and releases none: what it holds, where each lease began, how it ended. */
const hoarding = (server: IipServer) => {
  const hoard = { held: [] as Array<LeasedChunk>, offsets: [] as Array<number>, bytes: 0, ended: undefined as "ended" | StreamFailed | undefined }
  server.handle("/hoard", async (request) => {
    try {
      for await (const lease of request.context.stream!.leased()) {
        hoard.held.push(lease)
        hoard.offsets.push(hoard.bytes)
        hoard.bytes += lease.bytes.length
      }
      hoard.ended = "ended"
    } catch (error) {
      hoard.ended = error as StreamFailed
    }
    return "done"
  })
  return hoard
}

describe("leased reads into reused memory", () => {
  let cleanup: Cleanup
  let server: IipServer
  let events: Array<LogEvent>
  let bodies: Array<Buffer>

  beforeEach(async () => {
    cleanup = new Cleanup()
    const log = collectLog()
    events = log.events
    server = await startServer(cleanup, { log: log.log, compression: false })
    server.handle("/echo", (request) => request.data)
    // Whole request bodies, views of the reads they arrived in (or copies), kept by the handler.
    bodies = []
    server.handle("/keep-body", (request) => {
      bodies.push(request.data)
      return "kept"
    })
    server.handle("/stream-echo", (request) => reply(request.context.stream ?? request.data))
    server.handle("/lease-hash", (request) => hashLeases(request.context.stream!))
  })

  afterEach(async () => {
    await cleanup.run()
    setReadSlabPoolBytes(8 * MiB)
    expect(events.filter((e) => e.event === "protocol-violation")).toEqual([])
  })

  const client = (options: Parameters<typeof startClient>[2] = {}): IipClient =>
    startClient(cleanup, server.address.port, { maxConnections: 1, compression: false, ...options })

  /** `count` 1 KiB calls whose bodies the server keeps: 4 bytes naming a body offset, then the body's bytes from there. */
  const keepBodies = async (c: IipClient, count: number) => {
    for (let i = 0; i < count; i++) {
      expect((await c.call("/keep-body", numberedPiece(4096 * bodies.length), { timeoutMs: 5000 })).toString()).toBe("kept")
    }
  }

  const checkBodies = (count: number) => {
    expect(bodies.length).toBe(count)
    bodies.forEach((kept, i) => {
      expect(kept.readUInt32BE(0), `body ${i}`).toBe(4096 * i)
      expect(firstWrong(kept.subarray(4), 4096 * i + 4), `body ${i}`).toBe(-1)
    })
  }

  const upload = async (c: IipClient, path: string, total: number, signal?: AbortSignal) => {
    const answer = await c.stream(path, body(total), { timeoutMs: 0, ...(signal === undefined ? {} : { signal }) })
    return JSON.parse(answer.data.toString()) as { bytes: number; sha256: string }
  }

  it("a connection that only carries calls holds no slab (a buffer per read, as Node's); its first stream switches it to slabs", async () => {
    const c = client()
    const before = { ...slabCounts }
    for (let i = 0; i < 200; i++) expect((await c.call("/echo", `call ${i}`, { timeoutMs: 5000 })).toString()).toBe(`call ${i}`)
    expect(slabCounts).toEqual(before)
    expect((await upload(c, "/lease-hash", 4 * MiB)).bytes).toBe(4 * MiB)
    expect(slabCounts.made + slabCounts.reused - before.made - before.reused).toBeGreaterThan(32)
  }, 60_000)

  it("an upload read as leases arrives intact, read into slabs used again", async () => {
    const c = client()
    const before = { ...slabCounts }
    const total = 32 * MiB
    expect(await withTimeout(upload(c, "/lease-hash", total), 30_000, "the upload")).toEqual({ bytes: total, sha256: await sha256Of(total) })
    const made = slabCounts.made - before.made
    const reused = slabCounts.reused - before.reused
    // 32 MiB is 512 slabs' worth: nearly all reads went into slabs read into before. The window
    // (1 MiB, 16 slabs) bounds what the stream holds; the client's own reads make a few more.
    expect(reused).toBeGreaterThan(300)
    expect(made).toBeLessThan(64)
    console.log(`[leased-reads] 32 MiB upload: ${made} slabs made, ${reused} reused`)
  }, 60_000)

  it("a relayed stream (the answer is the request's own stream) comes back intact, both ends reading into reused slabs", async () => {
    const total = 16 * MiB
    const { echoed, made, reused } = await relayed(client(), "/stream-echo", total)
    expect(echoed).toEqual({ bytes: total, sha256: await sha256Of(total) })
    expect(reused).toBeGreaterThan(200)
    expect(made).toBeLessThan(96)
  }, 60_000)

  it("request bodies and chunks kept from the async iterator keep their bytes while later reads go on (their slabs are not reused)", async () => {
    const kept: Array<Held> = []
    server.handle("/keep", (request) => keepChunks(request.context.stream!, kept))
    const c = client()
    await keepBodies(c, 200)
    const total = 8 * MiB
    expect((await c.stream("/keep", body(total), { timeoutMs: 0 })).data.toString()).toBe(String(total))
    // More streams through the same connection, read as leases into reused slabs.
    expect((await upload(c, "/lease-hash", 8 * MiB)).bytes).toBe(8 * MiB)
    for (const held of kept) expect(firstWrong(held.bytes, held.at), `chunk at ${held.at}`).toBe(-1)
    checkBodies(200)
  }, 60_000)

  it("a consumer that never releases its leases stalls its sender at one window; other calls go on; its leases keep their bytes through cancel and other streams; releasing late is harmless", async () => {
    const hoard = hoarding(server)
    const { held, offsets } = hoard
    const c = client({ maxChannelsPerConnection: 4, idleChannelsAhead: 2 })
    for (const warm of ["a", "b"]) expect((await c.call("/echo", warm, { timeoutMs: 5000 })).toString()).toBe(warm)
    let sent = 0
    const counted = async function*(): AsyncGenerator<Buffer> {
      for await (const piece of body(64 * MiB, 64 * KiB)) {
        sent += piece.length
        yield piece
      }
    }
    const abort = new AbortController()
    const call = c.stream("/hoard", counted(), { timeoutMs: 0, signal: abort.signal }).then(
      () => "answered",
      (error: unknown) => error
    )
    const window = MeshDefaults.streamWindow
    await waitFor(() => hoard.bytes >= window, 10_000, "the hoarding handler to hold one window")
    // Other calls on the same connection go through meanwhile (their bodies kept by the handler)...
    for (let i = 0; i < 50; i++) expect((await c.call("/echo", `call ${i}`, { timeoutMs: 5000 })).toString()).toBe(`call ${i}`)
    await keepBodies(c, 50)
    expect(c.stats.connections).toBe(1)
    // ...and the sender got no more credit: the server holds one window, the sender stopped.
    expect(hoard.bytes).toBe(window)
    expect(sent).toBeLessThanOrEqual(window + 2 * 64 * KiB)
    // Cancelled while the leases are out: the call fails, and the handler's stream ends (the
    // request was answered `cancelled` and its body dropped, or the body's abort came first).
    abort.abort()
    const outcome = await withTimeout(call, 5000, "the cancelled call")
    expect(outcome).not.toBe("answered")
    await waitFor(() => hoard.ended !== undefined, 5000, "the handler's stream to end")
    if (hoard.ended !== "ended") expect(hoard.ended).toBeInstanceOf(StreamFailed)
    // Other streams through the same connection, into reused slabs: the held leases keep their bytes.
    expect((await upload(c, "/lease-hash", 16 * MiB)).bytes).toBe(16 * MiB)
    held.forEach((lease, i) => expect(firstWrong(lease.bytes, offsets[i]!), `lease at ${offsets[i]}`).toBe(-1))
    checkBodies(50)
    // Released late (twice, even): nothing breaks, and the connection carries the next stream intact.
    for (const lease of held) lease.release()
    for (const lease of held) lease.release()
    const total = 8 * MiB
    expect(await upload(c, "/lease-hash", total)).toEqual({ bytes: total, sha256: await sha256Of(total) })
    // The bodies kept while the leases were out still hold their bytes, now that those slabs are free.
    checkBodies(50)
  }, 60_000)

  it("leases out when their connection closes keep their bytes, and are released harmlessly after it", async () => {
    const hoard = hoarding(server)
    const { held, offsets } = hoard
    const doomed = client()
    const call = doomed.stream("/hoard", body(16 * MiB, 64 * KiB), { timeoutMs: 0 }).then(
      () => "answered",
      (error: unknown) => error
    )
    await waitFor(() => hoard.bytes >= MeshDefaults.streamWindow, 10_000, "the hoarding handler to hold one window")
    doomed.close()
    expect(await withTimeout(call, 5000, "the call on the closed connection")).not.toBe("answered")
    await waitFor(() => hoard.ended !== undefined, 5000, "the handler's stream to fail")
    expect(hoard.ended).not.toBe("ended")
    // Another connection streams through slabs meanwhile; then the leases go back, after their connection is gone.
    const next = client()
    expect((await upload(next, "/lease-hash", 16 * MiB)).bytes).toBe(16 * MiB)
    held.forEach((lease, i) => expect(firstWrong(lease.bytes, offsets[i]!), `lease at ${offsets[i]}`).toBe(-1))
    for (const lease of held) lease.release()
    const total = 8 * MiB
    expect(await upload(next, "/lease-hash", total)).toEqual({ bytes: total, sha256: await sha256Of(total) })
  }, 60_000)

  it("a lease held while its stream reads on keeps its bytes, and releasing it lets the sender go on", async () => {
    // The lease held is one from the middle of the stream (the first read also holds the request's
    // first packet, a view that already keeps its slab from reuse).
    let first: { lease: LeasedChunk; at: number } | undefined
    let checked = -2
    server.handle("/hold-first", async (request) => {
      let at = 0
      for await (const lease of request.context.stream!.leased()) {
        if (first === undefined && at >= 512 * KiB) first = { lease, at }
        else lease.release()
        at += lease.bytes.length
        // Half-way through, the first lease is checked and given back.
        if (at >= 4 * MiB && checked === -2) {
          checked = firstWrong(first!.lease.bytes, first!.at)
          first!.lease.release()
        }
      }
      return String(at)
    })
    const c = client()
    const total = 8 * MiB
    expect((await withTimeout(c.stream("/hold-first", body(total), { timeoutMs: 0 }), 30_000, "the upload")).data.toString()).toBe(String(total))
    expect(checked).toBe(-1)
  }, 60_000)

  it("compressed stream chunks read as leases arrive intact", async () => {
    const zserver = await startServer(cleanup, { compression: {} })
    zserver.handle("/lease-hash", (request) => hashLeases(request.context.stream!))
    const c = startClient(cleanup, zserver.address.port, { maxConnections: 1, compression: { minBytes: 1 } })
    // A body of runs (compressible) and hashed stretches (not): both kinds of chunk.
    const total = 4 * MiB
    const mixed = async function*(): AsyncGenerator<Buffer> {
      let i = 0
      for await (const piece of body(total, 64 * KiB)) yield i++ % 2 === 0 ? Buffer.alloc(piece.length, i & 0xff) : piece
    }
    const hash = createHash("sha256")
    for await (const piece of mixed()) hash.update(piece)
    const answer = await c.stream("/lease-hash", mixed(), { timeoutMs: 0 })
    expect(JSON.parse(answer.data.toString())).toEqual({ bytes: total, sha256: hash.digest("hex") })
    expect(c.meshSessions[0]!.codec).toBe("zstd")
  }, 60_000)
})

describe("read slabs", () => {
  afterEach(() => setReadSlabPoolBytes(8 * MiB))

  it("a slab goes back to the pool once retired and unreferenced, never while referenced, never once tainted; the pool keeps at most its bound", () => {
    setReadSlabPoolBytes(0)
    setReadSlabPoolBytes(2 * slabBytes)
    expect(freeSlabCount()).toBe(0)
    const make = () => new Slab(Buffer.alloc(slabBytes))

    const held = make()
    held.ref()
    held.ref()
    held.retire()
    expect(freeSlabCount()).toBe(0)
    held.unref()
    expect(freeSlabCount()).toBe(0)
    held.unref()
    expect(freeSlabCount()).toBe(1)

    const tainted = make()
    tainted.ref()
    tainted.taint()
    tainted.retire()
    tainted.unref()
    expect(freeSlabCount()).toBe(1)
    expect(tainted.free).toBe(false)

    const idle = make()
    idle.used = 100
    idle.retire()
    expect(freeSlabCount()).toBe(2)
    expect(idle.used).toBe(0)

    // Past the bound: left to the collector.
    make().retire()
    expect(freeSlabCount()).toBe(2)
    setReadSlabPoolBytes(slabBytes)
    expect(freeSlabCount()).toBe(1)
  })

  it("emptying the pool lets go of every free slab and keeps its bound: slabs retired after it are pooled again", () => {
    setReadSlabPoolBytes(0)
    setReadSlabPoolBytes(2 * slabBytes)
    const make = () => new Slab(Buffer.alloc(slabBytes))
    make().retire()
    make().retire()
    expect(freeSlabCount()).toBe(2)
    expect(emptyReadSlabPool()).toBe(2 * slabBytes)
    expect(freeSlabCount()).toBe(0)
    expect(emptyReadSlabPool()).toBe(0)
    make().retire()
    make().retire()
    make().retire()
    expect(freeSlabCount()).toBe(2)
  })
})
