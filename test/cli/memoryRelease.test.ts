// When the sidecar gives memory back after a burst (src/cli/memoryRelease.ts): the decision from
// the samples alone, no timers. Quiet means under 5 % of a core; a release needs both the quiet
// time and a tenth of growth above where the last release left the process; and the one collection
// at start.
import { describe, expect, it } from "vitest"
import { type MemorySample, ReleaseDecider, startMemoryRelease } from "../../src/cli/memoryRelease.ts"

const MB = 1024 * 1024
/** A one-second sample: `cpuMs` of CPU time used in it, resident size `rssMb`. */
const second = (cpuMs: number, rssMb: number): MemorySample => ({ cpuMicros: cpuMs * 1000, rssBytes: rssMb * MB, elapsedMs: 1000 })

describe("ReleaseDecider", () => {
  it("releases once the process has been quiet for the quiet time after growing by more than a tenth", () => {
    const decider = new ReleaseDecider(2000, 100 * MB)
    expect(decider.observe(second(400, 180))).toBe(false) // the burst: busy
    expect(decider.observe(second(10, 180))).toBe(false) // quiet 1 s of 2
    expect(decider.observe(second(10, 180))).toBe(true)
  })

  it("never releases while busy, however large the process", () => {
    const decider = new ReleaseDecider(1000, 100 * MB)
    for (let i = 0; i < 20; i++) expect(decider.observe(second(300, 400))).toBe(false)
  })

  it("a busy second restarts the quiet time", () => {
    const decider = new ReleaseDecider(2000, 100 * MB)
    expect(decider.observe(second(0, 150))).toBe(false)
    expect(decider.observe(second(60, 150))).toBe(false) // 6 % of a core: busy
    expect(decider.observe(second(0, 150))).toBe(false)
    expect(decider.observe(second(0, 150))).toBe(true)
  })

  it("does not release a quiet process that has not grown a tenth, and after a release waits for growth above where it left it", () => {
    const decider = new ReleaseDecider(1000, 100 * MB)
    expect(decider.observe(second(0, 110))).toBe(false) // exactly a tenth: not above it
    expect(decider.observe(second(0, 111))).toBe(true)
    decider.released(105 * MB)
    expect(decider.observe(second(0, 111))).toBe(false)
    expect(decider.observe(second(0, 115))).toBe(false)
    expect(decider.observe(second(0, 116))).toBe(true)
  })
})

describe("startMemoryRelease", () => {
  it("collects the start-up's garbage once, at once, before any check", () => {
    let collections = 0
    const lines: Array<string> = []
    const stop = startMemoryRelease(2000, (event) => lines.push(event), () => {
      collections += 1
    })
    try {
      expect(collections).toBe(1)
      expect(lines).toEqual([]) // the start-up's collection is not logged as a release
    } finally {
      stop()
    }
  })
})
