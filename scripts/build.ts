// `npm run build` (and `npm install` / `npm ci`, through `prepare`): the JavaScript the shipped CLI
// runs (bin/iip-mesh.js, `npm start`, the container image). src/ stays the truth: rolldown bundles
// src/cli/main.ts and the packages it imports into dist/cli/main.js, tree-shaken and without
// comments, and every `import()` of the code becomes a chunk of its own, so what is lazy in src/
// stays lazy in dist/ (the other commands, the Kubernetes source, the federation client...). A
// bundled, tree-shaken sidecar parses and keeps far less code than one loading effect's modules
// file by file: idle RSS 80-82 -> ~64 MB (issue 14; README's memory notes). Emit only: `npm test`
// typechecks, and a type error must not make `npm install` fail. dist/ is removed first, so a
// deleted source leaves nothing behind. `node scripts/build.ts DIR` builds into DIR instead (a
// test's copy; DIR must sit inside the repository, for the external packages to resolve).
import { existsSync, readFileSync, rmSync } from "node:fs"
import { join, relative, resolve } from "node:path"
import { buildMallocTrim } from "./nativeTrim.ts"

const root = join(import.meta.dirname, "..")
const src = join(root, "src")
const dist = process.argv[2] === undefined ? join(root, "dist") : resolve(process.argv[2])

/** Packages left to node_modules at run time: the ones src/ loads through createRequire (the
 * bundler cannot follow those calls: ws, bonjour-service, the OpenTelemetry SDK and exporters,
 * @effect/opentelemetry) and the Kubernetes client (heavy, loaded only with Kubernetes discovery,
 * and reading files beside itself). The rest (effect, prom-client, yaml, @peculiar/x509...) is
 * bundled, @opentelemetry/api too: the SDK's copy from node_modules shares its state with the
 * bundled one (context keys are Symbol.for keys, the global providers sit under a Symbol.for key
 * per major version), and loading its 65 files from node_modules made 60 % of a sidecar's path
 * resolutions at start-up (320 path.resolve and 63 path.normalize -> 138 and 0), enough that
 * TurboFan compiled node's normalizeString during start-up in some starts, +5.6 MB idle (issue 14). */
const external = ["ws", "bonjour-service", "@kubernetes/client-node", /^@opentelemetry\/(?!api$)/, /^@effect\/opentelemetry/]

/** A file the code reads beside itself (`new URL("./dashboard.html", import.meta.url)`) is
 * emitted at its place under dist/ (same layout as src/) and the URL rewritten to point there
 * from whichever chunk the module lands in. */
const assetsBesideModules = {
  name: "assets-beside-modules",
  transform(this: { emitFile(file: { type: "asset"; fileName: string; source: Uint8Array }): string }, code: string, id: string) {
    if (!id.startsWith(src) || !code.includes("import.meta.url")) return null
    const rewritten = code.replace(/new URL\("(\.\/[^"]+)", import\.meta\.url\)/g, (whole, path: string) => {
      const file = join(id, "..", path)
      if (!existsSync(file) || file.endsWith(".ts")) return whole
      const reference = this.emitFile({ type: "asset", fileName: relative(src, file), source: readFileSync(file) })
      return `new URL(import.meta.ROLLUP_FILE_URL_${reference})`
    })
    return rewritten === code ? null : { code: rewritten, map: null }
  }
}

const rolldown = await import("rolldown").catch(() => undefined)
if (rolldown === undefined) {
  process.stderr.write("build: rolldown is not installed (a devDependency): run `npm install` with the devDependencies, or bring a dist/ built elsewhere\n")
  process.exit(1)
}
rmSync(dist, { recursive: true, force: true })
try {
  await rolldown.build({
    input: join(src, "cli", "main.ts"),
    platform: "node",
    tsconfig: join(root, "tsconfig.build.json"),
    external,
    plugins: [assetsBesideModules],
    logLevel: "warn",
    output: {
      dir: dist,
      format: "esm",
      entryFileNames: "cli/main.js",
      // Chunks beside main.js: import.meta.dirname in a chunk is dist/cli, as it is src/cli for
      // the sources (the demo finds ../../services from there).
      chunkFileNames: "cli/[name]-[hash].js",
      comments: false,
      sourcemap: false
    }
  })
} catch (error) {
  process.stderr.write(`build: rolldown failed: ${error instanceof Error ? error.message : String(error)}\n`)
  process.exit(1)
}

// The optional native piece (scripts/nativeTrim.ts): built where it can be, and one line where not.
const trim = buildMallocTrim(dist)
if (!trim.built) process.stderr.write(`build: memory trim unavailable (${trim.reason}); the sidecar runs without it\n`)
