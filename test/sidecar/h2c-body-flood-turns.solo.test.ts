// A's event loop while callers flood its outbound h2c listener with uploads: 100 connections x 16
// uploads of 2 MiB to an app at B that never reads them (h2c-body-flood-rss.solo.test.ts's flood,
// which saw A's health GET wait 1.1-1.5 s at the burst's start). A's longest turn ran 131-275 ms of
// CPU (5 runs at load 8-13; the reads of every connection's window at once: 6 MiB, 100 session
// set-ups and 1,600 stream opens in the first, 20-39 MiB in later ones), and a caller's request waits
// a turn at each of its steps; with the h2c reads' turn budget (src/mux/turnReads.ts) 46-68 ms (8 runs, load 8-16).
// A is the built CLI in a process of its own with test/support/turnWatch.mjs, which reports its turns
// by CPU time (not wall time: on a loaded machine that is mostly the wait for a core). Solo: it
// pushes ~100 MB on loopback.
import * as http from "node:http"
import { fileURLToPath } from "node:url"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { spawnBuiltSidecar } from "../support/builtSidecar.ts"
import { floodUploads } from "../support/h2cUploadFlood.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"
import { portOf } from "../support/sidecarProcess.ts"

const MiB = 1024 * 1024
const CONNECTIONS = 100
const UPLOADS = 16
const BODY = 2 * MiB
const TURN_WATCH = fileURLToPath(new URL("../support/turnWatch.mjs", import.meta.url))
/** A turn's CPU, its GC pauses' included, at most. */
const TURN_CPU_MS = 100

/** One of A's turns over 20 ms of CPU (turnWatch.mjs's line). */
interface Turn {
  fromMs: number
  toMs: number
  cpuMs: number
}

describe("A's event loop under a flood of h2c uploads", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it(`${CONNECTIONS} connections x ${UPLOADS} uploads of 2 MiB: no turn of A's loop runs over ${TURN_CPU_MS} ms of CPU`, { timeout: 180_000 }, async () => {
    const parked: Array<http.ServerResponse> = []
    const app = await startApp(cleanup, (_req, res) => void parked.push(res))
    cleanup.add(() => parked.splice(0).forEach((res) => res.destroy()))
    const b = await startSidecar(cleanup, sidecarConfig({ service: "store", app: app.address, requestTimeoutMs: 120_000 }))
    // The flags bin/iip-mesh.js ships with. No idle GC: its one full collection, when no request came
    // for 2 s, is a turn of its own by design (84 ms of CPU once, 14 s in), not the flood's.
    const a = spawnBuiltSidecar(
      cleanup,
      ["--service", "shop", "--endpoint", `store=${b.inboundAddress}`, "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--request-timeout", "120000", "--idle-gc", "off"],
      ["--max-semi-space-size=2", "--v8-pool-size=1", `--import=${TURN_WATCH}`]
    )
    const ready = await a.ready
    // A's start is over (its loop turned to answer): its turns from here on are the flood's.
    expect((await fetch(`http://${ready.admin}/health`)).status).toBe(200)
    const floodAt = performance.timeOrigin + performance.now()

    // The flood is over when the callers' sockets have written nothing more for 3 s (A takes no more; 1 s was seen at load 13 with the flood under way).
    const last = await floodUploads(cleanup, portOf(ready.outbound), CONNECTIONS, UPLOADS, Buffer.alloc(BODY, 0x61), 3000)

    const turns = a
      .stderr()
      .split("\n")
      .filter((line) => line.startsWith("turn-watch "))
      .map((line) => JSON.parse(line.slice("turn-watch ".length)) as Turn)
      .filter((turn) => turn.toMs > floodAt)
      .sort((x, y) => y.cpuMs - x.cpuMs)
    const show = (turn: Turn) => `${(turn.fromMs - floodAt).toFixed(0)} ms in: ${turn.cpuMs.toFixed(0)} ms CPU over ${(turn.toMs - turn.fromMs).toFixed(0)} ms`
    console.log(`the callers wrote ${(last / MiB).toFixed(0)} MiB; A's turns over 20 ms of CPU: ${turns.length}; the longest: ${turns.slice(0, 5).map(show).join("; ")}`)
    expect(last).toBeGreaterThan(32 * MiB)
    expect(turns[0]?.cpuMs ?? 0).toBeLessThan(TURN_CPU_MS)
  })
})
