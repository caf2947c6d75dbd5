// bench/sidecar/procStats.ts's run-queue reading (the gRPC bench's wait for a core per call): on
// Linux a finite count of seconds that never goes back; NaN for a process that is not there.
import { describe, expect, it } from "vitest"
import { runQueueWaitOf } from "../../bench/sidecar/procStats.ts"

describe("runQueueWaitOf", () => {
  it.runIf(process.platform === "linux")("reads this process's main thread's wait for a core, in seconds, never going back", () => {
    const first = runQueueWaitOf(process.pid)
    let spin = 0
    for (let i = 0; i < 1_000_000; i++) spin += i
    const second = runQueueWaitOf(process.pid)
    expect(Number.isFinite(first) && first >= 0).toBe(true)
    expect(second).toBeGreaterThanOrEqual(first)
    expect(spin).toBeGreaterThan(0)
  })

  it("is NaN for a pid with no process", () => {
    expect(runQueueWaitOf(2 ** 22 + 1)).toBeNaN()
  })
})
