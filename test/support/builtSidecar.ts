// The built CLI (dist/cli/main.js) for tests that measure a sidecar's process alone
// (test/sidecar/*-rss.solo.test.ts): its path, a check that it is as new as src/, and the
// process's memory read from /proc.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs"
import { fileURLToPath } from "node:url"

export const BUILT = fileURLToPath(new URL("../../dist/cli/main.js", import.meta.url))
const SRC = fileURLToPath(new URL("../../src/", import.meta.url))

/** Throws unless dist/ was built after src/'s last change (the build removes dist/ first, so its main.js is always new): else the test would measure a sidecar the branch's code is not in. */
export const requireFreshBuild = (): void => {
  if (!existsSync(BUILT)) throw new Error(`${BUILT} is missing: npm run build first`)
  const built = statSync(BUILT).mtimeMs
  if (!readdirSync(SRC, { recursive: true }).every((file) => statSync(`${SRC}${String(file)}`).mtimeMs <= built)) throw new Error(`${BUILT} is older than src/: npm run build first`)
}

/** The process's resident memory now and at its peak (/proc: VmRSS, VmHWM), in bytes. */
export const memoryOf = (pid: number): { rss: number; peak: number } => {
  const status = readFileSync(`/proc/${pid}/status`, "utf8")
  const kib = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)![1]) * 1024
  return { rss: kib("VmRSS"), peak: kib("VmHWM") }
}
