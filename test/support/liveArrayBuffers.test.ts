// The memory figure the back-pressure and hostile-input tests bound (iipRaw.ts liveArrayBuffers)
// must count live ArrayBuffers only. V8 frees a collected buffer's memory on a background thread
// after the collection; on a loaded machine that thread has often not run when the figure is read,
// and a suite run saw 34 MB of a test's own garbage counted as what the server held.
import { expect, it } from "vitest"
import { liveArrayBuffers } from "./iipRaw.ts"

const MiB = 1024 * 1024

it("liveArrayBuffers does not count ArrayBuffers that are garbage", () => {
  const before = liveArrayBuffers()
  const worst = { grown: 0 }
  for (let round = 0; round < 20; round++) {
    // 32 MiB that is garbage once the round ends.
    let garbage: Array<Buffer> | undefined = Array.from({ length: 256 }, (_, i) => Buffer.alloc(128 * 1024, i))
    expect(garbage.length).toBe(256)
    garbage = undefined
    worst.grown = Math.max(worst.grown, liveArrayBuffers() - before)
  }
  expect(worst.grown).toBeLessThan(4 * MiB)
})
