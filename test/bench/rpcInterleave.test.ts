// The rpc bench's interleaved mode (bench/rpc.ts interleavedLoop, `--interleave MS`): transports
// take turns in slices; a transport's calls run only on its turns, and each is measured for the
// same time. Two fake transports whose calls take 2 ms each stand in for IIP and the socket.
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { interleavedLoop } from "../../bench/rpc.ts"

describe("interleavedLoop", () => {
  it("runs one transport at a time and measures each for the same time", async () => {
    const running = [0, 0]
    let overlapped = 0
    const answer = "x".repeat(1024)
    const call = (k: number) =>
      Effect.suspend(() => {
        running[k]!++
        return Effect.sleep(2).pipe(Effect.ensuring(Effect.sync(() => running[k]!--)), Effect.as(answer))
      }).pipe(Effect.tap(() => Effect.sync(() => {
        // A call of the other transport still running when this one ended: allowed only in the settling gap.
        if (running[1 - k]! > 0) overlapped++
      })))
    const samples = await Effect.runPromise(interleavedLoop([call(0), call(1)], [process.pid, process.pid], 4, 40, 300, 30))
    expect(samples).toHaveLength(2)
    for (const sample of samples) {
      // 4 calls in flight of 2 ms: at most 2,000 a second, and not far below on a quiet loop.
      expect(sample.rps).toBeGreaterThan(200)
      expect(sample.rps).toBeLessThan(2100)
      expect(sample.p50).toBeGreaterThanOrEqual(1.9)
      expect(sample.cpuUs).toBeGreaterThan(0)
    }
    // Same calls, same measured time: neither transport gets three times the other's share.
    expect(samples[0]!.rps / samples[1]!.rps).toBeGreaterThan(1 / 3)
    expect(samples[0]!.rps / samples[1]!.rps).toBeLessThan(3)
    // Turns hand over only once: a handful of calls overlap per turn, not the whole run.
    expect(overlapped).toBeLessThan(200)
  })
})
