// Subsets of a service's endpoints (src/balancer/subsets.ts) when discovery reports endpoints with
// many distinct version labels (any host on an mDNS link can announce instances of a service, each
// with a version of its own): the exclusion sets are built for at most MaxSubsetsPerService of
// them, so one update costs time and memory in proportion to the endpoints, not their square.
import { describe, expect, it } from "vitest"
import { MaxSubsetsPerService, subsetExclusions } from "../../src/balancer/subsets.ts"
import { threadCpuMs } from "../support/offCore.ts"

const member = (i: number, subset: string | undefined) => ({ id: `10.0.${i >> 8}.${i & 255}:80`, subset })

describe("subsetExclusions", () => {
  it("per subset, the endpoints outside it; unlabelled endpoints are outside every subset", () => {
    const exclusions = subsetExclusions([member(1, "v1"), member(2, "v2"), member(3, undefined), member(4, "v1")])
    expect([...exclusions.keys()]).toStrictEqual(["v1", "v2"])
    expect([...exclusions.get("v1")!]).toStrictEqual(["10.0.0.2:80", "10.0.0.3:80"])
    expect([...exclusions.get("v2")!]).toStrictEqual(["10.0.0.1:80", "10.0.0.3:80", "10.0.0.4:80"])
  })

  it("1,000 endpoints with 1,000 distinct versions: the first MaxSubsetsPerService labels (as listed) are subsets, the others none, in bounded time", () => {
    const members = Array.from({ length: 1000 }, (_, i) => member(i, `v${i}`))
    // Its cost as the main thread's CPU, not the wall clock: at load 17-19 a wall-clock 142 ms held
    // the time the process waited for a core (1 run in 8 over the 100 ms bound).
    const { value: exclusions, ms: elapsed } = threadCpuMs(() => subsetExclusions(members))
    console.log(`subsets: 1,000 distinct versions took ${elapsed.toFixed(1)} ms of CPU`)
    expect(exclusions.size).toBe(MaxSubsetsPerService)
    expect(exclusions.has("v0")).toBe(true)
    expect(exclusions.has(`v${MaxSubsetsPerService}`)).toBe(false)
    expect(exclusions.get("v0")!.size).toBe(999)
    // Before the bound: 366 ms and 26 MB for this one call, and 21 s for the thousand calls of a flood of Adds.
    expect(elapsed).toBeLessThan(100)
  })
})
