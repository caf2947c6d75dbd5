// `iip-mesh tap` and `iip-mesh stat` against an admin that answers what no sidecar writes (a rogue
// listener, or what a rogue federation peer or an IIP caller put in the names and paths a sidecar
// relays): an event that is not JSON or not a record, and names and paths with terminal escapes
// (ESC ] 52 writes the clipboard of many terminals, ESC [ 2 J clears the screen, a bidi override
// hides text). Before, the first made `tap` end with an uncaught exception, and the others were
// written to the operator's terminal as they came.
import * as http from "node:http"
import type * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { statsOf } from "../../src/telemetry/golden.ts"
import { runCli } from "../files/support.ts"
import { Cleanup } from "../support/iipRaw.ts"

let cleanup: Cleanup
beforeEach(() => {
  cleanup = new Cleanup()
})
afterEach(() => cleanup.run())

/**
 * Bounds sized for a loaded machine (a CLI start takes 2 s of CPU, 9-15 s of wall time at load 15):
 * each run ends at its exit, so a quiet machine never waits them out.
 */
const CLI_MS = 60_000
const TEST_MS = 90_000
const run = (args: ReadonlyArray<string>) => runCli(cleanup, args, CLI_MS)

const ESCAPES = "\u001b]52;c;ZWNobyBwd25lZA==\u0007\u001b[2J\u009b31m\u202e"
/** No control character (C0 but newline, DEL, C1) and no bidi control reaches the terminal. */
const TERMINAL_UNSAFE = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/

const rogueAdmin = async (handler: http.RequestListener): Promise<string> => {
  const server = http.createServer(handler)
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => new Promise<void>((resolve) => {
    server.close(() => resolve())
    server.closeAllConnections()
  }))
  return `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`
}

const record = { time: 0, direction: "inbound", service: `catalog${ESCAPES}`, caller: "-", method: "GET", path: `/items${ESCAPES}`, status: 200, latencyMs: 1, endpoint: "127.0.0.1:1", traceId: null, errorHop: "app", errorReason: `refused${ESCAPES}` }

describe("the CLI against a rogue admin", () => {
  it("tap: an event that is not a record is skipped and said on stderr; a record's escapes are shown, not acted on", async () => {
    const url = await rogueAdmin((_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" })
      res.write("event: record\ndata: {not json\n\n")
      res.write(`event: record\ndata: ${JSON.stringify({ time: "x" })}\n\n`)
      res.write(`event: record\ndata: ${JSON.stringify(record)}\n\n`)
    })
    const result = await run(["tap", "--admin", url, "--count", "1"])
    expect(result.stderr).not.toMatch(/SyntaxError|TypeError|\n\s+at /)
    expect(result.code, result.stderr).toBe(0)
    const lines = result.stdout.trim().split("\n")
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(/^1970-01-01T00:00:00\.000Z in  -->catalog\\u001b\]52;c;ZWNobyBwd25lZA==\\u0007\\u001b\[2J\\u009b31m\\u202e GET \/items\\u001b/)
    expect(result.stdout).not.toMatch(TERMINAL_UNSAFE)
    expect(result.stderr).toMatch(/2 events that are not records skipped/)
    expect(result.stderr).not.toMatch(TERMINAL_UNSAFE)
  }, TEST_MS)

  it("stat: names with escapes are shown escaped, and an error body's escapes too", async () => {
    const window = (seconds: number) => {
      const aggregate = { requests: 1, errors: 0, seconds, buckets: [1] }
      return { ...aggregate, stats: statsOf(aggregate) }
    }
    const windows = { "10s": window(10), "1m": window(60), "10m": window(600) }
    const url = await rogueAdmin((_req, res) => {
      const body = JSON.stringify({ generatedAt: 1, services: [{ service: `web${ESCAPES}`, windows }], edges: [{ caller: `a${ESCAPES}`, callee: "b", windows }], routes: [] })
      res.writeHead(200, { "content-type": "application/json" })
      res.end(body)
    })
    const failing = await rogueAdmin((_req, res) => {
      res.writeHead(500)
      res.end(`down${ESCAPES}`)
    })
    const result = await run(["stat", "--admin", `${url},${failing}`])
    expect(result.code, result.stderr).toBe(0)
    expect(result.stdout).toMatch(/^web\\u001b/m)
    expect(result.stdout).not.toMatch(TERMINAL_UNSAFE)
    expect(result.stderr).toMatch(/HTTP 500: down\\u001b/)
    expect(result.stderr).not.toMatch(TERMINAL_UNSAFE)
  }, TEST_MS)

  it("stat and stat --mesh: an admin whose answer is not a view (fields missing, of other types) is named on stderr and the others' views shown", async () => {
    const window = (seconds: number) => {
      const aggregate = { requests: 1, errors: 0, seconds, buckets: [1] }
      return { ...aggregate, stats: statsOf(aggregate) }
    }
    const windows = { "10s": window(10), "1m": window(60), "10m": window(600) }
    const golden = { generatedAt: 1, services: [{ service: "web", windows }], edges: [], routes: [] }
    const good = await rogueAdmin((req, res) => {
      res.writeHead(200, { "content-type": "application/json" })
      res.end(JSON.stringify(req.url === "/federation" ? { generatedAt: 1, peers: [], golden } : golden))
    })
    const bodies = [{ generatedAt: 1 }, { generatedAt: 1, services: [{ service: "api" }], edges: [], routes: [] }, { golden: 5, peers: 5 }]
    const rogues = await Promise.all(bodies.map((body) =>
      rogueAdmin((_req, res) => {
        res.writeHead(200, { "content-type": "application/json" })
        res.end(JSON.stringify(body))
      })
    ))
    for (const mesh of [[], ["--mesh"]]) {
      const result = await run(["stat", ...mesh, "--admin", [...rogues, good].join(",")])
      expect(result.stdout + result.stderr, mesh.join("")).not.toMatch(/TypeError|\n\s+at /)
      expect(result.code, result.stderr).toBe(0)
      expect(result.stdout, mesh.join("")).toMatch(/^web /m)
      for (const rogue of rogues) expect(result.stderr).toContain(`iip-mesh: ${rogue}: its answer is not a ${mesh.length === 0 ? "golden" : "federation"} view`)
    }
  }, TEST_MS)
})
