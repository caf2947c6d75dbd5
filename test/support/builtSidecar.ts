// The built CLI (dist/cli/main.js) as a sidecar in a process of its own, for the solo tests that
// measure a sidecar's memory (h2c-held-rss, pool-held-rss): built, its idle GC's malloc_trim gives
// back what it frees (a sidecar run from src/ has none), and it must be built from src/ as it is,
// else the test would measure a sidecar the branch's code is not in.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { type Cleanup, withTimeout } from "./iipRaw.ts"
import { killIfRunning, type SidecarProcess, spawnSidecarProcess } from "./sidecarProcess.ts"

const BUILT = fileURLToPath(new URL("../../dist/cli/main.js", import.meta.url))
const SRC = fileURLToPath(new URL("../../src/", import.meta.url))

/** dist/ built after src/'s last change (the build removes dist/ first, so its main.js is always new). */
const builtIsFresh = (): boolean => {
  const built = statSync(BUILT).mtimeMs
  return readdirSync(SRC, { recursive: true }).every((file) => statSync(`${SRC}${String(file)}`).mtimeMs <= built)
}

/** The built sidecar with `args` (node's `nodeArgs`), killed at cleanup; throws, saying to build, if dist/ is missing or older than src/. */
export const spawnBuiltSidecar = (cleanup: Cleanup, args: ReadonlyArray<string>, nodeArgs: ReadonlyArray<string> = []): SidecarProcess => {
  if (!existsSync(BUILT)) throw new Error(`${BUILT} is missing: npm run build first`)
  if (!builtIsFresh()) throw new Error(`${BUILT} is older than src/: npm run build first`)
  const sidecar = spawnSidecarProcess(args, nodeArgs, BUILT)
  cleanup.add(async () => {
    killIfRunning(sidecar.proc)
    await withTimeout(sidecar.exited, 10_000, "the sidecar to exit")
  })
  return sidecar
}

/** A process's resident memory now and at its peak (/proc: VmRSS, VmHWM), in bytes. */
export const memoryOf = (pid: number): { rss: number; peak: number } => {
  const status = readFileSync(`/proc/${pid}/status`, "utf8")
  const kib = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)![1]) * 1024
  return { rss: kib("VmRSS"), peak: kib("VmHWM") }
}
