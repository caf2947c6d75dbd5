// Loaded into a sidecar a test starts in a process of its own (`node --import=<this file>`,
// h2c-body-flood-turns.solo.test.ts): each turn of its event loop whose main thread ran over
// TURN_WATCH_MS of CPU (its GC pauses' included), as a line on stderr. CPU time, not wall time:
// on a loaded machine a turn's wall time is mostly the wait for a core, which is not the sidecar's
// doing; its CPU time is. A 1 ms timer runs once a turn while the loop is busy, so the time between
// two runs is one turn. Plain JavaScript with no imports from src/ (a .ts file would load node's
// TypeScript stripper into the sidecar).
//
//   turn-watch {"fromMs":1765140000000.1,"toMs":1765140000210.4,"cpuMs":201.3}
import { performance } from "node:perf_hooks"

// node:fs's CommonJS exports (no ES namespace built); one write(2) a line.
const { writeSync } = process.getBuiltinModule("node:fs")
const over = Number(process.env.TURN_WATCH_MS ?? 20)
const origin = performance.timeOrigin
const write = (line) => {
  try {
    writeSync(2, `turn-watch ${line}\n`)
  } catch {
    // The test has gone: the line has no reader.
  }
}

let last = performance.now()
let cpu = process.threadCpuUsage()
setInterval(() => {
  const now = performance.now()
  const cpuNow = process.threadCpuUsage()
  const cpuMs = (cpuNow.user - cpu.user + cpuNow.system - cpu.system) / 1000
  if (cpuMs > over) write(`{"fromMs":${(origin + last).toFixed(1)},"toMs":${(origin + now).toFixed(1)},"cpuMs":${cpuMs.toFixed(1)}}`)
  last = now
  cpu = cpuNow
}, 1).unref()
