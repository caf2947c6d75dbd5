// The benches' stall probe (bench/sidecar/stallWatch.mjs), quiet and busy. Quiet, JavaScript
// reads the event-loop delay histograms every 250 ms, so a stall is reported once (the two
// histograms reset in turn must not both report it), about as long as it was, placed by the next
// read after it ended (a period, 250 ms, later on a quiet machine; the full suite at load 16 made
// the timer itself 18 ms late, so the bound is not the period), with the main thread's CPU over it. Run in a child: the watch
// cannot be stopped.
import { execFile } from "node:child_process"
import { join } from "node:path"
import { promisify } from "node:util"
import { describe, expect, it } from "vitest"

const child = join(import.meta.dirname, "fixtures", "stallChild.mjs")

describe("the stall watch, quiet", () => {
  it("reports a 400 ms block of the loop once, 400 ms long, placed by a read after its end, on CPU", async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [child, "400"], { timeout: 20_000 })
    const { start, end, stalls } = JSON.parse(stdout) as { start: number; end: number; stalls: Array<{ endMs: number; ms: number; cpuMs: number; gcMs: number }> }
    const block = stalls.filter((stall) => stall.endMs >= end && stall.endMs - stall.ms <= end)
    expect(block, JSON.stringify({ start, end, stalls })).toHaveLength(1)
    const [stall] = block
    // Held over the histograms' 5 ms tick: the block less up to one tick, or more if the machine held it too.
    expect(stall!.ms).toBeGreaterThanOrEqual(end - start - 6)
    // The next read after the end: a period later, plus what a loaded machine delays the timer.
    expect(stall!.endMs - end).toBeLessThanOrEqual(1000)
    expect(stall!.cpuMs).toBeGreaterThan(0)
  })
})

describe("the stall watch, busy", () => {
  it("reports a 300 ms block of the loop once, 300 ms long, within 100 ms of its end (a quiet read: up to 250 ms), on CPU", async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [child, "300", "busy"], { timeout: 20_000 })
    const { start, end, stalls } = JSON.parse(stdout) as { start: number; end: number; stalls: Array<{ endMs: number; ms: number; cpuMs: number; gcMs: number }> }
    const block = stalls.filter((stall) => stall.endMs >= end && stall.endMs - stall.ms <= end)
    expect(block, JSON.stringify({ start, end, stalls })).toHaveLength(1)
    const [stall] = block
    expect(stall!.ms).toBeGreaterThanOrEqual(end - start - 6)
    // Busy, the 5 ms timer's next run after the end places it, not a 250 ms read.
    expect(stall!.endMs - end).toBeLessThan(100)
    expect(stall!.cpuMs).toBeGreaterThan(0)
  })
})
