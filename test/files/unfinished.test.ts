// The unfinished-upload table (src/files/unfinished.ts) on its own: ages on the monotonic times the
// sweep passes, and a partial found at start dated once by its mtime against the wall time of the
// first sweep. No server, no Clock: the sweep's two readings are given directly.
// - Found at start with an mtime in the future (the wall clock stepped back since its last write):
//   taken as written at the first sweep, so it goes once the age has passed, not kept until its
//   mtime plus the age.
// - Found at start younger than the age: it goes when the rest of its age has passed on the
//   monotonic clock, whatever the wall clock does after the first sweep.
// And idle ones (not written for the idle time, as of the last sweep), which a request short of
// quota removes: oldest first, none written since, none before the first sweep. And their bytes,
// which the share of the quota unfinished uploads may take is checked against.
import { describe, expect, it } from "vitest"
import { defaultMaxUnfinishedUploads, UnfinishedUploads } from "../../src/files/unfinished.ts"

const maxAgeMs = 60_000
const DAY_MS = 24 * 3_600_000
/** The wall time of the first sweep, and its monotonic time (a TestClock's starts at 0). */
const wallAtStart = 1_800_000_000_000
const startMs = 0

describe("unfinished uploads found at start", () => {
  it("one dated a day in the future counts as written at the first sweep: it goes once the age has passed, not a day later", () => {
    const uploads = new UnfinishedUploads(maxAgeMs, defaultMaxUnfinishedUploads, 0)
    uploads.found("future.bin.iip-part", wallAtStart + DAY_MS, 0)
    expect(uploads.expired(startMs, wallAtStart)).toEqual([])
    expect(uploads.expired(startMs + maxAgeMs - 1, wallAtStart + maxAgeMs - 1)).toEqual([])
    expect(uploads.expired(startMs + maxAgeMs, wallAtStart + maxAgeMs)).toEqual(["future.bin.iip-part"])
  })

  it("one younger than the age goes when the rest of its age has passed on the monotonic clock, the wall clock stepped back a day after the first sweep", () => {
    const uploads = new UnfinishedUploads(maxAgeMs, defaultMaxUnfinishedUploads, 0)
    uploads.found("young.bin.iip-part", wallAtStart - 30_000, 0)
    uploads.found("old.bin.iip-part", wallAtStart - maxAgeMs, 0)
    expect(uploads.expired(startMs, wallAtStart)).toEqual(["old.bin.iip-part"])
    uploads.forget("old.bin.iip-part")
    expect(uploads.expired(startMs + 29_999, wallAtStart - DAY_MS)).toEqual([])
    expect(uploads.expired(startMs + 30_000, wallAtStart - DAY_MS)).toEqual(["young.bin.iip-part"])
  })

  it("one written before the first sweep ages from that sweep, not from its mtime", () => {
    const uploads = new UnfinishedUploads(maxAgeMs, defaultMaxUnfinishedUploads, 0)
    uploads.found("resumed.bin.iip-part", wallAtStart - 2 * maxAgeMs, 0)
    uploads.written("resumed.bin.iip-part")
    expect(uploads.expired(startMs, wallAtStart)).toEqual([])
    expect(uploads.expired(startMs + maxAgeMs - 1, wallAtStart)).toEqual([])
    expect(uploads.expired(startMs + maxAgeMs, wallAtStart)).toEqual(["resumed.bin.iip-part"])
  })
})

describe("idle unfinished uploads", () => {
  it("are those unwritten for the idle time as of the last sweep, oldest first; a write takes one out", () => {
    const idleMs = 10_000
    const uploads = new UnfinishedUploads(maxAgeMs, defaultMaxUnfinishedUploads, idleMs)
    expect(uploads.sweepEveryMs).toBe(idleMs / 8)
    uploads.found("old.bin.iip-part", wallAtStart - 5_000, 0)
    uploads.admit("new.bin.iip-part")
    // Before the first sweep nothing is known to be idle, even one found old.
    expect(uploads.idle()).toEqual([])
    uploads.expired(startMs, wallAtStart)
    expect(uploads.idle()).toEqual([])
    uploads.expired(startMs + 5_000, wallAtStart + 5_000)
    expect(uploads.idle()).toEqual(["old.bin.iip-part"])
    uploads.expired(startMs + idleMs, wallAtStart + idleMs)
    expect(uploads.idle()).toEqual(["old.bin.iip-part", "new.bin.iip-part"])
    uploads.written("old.bin.iip-part")
    expect(uploads.stillUnwritten("old.bin.iip-part")).toBe(false)
    expect(uploads.idle()).toEqual(["new.bin.iip-part"])
    expect(new UnfinishedUploads(maxAgeMs, defaultMaxUnfinishedUploads, 0).sweepEveryMs).toBe(maxAgeMs / 8)
  })
})

describe("the unfinished uploads' bytes", () => {
  it("count those found at start, follow each one's size, and go with it when it finishes or is removed", () => {
    const uploads = new UnfinishedUploads(maxAgeMs, defaultMaxUnfinishedUploads, 0)
    uploads.found("found.bin.iip-part", wallAtStart, 70)
    expect(uploads.admit("new.bin.iip-part")).toBe(true)
    uploads.sized("new.bin.iip-part", 10)
    expect(uploads.bytes).toBe(80)
    uploads.sized("new.bin.iip-part", 4)
    uploads.sized("unknown.bin.iip-part", 1000)
    expect(uploads.bytes).toBe(74)
    expect([uploads.bytesOf("new.bin.iip-part"), uploads.bytesOf("unknown.bin.iip-part")]).toStrictEqual([4, 0])
    uploads.forget("found.bin.iip-part")
    uploads.forget("found.bin.iip-part")
    expect(uploads.bytes).toBe(4)
    uploads.forget("new.bin.iip-part")
    expect(uploads.bytes).toBe(0)
  })
})
