// Bodies stream through the two sidecars instead of being gathered: a chunked request body
// reaches the app piece by piece while the caller is still sending it, a chunked response
// reaches the caller while the app is still writing it, and a 100 MiB upload and a 100 MiB
// download (app hashing / generating as it goes) arrive byte-exact (count + sha256) while the
// process's memory grows by far less than the body. The sidecars run in this process, so
// process.memoryUsage() covers them (and the app and client, which stream too).
import { createHash } from "node:crypto"
import * as http from "node:http"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Cleanup, collectGarbage, deferred, withTimeout } from "../support/iipRaw.ts"
import { LOOPBACK, type Mesh, startMesh } from "../support/sidecarHarness.ts"

const MiB = 1024 * 1024
const BIG = 100 * MiB
const CHUNK = 64 * 1024
/** Peak live growth allowed during a 100 MiB transfer; a gathered body alone would be 100 MiB. */
const MEMORY_LIMIT = 32 * MiB
/** How long a 100 MiB transfer may take, here and at the sidecars. */
const TRANSFER_MS = 90_000

/** The deterministic body: 64 KiB blocks of a fixed pattern, each stamped with its index. */
const base = Buffer.alloc(CHUNK)
for (let i = 0; i < CHUNK; i++) base[i] = (i * 31 + 7) & 0xff
const block = (index: number, size = CHUNK): Buffer => {
  const out = Buffer.from(base.subarray(0, size))
  out.writeUInt32BE(index, 0)
  return out
}
const expectedSha = (() => {
  const hash = createHash("sha256")
  for (let i = 0; i * CHUNK < BIG; i++) hash.update(block(i, Math.min(CHUNK, BIG - i * CHUNK)))
  return hash.digest("hex")
})()

/** Writes the big body to `out` with back-pressure (waits for 'drain'), then ends it. */
const writeBig = async (out: http.ClientRequest | http.ServerResponse): Promise<void> => {
  for (let i = 0; i * CHUNK < BIG; i++) {
    if (out.destroyed) throw new Error("destination closed mid-body")
    if (!out.write(block(i, Math.min(CHUNK, BIG - i * CHUNK)))) {
      await new Promise<void>((resolve, reject) => {
        const onDrain = () => {
          out.off("close", onClose)
          resolve()
        }
        const onClose = () => {
          out.off("drain", onDrain)
          reject(new Error("destination closed while waiting for drain"))
        }
        out.once("drain", onDrain)
        out.once("close", onClose)
      })
    }
  }
  out.end()
}

/**
 * Samples rss and arrayBuffers every 50 ms (measurement, not synchronisation). V8 frees dead
 * Buffers lazily (it lets tens of MiB of external garbage pile up before it collects), so the raw
 * peak mostly measures garbage, not what the sidecars hold. Every 4th sample therefore forces full
 * collections first: those samples give the live peak, which is what a sidecar that gathered a body
 * would blow up (100 MiB live at once). RSS is reported, not asserted: it follows the allocator's
 * high-water mark of that garbage (tens of MiB either way), not what is held.
 */
const memoryProbe = () => {
  collectGarbage()
  const start = process.memoryUsage()
  const peak = { rss: start.rss, arrayBuffers: start.arrayBuffers, liveArrayBuffers: start.arrayBuffers }
  let samples = 0
  const sample = (live: boolean) => {
    if (live) collectGarbage()
    const now = process.memoryUsage()
    peak.rss = Math.max(peak.rss, now.rss)
    peak.arrayBuffers = Math.max(peak.arrayBuffers, now.arrayBuffers)
    if (live) peak.liveArrayBuffers = Math.max(peak.liveArrayBuffers, now.arrayBuffers)
  }
  const timer = setInterval(() => sample(++samples % 4 === 0), 50)
  return {
    stop: () => {
      clearInterval(timer)
      sample(true)
      return {
        samples,
        rssGrowth: peak.rss - start.rss,
        arrayBuffersGrowth: peak.arrayBuffers - start.arrayBuffers,
        liveArrayBuffersGrowth: peak.liveArrayBuffers - start.arrayBuffers
      }
    }
  }
}

type Memory = ReturnType<ReturnType<typeof memoryProbe>["stop"]>

const report = (what: string, seconds: number, memory: Memory) =>
  console.log(
    `${what}: ${seconds.toFixed(2)} s (${(BIG / MiB / seconds).toFixed(0)} MiB/s), ${memory.samples} samples; peak growth ` +
      `live arrayBuffers (after GC) ${mib(memory.liveArrayBuffersGrowth)}; ` +
      `raw (garbage included) arrayBuffers ${mib(memory.arrayBuffersGrowth)}, rss ${mib(memory.rssGrowth)}`
  )

