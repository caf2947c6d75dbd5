// fitToFileLimit (src/sidecar/fileLimit.ts): the caps a sidecar keeps under an open-file limit.
import { describe, expect, it } from "vitest"
import { type FileCaps, fitToFileLimit, UNCOUNTED_RESERVE } from "../../src/sidecar/fileLimit.ts"

const defaults: FileCaps = { inboundConnections: 1000, appConnections: 8192, adminConnections: 256, appPoolSize: 256, maxTunnels: 1024 }
const descriptors = (caps: FileCaps) => 2 * caps.inboundConnections + 16 + caps.appConnections + 2 * caps.adminConnections + caps.appPoolSize + caps.maxTunnels

describe("fitToFileLimit", () => {
  it("keeps the caps as they are when the limit holds them all", () => {
    expect(fitToFileLimit(defaults, 1_048_576, 30)).toBe(defaults)
    expect(fitToFileLimit(defaults, descriptors(defaults) + 30 + UNCOUNTED_RESERVE, 30)).toBe(defaults)
  })

  it.each([256, 1024, 4096, 12_000])("under a limit of %i, scales every cap by one factor to fit what the limit leaves", (limit) => {
    const caps = fitToFileLimit(defaults, limit, 30)
    expect(descriptors(caps)).toBeLessThanOrEqual(limit - 30 - UNCOUNTED_RESERVE)
    expect(caps.inboundConnections).toBeLessThan(defaults.inboundConnections)
    // One factor: the inbound listener keeps its part of the outbound's (within rounding).
    expect(Math.abs(caps.appConnections / caps.inboundConnections - 8.192)).toBeLessThan(8.192 * 0.2)
  })

  it("fits under every limit, down to where every cap is at its floor (the floors are not added past what the limit leaves)", () => {
    const floors = fitToFileLimit(defaults, 0, 0)
    const misfits: Array<string> = []
    for (let limit = 64; limit <= 13_000; limit++) {
      const caps = fitToFileLimit(defaults, limit, 30)
      if (descriptors(caps) > limit - 30 - UNCOUNTED_RESERVE && descriptors(caps) > descriptors(floors)) misfits.push(`${limit}: ${JSON.stringify(caps)}`)
    }
    expect(misfits).toStrictEqual([])
  })

  it("leaves every listener a place or two under a limit too low for anything", () => {
    expect(fitToFileLimit(defaults, 64, 40)).toStrictEqual({ inboundConnections: 2, appConnections: 2, adminConnections: 2, appPoolSize: 2, maxTunnels: 2 })
  })
})
