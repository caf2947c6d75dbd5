// Sidecar B alone in a child process, at its defaults but for its app (test/sidecar/flood-rss.solo
// .test.ts): its memory is the process's, sampled every few ms with the bytes its
// inbound budgets count, so a flood's peak RSS can be set beside what the budgets allowed.
// Usage: node floodSidecarChild.ts APP_ADDRESS. Prints {"inbound":PORT,"pid":P} once listening; a
// line "report" on stdin prints {"report":{...}}: the peaks since start (or since the last "reset")
// of RSS, arrayBuffers, external and heapUsed, the shared budget's bytes and requests, the counted
// bytes when RSS peaked, the process's memory and budget now, and each inbound mesh connection's
// reading (paused, closed, bytes read). Any other line reports the same: "gc" after full
// collections, "reset" after the peaks are reset.
import * as Effect from "effect/Effect"
import * as Scope from "effect/Scope"
import * as readline from "node:readline"
import type * as net from "node:net"
import type { Budget } from "../../src/mux/budget.ts"
import type { Connection } from "../../src/mux/connection.ts"
import * as SidecarLive from "../../src/sidecar/sidecar.ts"
import { sidecarConfig } from "./sidecarHarness.ts"

const say = (message: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(message)}\n`)

const app = process.argv[2]!
let shared: Budget | undefined
const connections: Array<Connection> = []
const config = sidecarConfig({ service: "upload", app, requestTimeoutMs: 60_000 })
const scope = await Effect.runPromise(Scope.make())
const sidecar = await Effect.runPromise(
  SidecarLive.make(config, () => {}, {
    onInboundMeshConnection: (session) => {
      shared ??= session.connection.budget.shared
      connections.push(session.connection)
    }
  }).pipe(Scope.provide(scope))
)

const fresh = () => ({ rss: 0, arrayBuffers: 0, external: 0, heapUsed: 0, countedBytes: 0, countedRequests: 0, countedAtRssPeak: 0, samples: 0 })
let peaks = fresh()
const sample = () => {
  const usage = process.memoryUsage()
  const counted = shared?.bytes ?? 0
  peaks.samples++
  if (usage.rss > peaks.rss) {
    peaks.rss = usage.rss
    peaks.countedAtRssPeak = counted
  }
  peaks.arrayBuffers = Math.max(peaks.arrayBuffers, usage.arrayBuffers)
  peaks.external = Math.max(peaks.external, usage.external)
  peaks.heapUsed = Math.max(peaks.heapUsed, usage.heapUsed)
  peaks.countedBytes = Math.max(peaks.countedBytes, counted)
  peaks.countedRequests = Math.max(peaks.countedRequests, shared?.requests ?? 0)
}
setInterval(sample, 5).unref()

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (line === "reset") peaks = fresh()
  // "gc": what is live, after full collections (the child runs with --expose-gc).
  if (line === "gc") for (let i = 0; i < 2; i++) (globalThis as { gc?: () => void }).gc?.()
  sample()
  const now = process.memoryUsage()
  const figures = { rss: now.rss, arrayBuffers: now.arrayBuffers, external: now.external, heapUsed: now.heapUsed, counted: shared?.bytes ?? 0, requests: shared?.requests ?? 0 }
  const reading = connections.map((c) => ({ paused: c.readingPaused, closed: c.closed, bytesRead: (c.socket as net.Socket).bytesRead }))
  say({ report: { peaks, now: figures, connections: reading } })
})
say({ inbound: sidecar.inbound.port, pid: process.pid })
