// The unknown-field check: kubernetes-models' runtime validation accepts fields the API does not
// have (a typo such as `readOnlyRootFileSystem` passes and is silently dropped by the API server),
// so each rendered object is also written out as a TypeScript object literal typed with its
// kubernetes-models interface and compiled. The compiler's excess-property check names every field
// the type does not have, at any depth; type mismatches show up too. One compiler run covers every
// render: the file goes under node_modules/.cache (where `kubernetes-models` resolves), in a
// directory of its own per run.
import { execFile } from "node:child_process"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join, resolve } from "node:path"
import { promisify } from "node:util"
import { type KubeObject, nameOf } from "./kube.ts"
import { kindKey, knownKinds, type Problem } from "./manifestChecks.ts"

const run = promisify(execFile)
const repo = resolve(import.meta.dirname, "../..")

export interface Render {
  readonly name: string
  readonly objects: ReadonlyArray<KubeObject>
}

/** Problems per render name ("unknown-fields"); objects of unknown kinds are left to the schema check. */
export const typedCheck = async (renders: ReadonlyArray<Render>): Promise<ReadonlyMap<string, ReadonlyArray<Problem>>> => {
  const imports = new Map<string, string>()
  const lines: Array<string> = []
  // Which render and object each line of the generated file belongs to.
  const owners: Array<{ readonly render: string; readonly object: string } | undefined> = []
  renders.forEach((render, r) => {
    render.objects.forEach((object, o) => {
      const known = knownKinds[kindKey(object)]
      if (known?.type === undefined || known.module === undefined) return
      imports.set(known.type, known.module)
      const literal = JSON.stringify(object, null, 2).split("\n")
      literal[0] = `export const r${r}o${o}: ${known.type} = ${literal[0]}`
      for (const line of literal) {
        lines.push(line)
        owners.push({ render: render.name, object: nameOf(object) })
      }
    })
  })
  const header = [...imports].map(([type, module]) => `import type { ${type} } from "${module}"`)
  const source = [...header, ...lines].join("\n")
  const cache = join(repo, "node_modules", ".cache")
  mkdirSync(cache, { recursive: true })
  const dir = mkdtempSync(join(cache, "iip-mesh-deploy-types-"))
  const problems = new Map<string, Array<Problem>>(renders.map((r) => [r.name, []]))
  try {
    writeFileSync(join(dir, "manifests.ts"), source)
    writeFileSync(
      join(dir, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: { strict: true, noEmit: true, target: "ES2022", module: "NodeNext", moduleResolution: "NodeNext", skipLibCheck: true, types: [] },
        files: ["manifests.ts"]
      })
    )
    const tsc = join(dirname(createRequire(import.meta.url).resolve("typescript/package.json")), "lib", "tsc.js")
    const output = await run(process.execPath, [tsc, "-p", join(dir, "tsconfig.json"), "--pretty", "false"], { timeout: 60_000, maxBuffer: 16 * 1024 * 1024 }).then(
      ({ stdout }) => stdout,
      (error: { stdout?: string; stderr?: string }) => `${error.stdout ?? ""}${error.stderr ?? ""}`
    )
    for (const line of output.split("\n")) {
      const match = /manifests\.ts\((\d+),\d+\): error (TS\d+): (.*)$/.exec(line)
      if (match === null) {
        // Continuation lines of a diagnostic are indented; anything else is the compiler failing.
        if (line.trim() !== "" && !/^\s/.test(line)) throw new Error(`typed check: unexpected compiler output: ${line}`)
        continue
      }
      const owner = owners[Number(match[1]) - 1 - header.length]
      if (owner === undefined) throw new Error(`typed check: ${line}`)
      problems.get(owner.render)!.push({ check: "unknown-fields", where: owner.object, message: `${match[2]}: ${match[3]}` })
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  return problems
}
