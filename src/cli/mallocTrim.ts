// The sidecar's optional native piece, loaded by the memory release (memoryRelease.ts) when it
// starts: glibc's malloc_trim(0) through native/malloc_trim.c, which the build compiles into
// dist/native/malloc_trim.node where a C compiler is present (scripts/nativeTrim.ts). Called right
// after the idle collection, it hands back the free memory glibc keeps in holes between live chunks
// after a burst (V8's compiler zones and threads), which no tunable reaches: 10 s after a
// 64-connection burst a sidecar held 72.5-75.9 MB with it, 75.0-85.5 without (README, "Sidecar
// memory"). Only on Linux with glibc; anywhere else, or when the file is missing or does
// not load, the sidecar runs without it and says why once.
import { existsSync } from "node:fs"
import { constants } from "node:os"
import { fileURLToPath } from "node:url"

/** Gives glibc's free malloc memory back to the system; true when there was some. */
export type Trim = () => boolean

/** The trim, or why there is none. */
export type MallocTrim = { readonly trim: Trim } | { readonly unavailable: string }

/** Where the build puts it: dist/native/ beside dist/cli/ (a sidecar run from src/ has none). */
const builtFile = fileURLToPath(new URL("../native/malloc_trim.node", import.meta.url))

/** glibc's version where this process runs on it (process.report's header; musl and others have none). */
export const glibcVersion = (): string | undefined => {
  if (process.platform !== "linux") return undefined
  // Without the network interfaces the report takes about 5 ms instead of 25; the setting is put back.
  // (@types/node does not declare excludeNetwork, Node 24 has it.)
  const report = process.report as NodeJS.ProcessReport & { excludeNetwork: boolean }
  const excluded = report.excludeNetwork
  report.excludeNetwork = true
  try {
    return (report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime
  } finally {
    report.excludeNetwork = excluded
  }
}

/** Loads the addon at `file`; never throws (a missing or broken file is a reason, not a crash). */
export const loadMallocTrim = (file: string = builtFile): MallocTrim => {
  if (process.platform !== "linux") return { unavailable: `malloc_trim is glibc's, and this is ${process.platform}` }
  // The build makes no file without glibc. No glibcVersion() here: the report behind it takes
  // milliseconds and pages ~0.8 MB of node's report code into every idle sidecar (issue 14), and a
  // file carried to a C library without malloc_trim (the addon is linked -nostdlib, the symbol
  // left to the process) fails the RTLD_NOW load below with that symbol named.
  if (!existsSync(file)) return { unavailable: `no ${file} (npm install and npm run build compile it where a C compiler is; a sidecar run from src/ has none)` }
  const module = { exports: {} as { trim?: unknown } }
  try {
    // RTLD_NOW: every symbol resolved here, so a C library without malloc_trim fails this load, not a later call.
    process.dlopen(module, file, constants.dlopen.RTLD_NOW)
  } catch (error) {
    return { unavailable: `${file} did not load: ${error instanceof Error ? error.message : String(error)}` }
  }
  const trim = module.exports.trim
  if (typeof trim !== "function") return { unavailable: `${file} has no trim()` }
  return { trim: () => trim() === true }
}
