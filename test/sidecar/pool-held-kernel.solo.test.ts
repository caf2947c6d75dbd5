// The kernel memory B's HTTP/1.1 pool sockets pin while one caller stalls 256 large downloads
// (src/sidecar/appExchange.ts, --app-pool-max-held-bytes): B at its defaults but for its app, a
// node:http app answering 32 MiB as fast as its sockets take it, a hand-played mesh dialer that
// grants each stream one byte and never more. Each paused pool socket's receive queue fills to its
// autotuned buffer; what they hold is read with `ss -tm` (skmem r: bytes queued to B) on the
// sockets to the app's port. Before, all 256 sockets stayed paused: 128-166 MiB (500-650 KiB a socket, its
// buffer autotuned to ~780 KiB by the download's first burst). Now the budget counts a socket paused
// a second at 1 MiB and takes the longest stalled back past 64 MiB: ~57 sockets kept, ~39 MiB.
// Solo: it fills a few hundred MiB of socket buffers (the app's write queues most of it).
import { execFileSync, spawnSync } from "node:child_process"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { encodeEnvelope, EnvelopeKind } from "../../src/protocol/mesh.ts"
import { HttpMeta } from "../../src/sidecar/httpEnvelope.ts"
import { metric } from "../support/eventStreamApp.ts"
import { meshDialer } from "../support/budgetAttack.ts"
import { Cleanup, frame } from "../support/iipRaw.ts"
import { sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"
import { gate } from "../support/netnsProcess.ts"

const MiB = 1024 * 1024
const STALLED = 256
const CHUNK = Buffer.alloc(64 * 1024, 0x61)

/** Bytes queued to B on its sockets to the app (skmem r of each, `ss -tmn`), and how many sockets. */
const poolKernelBytes = (appPort: number): { readonly sockets: number; readonly bytes: number } => {
  const out = execFileSync("ss", ["-tmnH", "state", "established", `( dport = :${appPort} )`]).toString()
  let sockets = 0
  let bytes = 0
  for (const match of out.matchAll(/skmem:\(r(\d+),/g)) {
    sockets++
    bytes += Number(match[1])
  }
  return { sockets, bytes }
}

/** scripts/test-tools.sh (run by `npm test`) installs iproute2 as root; elsewhere the test says why it skips (in CI it fails). */
const ssGate = gate(
  `${STALLED} stalled downloads of 32 MiB at B's defaults pin at most ~64 MiB of receive buffers at B`,
  spawnSync("ss", ["-V"]).status === 0 ? { ok: true } : { ok: false, reason: "no ss (apt iproute2)" }
)

describe("the kernel memory of B's paused HTTP/1.1 pool sockets", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it.skipIf(ssGate.skip)(ssGate.title, { timeout: 120_000 }, async () => {
    const app = await startApp(cleanup, (_req, res) => {
      res.writeHead(200, { "content-length": String(512 * CHUNK.length) })
      let sent = 0
      const pump = () => {
        while (sent < 512) {
          sent++
          if (!res.write(CHUNK)) return void res.once("drain", pump)
        }
        res.end()
      }
      pump()
    })
    const appPort = Number(app.address.split(":").pop())
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, requestTimeoutMs: 120_000 }))
    const dialer = await meshDialer(Number(b.inboundAddress.split(":").pop()), cleanup, { streamWindow: 1 })
    const get = new Map<string, string>().set(HttpMeta.method, "GET").set(HttpMeta.authority, "catalog")
    for (let channel = 1; channel <= STALLED; channel++) dialer.write(frame(1, "/big", channel, encodeEnvelope(EnvelopeKind.request, 0, channel, get, Buffer.alloc(0), 8192)))
    // Until B took answers back (a second after their sockets paused) and its buffers and its count stopped moving: two reads 500 ms
    // apart; within 30 s, before the answer idle timeout (60 s) would end them all anyway.
    const takenBackNow = () => metric(b, /^iip_mesh_app_pool_held_taken_back_total /)
    const deadline = performance.now() + 30_000
    let last = { sockets: -1, bytes: -1, takenBack: -1 }
    for (;;) {
      const now = { ...poolKernelBytes(appPort), takenBack: await takenBackNow() }
      if (now.takenBack > 0 && now.takenBack === last.takenBack && Math.abs(now.bytes - last.bytes) <= MiB) break
      if (performance.now() > deadline) throw new Error(`B's pool sockets not settled after 30 s (before the budget: all 256 held 128-166 MiB, none taken back): ${JSON.stringify(now)}`)
      last = now
      await new Promise<void>((resolve) => setTimeout(resolve, 500))
    }
    const now = poolKernelBytes(appPort)
    const held = await metric(b, /^iip_mesh_app_pool_held_bytes /)
    const takenBack = await metric(b, /^iip_mesh_app_pool_held_taken_back_total /)
    console.log(`B: ${now.sockets} pool sockets hold ${(now.bytes / MiB).toFixed(1)} MiB in their receive queues; held gauge ${(held / MiB).toFixed(1)} MiB, ${takenBack} taken back`)
    expect(held).toBeLessThanOrEqual(64 * MiB)
    expect(takenBack).toBeGreaterThan(STALLED / 2)
    // Before: 128 MiB (all 256 sockets). The estimate is an average: allow the kept sockets more than it.
    expect(now.bytes).toBeLessThan(80 * MiB)
  })
})
