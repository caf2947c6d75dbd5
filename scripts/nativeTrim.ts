// The optional native piece of the build (scripts/build.ts, so `npm install` and `npm run build`):
// native/malloc_trim.c compiled into <dist>/native/malloc_trim.node, which the sidecar loads to give
// glibc's free malloc memory back after its idle collection (src/cli/mallocTrim.ts; README,
// "Memory"). Nothing is downloaded and node-gyp is not used: the C file declares what it calls, so
// `cc` alone builds it. Only on Linux with glibc, and only where a C compiler is present; otherwise
// the build says in one line why memory trim is unavailable and everything else works (the sidecar
// logs the same at start).
import { spawnSync } from "node:child_process"
import { mkdirSync, renameSync, rmSync } from "node:fs"
import { join } from "node:path"
import { glibcVersion } from "../src/cli/mallocTrim.ts"

const source = join(import.meta.dirname, "..", "native", "malloc_trim.c")

/** Where the sidecar looks for the addon under a build's output directory (dist/ or a test's copy). */
export const mallocTrimFile = (outDir: string): string => join(outDir, "native", "malloc_trim.node")

export type NativeBuild = { readonly built: true; readonly file: string } | { readonly built: false; readonly reason: string }

/**
 * Compiles the addon with `$CC` (default `cc`) into `mallocTrimFile(outDir)`, through a temporary
 * file renamed into place (a process may have the old one loaded). Never throws: what went wrong is
 * the reason.
 */
export const buildMallocTrim = (outDir: string): NativeBuild => {
  if (process.platform !== "linux") return { built: false, reason: `malloc_trim is glibc's, and this is ${process.platform}` }
  if (glibcVersion() === undefined) return { built: false, reason: "this Linux's C library is not glibc (malloc_trim is glibc's)" }
  const cc = process.env.CC ?? "cc"
  const file = mallocTrimFile(outDir)
  const partial = `${file}.${process.pid}.tmp`
  mkdirSync(join(outDir, "native"), { recursive: true })
  const run = spawnSync(cc, ["-shared", "-fPIC", "-O2", "-nostdlib", "-Wl,-z,now", "-o", partial, source], { encoding: "utf8" })
  if (run.error !== undefined || run.status !== 0) {
    rmSync(partial, { force: true })
    const why = run.error !== undefined ? (run.error as NodeJS.ErrnoException).code === "ENOENT" ? `no C compiler (${cc}); apt-get install gcc` : run.error.message : `${cc} failed (exit ${run.status}): ${run.stderr.trim().split("\n").slice(0, 3).join(" / ")}`
    return { built: false, reason: why }
  }
  renameSync(partial, file)
  return { built: true, file }
}
