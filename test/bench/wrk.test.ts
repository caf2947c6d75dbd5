// The sidecar bench's wrk driver (bench/sidecar/wrk.ts): its report parser on wrk 4.1's real output
// (captured into fixtures/: latencies in us, ms and s, non-2xx answers, timeouts), and the Lua
// script it writes making wrk send the bench's own request byte for byte to a real server.
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { parseArgs } from "../../bench/sidecar/options.ts"
import { SERVICE_HOST } from "../../bench/sidecar/request.ts"
import { findExecutable } from "../../bench/sidecar/which.ts"
import { parseWrkOutput, runWrk, WrkFailed, writeWrkScript } from "../../bench/sidecar/wrk.ts"
import { benchRequestServer, echo } from "../support/benchRequestServer.ts"

const fixture = (name: string) => readFileSync(join(import.meta.dirname, "fixtures", name), "utf8")

describe("wrk report parser", () => {
  it("reads requests, req/s and the latency distribution in ms and us", () => {
    expect(parseWrkOutput(fixture("wrk-ms.txt"))).toStrictEqual({
      requests: 69902,
      seconds: 2,
      rps: 34907.84,
      p50: 1.45,
      p75: 2.33,
      p90: 3.41,
      p99: 60.77,
      socketErrors: 0,
      non2xx: 0
    })
  })

  it("reads latencies printed in seconds (with wrk's trailing blank)", () => {
    const report = parseWrkOutput(fixture("wrk-seconds.txt"))
    expect(report).toMatchObject({ requests: 8, rps: 2.66, p50: 1210, p99: 1210, socketErrors: 0, non2xx: 0 })
    expect(report.seconds).toBeCloseTo(3.01, 6)
  })

  it("counts non-2xx answers and socket errors (timeouts) as errors", () => {
    const bad = parseWrkOutput(fixture("wrk-non2xx.txt"))
    expect(bad).toMatchObject({ requests: 9850, non2xx: 9850, socketErrors: 0, p50: 0.1, p99: 2.21 })
    expect(bad.seconds).toBeCloseTo(1.1, 6)
    expect(parseWrkOutput(fixture("wrk-timeouts.txt"))).toMatchObject({ requests: 2, socketErrors: 2, non2xx: 0, p99: 0 })
  })

  it("fails with what is missing when the report lacks a figure", () => {
    const withoutDistribution = fixture("wrk-ms.txt").replace(/  Latency Distribution[\s\S]*?(?=  \d+ requests)/, "")
    expect(() => parseWrkOutput(withoutDistribution)).toThrow(WrkFailed)
    expect(() => parseWrkOutput(withoutDistribution)).toThrow(/Latency Distribution/)
    expect(() => parseWrkOutput("unable to connect to 127.0.0.1:1 Connection refused\n")).toThrow(/Requests\/sec/)
  })
})

describe("wrk run", () => {
  const cleanups: Array<() => void | Promise<void>> = []
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
  })

  const wrk = findExecutable("wrk")
  it.skipIf(wrk === undefined)("sends the bench's request: POST, the 1 KiB payload byte for byte, Host of the service", async () => {
    const { seen, port } = await benchRequestServer(cleanups, echo, (req) => req.headers.host === SERVICE_HOST)
    const dir = mkdtempSync(join(tmpdir(), "wrk-test-"))
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }))

    const script = writeWrkScript(dir, "request", SERVICE_HOST)
    const report = await runWrk({ binary: wrk!, host: "127.0.0.1", port, script, connections: 2, seconds: 1 })

    expect(seen.wrong).toStrictEqual([])
    expect(report.requests).toBeGreaterThan(0)
    expect(report.requests).toBeLessThanOrEqual(seen.requests)
    expect(report.socketErrors + report.non2xx).toBe(0)
    expect(report.p50).toBeGreaterThan(0)
  })
})

describe("sidecar bench flags", () => {
  it("--only takes the C proxies beside the sidecar paths, in the bench's order", () => {
    expect(parseArgs(["--only", "haproxy,direct,nginx"]).modes).toStrictEqual(["direct", "nginx", "haproxy"])
    expect(parseArgs(["--quick"]).modes).toStrictEqual(["direct", "meshed", "mtls-off", "untraced", "nginx", "haproxy"])
  })

  it("--only names an unknown path in its error", () => {
    expect(() => parseArgs(["--only", "direct,envoy"])).toThrow(/--only: unknown envoy/)
  })
})
