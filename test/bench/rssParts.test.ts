// bench/sidecar/rssParts.ts: a process's RSS by region, read from /proc/<pid>/smaps. On Linux the
// regions of this (node) process add up to its VmRSS, its binary's code pages among them; a pid
// with no process gives undefined, which the bench prints as "-".
import { describe, expect, it } from "vitest"
import { rssMb } from "../../bench/sidecar/procStats.ts"
import { formatRssParts, rssParts } from "../../bench/sidecar/rssParts.ts"

describe("rssParts", () => {
  it.runIf(process.platform === "linux")("splits this process's RSS into regions that add up to it, its binary's code pages among them", () => {
    const before = rssMb(process.pid)
    const parts = rssParts(process.pid)
    const after = rssMb(process.pid)
    expect(parts).toBeDefined()
    const { exeText, otherFiles, brk, jitCode, otherAnon } = parts!
    expect(exeText).toBeGreaterThan(1)
    for (const part of [otherFiles, brk, jitCode, otherAnon]) expect(part).toBeGreaterThanOrEqual(0)
    const sum = exeText + otherFiles + brk + jitCode + otherAnon
    // Reading smaps allocates, so the RSS may move a little between the readings.
    expect(sum).toBeGreaterThan(Math.min(before, after) - 2)
    expect(sum).toBeLessThan(Math.max(before, after) + 2)
    expect(formatRssParts(parts)).toMatch(/^text \d+\.\d files \d+\.\d brk \d+\.\d jit \d+\.\d anon \d+\.\d$/)
  })

  it("is undefined for a pid with no process, printed as -", () => {
    expect(rssParts(2 ** 22 + 1)).toBeUndefined()
    expect(formatRssParts(undefined)).toBe("-")
  })
})
