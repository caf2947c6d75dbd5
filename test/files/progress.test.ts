// The progress meter of `iip-mesh download` and `upload`: on a terminal one line redrawn at most
// every 200 ms with bytes, rate and time left, cleared before the result; anywhere else silence.
import { describe, expect, it } from "vitest"
import { formatBytes, formatProgress, ProgressMeter, resultLine } from "../../src/files/progress.ts"

const MiB = 1024 * 1024

const sink = (isTTY: boolean) => {
  const writes: Array<string> = []
  return { isTTY, writes, write: (text: string) => writes.push(text) }
}

describe("progress meter", () => {
  it("on a terminal: redraws with bytes, percentage, rate and time left, throttled, and clears itself", () => {
    const terminal = sink(true)
    let now = 1000
    const meter = new ProgressMeter(terminal, () => now)
    meter.update({ done: 0, total: 12 * MiB, resumedFrom: 0 })
    now += 100
    meter.update({ done: MiB, total: 12 * MiB, resumedFrom: 0 }) // within 200 ms: not drawn
    now += 900
    meter.update({ done: 4 * MiB, total: 12 * MiB, resumedFrom: 0 })
    now += 10
    meter.update({ done: 12 * MiB, total: 12 * MiB, resumedFrom: 0 }) // the last one always is
    meter.finish()
    expect(terminal.writes).toStrictEqual([
      "\r0 B / 12.0 MiB (0%)  0 B/s\x1b[K",
      "\r4.0 MiB / 12.0 MiB (33%)  4.0 MiB/s  0:02 left\x1b[K",
      "\r12.0 MiB / 12.0 MiB (100%)  11.9 MiB/s  0:00 left\x1b[K",
      "\r\x1b[K"
    ])
  })

  it("counts the rate from where a resumed transfer started, and shows bytes and rate alone without a total", () => {
    expect(formatProgress({ done: 6 * MiB, total: 8 * MiB, resumedFrom: 4 * MiB }, 1000)).toBe("6.0 MiB / 8.0 MiB (75%)  2.0 MiB/s  0:01 left")
    expect(formatProgress({ done: 3 * MiB, total: undefined, resumedFrom: 0 }, 2000)).toBe("3.0 MiB  1.5 MiB/s")
    expect(formatProgress({ done: 0, total: 100 * 1024 ** 3, resumedFrom: 0 }, 0)).toBe("0 B / 100.0 GiB (0%)  0 B/s")
    expect(formatProgress({ done: MiB, total: 7201 * MiB, resumedFrom: 0 }, 1000)).toBe("1.0 MiB / 7.0 GiB (0%)  1.0 MiB/s  2:00:00 left")
  })

  it("piped: writes nothing at all", () => {
    const pipe = sink(false)
    const meter = new ProgressMeter(pipe, () => 0)
    meter.update({ done: 0, total: MiB, resumedFrom: 0 })
    meter.update({ done: MiB, total: MiB, resumedFrom: 0 })
    meter.finish()
    expect(pipe.writes).toStrictEqual([])
  })

  it("formats sizes in binary units and the result line with the resume point and the verification", () => {
    expect([1023, 1024, 1536, MiB * 1.25, 1024 ** 4 * 2].map(formatBytes)).toStrictEqual(["1023 B", "1.0 KiB", "1.5 KiB", "1.3 MiB", "2.0 TiB"])
    const sha = "ab".repeat(32)
    expect(resultLine("downloaded", "a.bin", "b.bin", { bytes: 10, resumedFrom: 4, sha256: sha, verified: true, elapsedMs: 1234 })).toBe(
      `downloaded a.bin -> b.bin: 10 bytes in 1.23 s, resumed at 4, sha256 ${sha} (verified by the server)`
    )
    expect(resultLine("uploaded", "a.bin", "b.bin", { bytes: 10, resumedFrom: 0, sha256: sha, verified: false, elapsedMs: 5 })).toBe(
      `uploaded a.bin -> b.bin: 10 bytes in 0.01 s, sha256 ${sha} (not verified: the server has no /file_checksum)`
    )
  })
})