/** What the sidecars hold at once stays far below the body. */
const expectBounded = (memory: Memory) => {
  expect(memory.samples).toBeGreaterThan(4)
  expect(memory.liveArrayBuffersGrowth).toBeLessThan(MEMORY_LIMIT)
}

const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`

/**
 * The app: `/upload` hashes the body as it arrives and answers with count and sha256;
 * `/download` generates the big body with back-pressure; `/echo-chunks` answers each received
 * chunk at once (chunked both ways); `/drip` writes a chunk, waits for `release`, writes another.
 */
const makeApp = (hooks: { readonly appGotChunk: (chunk: string) => void; readonly dripReleased: () => Promise<void> }): http.RequestListener => (req, res) => {
  if (req.url === "/upload") {
    const hash = createHash("sha256")
    let count = 0
    req.on("data", (chunk: Buffer) => {
      count += chunk.length
      hash.update(chunk)
    })
    req.on("end", () =>
      res.end(JSON.stringify({ count, sha256: hash.digest("hex"), length: req.headers["content-length"] ?? null, encoding: req.headers["transfer-encoding"] ?? null }))
    )
    return
  }
  if (req.url === "/download") {
    req.resume()
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": BIG })
    writeBig(res).catch(() => res.destroy())
    return
  }
  if (req.url === "/echo-chunks") {
    res.writeHead(200, { "content-type": "text/plain" })
    req.on("data", (chunk: Buffer) => {
      hooks.appGotChunk(chunk.toString())
      res.write(`echo:${chunk.toString()}|`)
    })
    req.on("end", () => res.end("done"))
    return
  }
  if (req.url === "/drip") {
    req.resume()
    res.writeHead(200, { "content-type": "text/plain" })
    res.write("first|")
    hooks.dripReleased().then(() => res.end("second"))
    return
  }
  res.writeHead(404)
  res.end()
}

describe("streamed bodies through two sidecars", () => {
  const cleanup = new Cleanup()
  let mesh: Mesh
  let appChunks: Array<string> = []
  let chunkWaiter: { readonly count: number; readonly resolve: () => void } | undefined
  let drip = deferred()

  beforeAll(async () => {
    mesh = await startMesh(
      cleanup,
      makeApp({
        appGotChunk: (chunk) => {
          appChunks.push(chunk)
          if (chunkWaiter !== undefined && appChunks.length >= chunkWaiter.count) chunkWaiter.resolve()
        },
        dripReleased: () => drip.promise
      }),
      // A 100 MiB transfer's deadline as long as the test's own bound on it: the tests check bytes
      // and memory, not speed (with 128 KiB socket buffers on a loaded machine one took 10.3 s,
      // past the harness's 10 s, and was cut 504).
      { a: { requestTimeoutMs: TRANSFER_MS }, b: { requestTimeoutMs: TRANSFER_MS } }
    )
  })
  afterAll(() => cleanup.run())

  const appReceived = (count: number) =>
    new Promise<void>((resolve) => {
      if (appChunks.length >= count) return resolve()
      chunkWaiter = { count, resolve }
    })

  it("a chunked request body reaches the app piece by piece, and the chunked answer reaches the caller piece by piece", async () => {
    appChunks = []
    const req = http.request({
      host: LOOPBACK,
      port: mesh.a.outboundPort,
      method: "POST",
      path: "/echo-chunks",
      headers: { host: "catalog", "transfer-encoding": "chunked", "content-type": "text/plain" },
      agent: false
    })
    cleanup.add(() => req.destroy())
    const response = withTimeout(
      new Promise<http.IncomingMessage>((resolve, reject) => {
        req.on("response", resolve)
        req.on("error", reject)
      }),
      5000,
      "the answer's head while the request is still open"
    )
    req.write("one")
    // The app sees the first piece while the caller has not finished sending: nothing gathered it.
    await withTimeout(appReceived(1), 5000, "the app to receive the first piece before the body ended")
    const res = await response
    expect(res.statusCode).toBe(200)
    expect(res.headers["content-length"]).toBeUndefined()
    const received: Array<string> = []
    const nextPiece = () =>
      new Promise<string>((resolve) => res.once("data", (chunk: Buffer) => resolve(chunk.toString())))
    // The echo of piece one comes back before piece two is even written.
    received.push(await withTimeout(nextPiece(), 5000, "the echo of the first piece"))
    expect(received.join("")).toBe("echo:one|")
    req.write("two")
    await withTimeout(appReceived(2), 5000, "the second piece")
    received.push(await withTimeout(nextPiece(), 5000, "the echo of the second piece"))
    req.end()
    const rest = await withTimeout(
      new Promise<string>((resolve) => {
        let text = ""
        res.on("data", (chunk: Buffer) => (text += chunk.toString()))
        res.on("end", () => resolve(text))
      }),
      5000,
      "the end of the answer"
    )
    expect(appChunks).toStrictEqual(["one", "two"])
    expect(received.join("") + rest).toBe("echo:one|echo:two|done")
  })

  it("a chunked answer reaches the caller while the app is still writing it", async () => {
    drip = deferred()
    const res = await withTimeout(
      new Promise<http.IncomingMessage>((resolve, reject) => {
        const req = http.request({ host: LOOPBACK, port: mesh.a.outboundPort, path: "/drip", headers: { host: "catalog" }, agent: false })
        cleanup.add(() => req.destroy())
        req.on("response", resolve)
        req.on("error", reject)
        req.end()
      }),
      5000,
      "the answer's head"
    )
    const first = await withTimeout(new Promise<string>((resolve) => res.once("data", (c: Buffer) => resolve(c.toString()))), 5000, "the first piece")
    expect(first).toBe("first|")
    drip.resolve()
    const rest = await withTimeout(
      new Promise<string>((resolve) => {
        let text = ""
        res.on("data", (c: Buffer) => (text += c.toString()))
        res.on("end", () => resolve(text))
      }),
      5000,
      "the rest"
    )
    expect(rest).toBe("second")
  })

  // Two transfers, each under TRANSFER_MS: the test's timeout was 120 s, less than their 180 s.
  it("a 100 MiB upload (with and without content-length) arrives byte-exact, memory growth well below the body", { timeout: 2 * TRANSFER_MS + 30_000 }, async () => {
    for (const framing of ["content-length", "chunked"] as const) {
      const probe = memoryProbe()
      const started = performance.now()
      const answer = await withTimeout(
        new Promise<{ status: number; body: string }>((resolve, reject) => {
          const req = http.request({
            host: LOOPBACK,
            port: mesh.a.outboundPort,
            method: "POST",
            path: "/upload",
            headers: { host: "catalog", "content-type": "application/octet-stream", ...(framing === "content-length" ? { "content-length": BIG } : { "transfer-encoding": "chunked" }) },
            agent: false
          })
          cleanup.add(() => req.destroy())
          req.on("error", reject)
          req.on("response", (res) => {
            let text = ""
            res.on("data", (c: Buffer) => (text += c.toString()))
            res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }))
          })
          writeBig(req).catch(reject)
        }),
        TRANSFER_MS,
        `the ${framing} upload's answer`
      )
      const memory = probe.stop()
      report(`upload 100 MiB (${framing})`, (performance.now() - started) / 1000, memory)
      expect(answer.status).toBe(200)
      const result = JSON.parse(answer.body) as { count: number; sha256: string; length: string | null; encoding: string | null }
      expect(result.count).toBe(BIG)
      expect(result.sha256).toBe(expectedSha)
      // The caller's framing survives as the app sees it: the length when one was given, chunked otherwise.
      expect([result.length, result.encoding]).toStrictEqual(framing === "content-length" ? [String(BIG), null] : [null, "chunked"])
      expectBounded(memory)
    }
  })

  it("a 100 MiB download arrives byte-exact, memory growth well below the body", { timeout: TRANSFER_MS + 30_000 }, async () => {
    const probe = memoryProbe()
    const started = performance.now()
    const result = await withTimeout(
      new Promise<{ status: number; length: string | undefined; count: number; sha256: string }>((resolve, reject) => {
        const req = http.request({ host: LOOPBACK, port: mesh.a.outboundPort, path: "/download", headers: { host: "catalog" }, agent: false })
        cleanup.add(() => req.destroy())
        req.on("error", reject)
        req.on("response", (res) => {
          const hash = createHash("sha256")
          let count = 0
          res.on("data", (chunk: Buffer) => {
            count += chunk.length
            hash.update(chunk)
          })
          res.on("error", reject)
          res.on("end", () => resolve({ status: res.statusCode ?? 0, length: res.headers["content-length"], count, sha256: hash.digest("hex") }))
        })
        req.end()
      }),
      TRANSFER_MS,
      "the download"
    )
    const memory = probe.stop()
    report("download 100 MiB", (performance.now() - started) / 1000, memory)
    expect(result).toStrictEqual({ status: 200, length: String(BIG), count: BIG, sha256: expectedSha })
    expectBounded(memory)
  })
})
