// `npm run build` (and `npm install` / `npm ci`, through `prepare`): the JavaScript the shipped CLI
// runs (bin/iip-mesh.js, `npm start`, the container image). src/ stays the truth: tsc emits
// src/**/*.ts to dist/**/*.js with the same layout (imports rewritten from .ts to .js), and the
// other files the code reads at run time beside itself (dashboard.html) are copied along. Emit
// only: `npm test` typechecks, and a type error must not make `npm install` fail. dist/ is
// removed first, so a deleted source leaves nothing behind. Compiled, a sidecar starts without
// Node's type stripping (its parser alone is about 18 MB of resident memory).
import { spawnSync } from "node:child_process"
import { cpSync, readdirSync, rmSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, extname, join, relative } from "node:path"

const root = join(import.meta.dirname, "..")
const src = join(root, "src")
const dist = join(root, "dist")

rmSync(dist, { recursive: true, force: true })
const typescript = (() => {
  try {
    return createRequire(import.meta.url).resolve("typescript/package.json")
  } catch {
    return undefined
  }
})()
if (typescript === undefined) {
  process.stderr.write("build: TypeScript is not installed (a devDependency): run `npm install` with the devDependencies, or bring a dist/ built elsewhere\n")
  process.exit(1)
}
const tsc = join(dirname(typescript), "bin", "tsc")
const emitted = spawnSync(process.execPath, [tsc, "-p", join(root, "tsconfig.build.json"), "--noCheck"], { stdio: "inherit" })
if (emitted.status !== 0) {
  process.stderr.write(`build: tsc exited with ${emitted.status ?? emitted.signal}\n`)
  process.exit(1)
}
// Documentation (.md) stays in src; every other non-TypeScript file is an asset read at run time.
for (const entry of readdirSync(src, { recursive: true, withFileTypes: true })) {
  const ext = extname(entry.name)
  if (!entry.isFile() || ext === ".ts" || ext === ".md") continue
  const from = join(entry.parentPath, entry.name)
  cpSync(from, join(dist, relative(src, from)))
}
