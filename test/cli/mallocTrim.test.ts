// The sidecar's optional native piece (src/cli/mallocTrim.ts, native/malloc_trim.c, built by
// scripts/nativeTrim.ts): compiled with the machine's C compiler into a temp dir, loaded, and run
// after a real collection by the memory release (memoryRelease.ts) in this process, which stays up;
// a missing or broken file is a reason the sidecar logs, not a crash. Without a C compiler or glibc
// the compiled half skips with the reason (in CI, where scripts/test-tools.sh installs gcc, it fails).
import { spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { buildMallocTrim, mallocTrimFile } from "../../scripts/nativeTrim.ts"
import { glibcVersion, loadMallocTrim } from "../../src/cli/mallocTrim.ts"
import { startMemoryRelease } from "../../src/cli/memoryRelease.ts"
import { assertCapability, type Capability, gate } from "../support/netnsProcess.ts"

const dir = mkdtempSync(join(tmpdir(), "iip-mesh-trim-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** What compiling the addon needs: Linux with glibc and a C compiler. */
const trimCapability = (): Capability => {
  if (glibcVersion() === undefined) return { ok: false, reason: "not Linux with glibc" }
  const cc = process.env.CC ?? "cc"
  const probe = spawnSync(cc, ["--version"], { encoding: "utf8" })
  return probe.status === 0 ? { ok: true } : { ok: false, reason: `no C compiler (${cc}; apt-get install gcc)` }
}

describe("loading the trim", () => {
  it("a missing file is a reason, not a crash", () => {
    const loaded = loadMallocTrim(join(dir, "absent.node"))
    expect("unavailable" in loaded && loaded.unavailable).toMatch(/^no .*absent\.node \(npm install and npm run build compile it where a C compiler is/)
  })

  it("a file that is no shared object is a reason, not a crash", () => {
    const file = join(dir, "broken.node")
    writeFileSync(file, "not an ELF file")
    const loaded = loadMallocTrim(file)
    expect("unavailable" in loaded && loaded.unavailable).toMatch(/broken\.node did not load: .*broken\.node/)
  })

  it("the memory release logs the reason and runs without it", () => {
    const lines: Array<[string, unknown]> = []
    let collections = 0
    const stop = startMemoryRelease(2000, (event, fields) => lines.push([event, fields]), () => 0, () => {}, () => 0, () => void collections++, loadMallocTrim(join(dir, "absent.node")))
    stop()
    expect(collections).toBe(1)
    expect(lines).toEqual([["memory-trim", { active: false, reason: expect.stringMatching(/^no .*absent\.node/) }]])
  })
})

const capability = trimCapability()
const compiled = gate("compiled with the machine's C compiler", capability)

describe.skipIf(compiled.skip)(compiled.title, () => {
  it("builds, loads, and trims after the release's collections", async () => {
    assertCapability(capability, "a C compiler on Linux with glibc (the memory trim)")
    const build = buildMallocTrim(dir)
    expect(build).toEqual({ built: true, file: mallocTrimFile(dir) })
    const loaded = loadMallocTrim(mallocTrimFile(dir))
    if (!("trim" in loaded)) throw new Error(loaded.unavailable)
    expect(typeof loaded.trim()).toBe("boolean")

    const lines: Array<[string, Record<string, unknown>]> = []
    let trims = 0
    const counted = { trim: () => (trims++, loaded.trim()) }
    const stop = startMemoryRelease(2000, (event, fields) => lines.push([event, fields ?? {}]), () => 0, () => {}, () => 0, undefined, counted)
    stop()
    // The start-up's collection, then its trim, logged as active with what it gave back.
    expect(trims).toBe(1)
    expect(lines).toEqual([["memory-trim", { active: true, trimmedMb: expect.any(Number) }]])
  })

  it("a file built as the addon is but calling what this C library lacks fails its load, naming the symbol (the start-up checks no glibc version)", () => {
    assertCapability(capability, "a C compiler on Linux with glibc (the memory trim)")
    // The addon as scripts/nativeTrim.ts builds it (-nostdlib, -z now), its libc call renamed: what
    // the file does on a C library without malloc_trim (musl), where no report is asked first.
    const source = join(dir, "lacking.c")
    writeFileSync(source, readFileSync(join(import.meta.dirname, "..", "..", "native", "malloc_trim.c"), "utf8").replaceAll("malloc_trim", "iip_mesh_absent_trim"))
    const file = join(dir, "lacking.node")
    const cc = spawnSync(process.env.CC ?? "cc", ["-shared", "-fPIC", "-O2", "-nostdlib", "-Wl,-z,now", "-o", file, source], { encoding: "utf8" })
    expect(cc.status, cc.stderr).toBe(0)
    const loaded = loadMallocTrim(file)
    expect("unavailable" in loaded && loaded.unavailable).toMatch(/lacking\.node did not load: .*iip_mesh_absent_trim/)
  })
})
