// Loaded into every iip-mesh sidecar the benches start (`node --import=<this file>`, sidecars.ts)
// and into the gRPC bench's server child (children.ts): reports each stall of the process's event
// loop over 10 ms (or BENCH_STALL_MS: the gRPC bench's --stall-ms) (stallWatch.mjs) as one JSON line on stdout, which the bench reads (sidecars.ts,
// children.ts) and counts per path over that path's measuring slices (hopStalls.ts), so a p99 or a
// slowest request can be read as a stall of one hop, and the stall as garbage collection or not.
// Not part of the sidecar: plain Node, no imports from src/, and plain JavaScript (stallWatch.mjs
// says why).
//
//   {"event":"bench-stall","endMs":1764877512345.6,"ms":84.2,"cpuMs":83.0,"gcMs":83.9,"majorGcMs":83.9}
// And every GC pause, however short (gcTail.ts lines the slowest requests up with them), one line
// per batch of gc entries node hands over; an idle process collects nothing, so writes nothing:
//   {"event":"bench-gc","startMs":1764877512301.2,"ms":0.8,"major":false}
import { constants, performance, PerformanceObserver } from "node:perf_hooks"
import { watchStalls } from "./stallWatch.mjs"

// node:fs's CommonJS exports, as src/toolkit/nodeHttp.ts takes node:http's: no ES namespace built.
const { writeSync } = process.getBuiltinModule("node:fs")

const stallMs = Number(process.env.BENCH_STALL_MS)
// One write(2) per line, not process.stdout's stream (synchronous on a pipe all the same): on a
// loaded machine an idle sidecar reports a stall every few seconds (waiting for a core), and a
// line should run as little of node's JavaScript as it can (stallWatch.mjs says why).
const write = (line) => {
  try {
    writeSync(1, line)
  } catch {
    // The bench has gone (EPIPE) or stopped reading: the line has no reader.
  }
}
const origin = performance.timeOrigin
new PerformanceObserver((list) => {
  let lines = ""
  for (const entry of list.getEntries()) {
    const major = entry.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR
    lines += `{"event":"bench-gc","startMs":${(origin + entry.startTime).toFixed(3)},"ms":${entry.duration.toFixed(3)},"major":${major}}\n`
  }
  write(lines)
}).observe({ entryTypes: ["gc"] })
watchStalls((stall) => write(`${JSON.stringify({ event: "bench-stall", ...stall })}\n`), Number.isFinite(stallMs) && stallMs > 0 ? stallMs : undefined)
