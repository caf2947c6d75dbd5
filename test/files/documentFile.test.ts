// readDocumentFile (src/iip/documentFile.ts), which the policy and routes files are read through,
// held to its size limit by what a read gives, not by what a stat by name said: a file that grows
// or is swapped between the two, or whose size says 0 (/proc), is still read at most to the limit.
import * as Result from "effect/Result"
import { readFileSync } from "node:fs"
import { describe, expect, it } from "vitest"
import { readDocumentFile } from "../../src/iip/documentFile.ts"

describe("readDocumentFile", () => {
  it("refuses a file whose stat'ed size is under the limit but whose content is over it", async () => {
    // /proc/self/status: a regular file of size 0 with about 1.5 KB to read.
    expect(readFileSync("/proc/self/status").length).toBeGreaterThan(100)
    const read = await readDocumentFile("/proc/self/status", 100, "policy file")
    expect(read).toStrictEqual(Result.fail("more than the 100 bytes a policy file may hold (read, though its size said 0)"))
  })
})
