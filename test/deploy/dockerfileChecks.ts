// Offline checks of the images' Dockerfile (deploy/docker): no builder runs here, so the checks
// read the Dockerfile and its build context the way a builder would and ask whether the image can
// run: its base, what every COPY takes from the context (and whether the .dockerignore lets it
// in), the user it runs as, how node is started (PID 1, exec form), whether node_modules holds
// production dependencies only, and whether every module the copied code imports is in the image.
// A stage that runs the project's build (`npm run build`, scripts/build.ts) is taken to emit
// dist/<path>.js for each src/<path>.ts it holds, the other non-.md files as they are: the bundle
// it really writes is made of those modules, so checking each module's imports checks the bundle's
// (a superset: a bundled package needs no node_modules); COPY --from takes a stage's files, built
// ones included.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs"
import { builtinModules } from "node:module"
import { basename, join, posix, relative } from "node:path"

export const dockerCheckIds = ["docker-base", "docker-copy", "docker-context", "docker-user", "docker-entrypoint", "docker-deps", "docker-imports"] as const
export type DockerCheckId = (typeof dockerCheckIds)[number]

export interface DockerProblem {
  readonly check: DockerCheckId
  readonly where: string
  readonly message: string
}

export interface Instruction {
  readonly keyword: string
  /** --name=value options (COPY --from, --chown, ...). */
  readonly options: Record<string, string>
  /** The rest of the line, options removed. */
  readonly text: string
  /** The arguments in exec (JSON array) form, when written so. */
  readonly exec: ReadonlyArray<string> | undefined
  readonly line: number
}

export interface Stage {
  readonly index: number
  readonly name: string | undefined
  readonly from: string
  readonly instructions: ReadonlyArray<Instruction>
}

/** Parses a Dockerfile into stages: comments and blank lines dropped, continuation lines joined. */
export const parseDockerfile = (text: string): ReadonlyArray<Stage> => {
  const instructions: Array<Instruction> = []
  let pending = ""
  let startLine = 0
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim()
    if (pending === "" && (line === "" || line.startsWith("#"))) return
    if (pending !== "" && line.startsWith("#")) return
    if (pending === "") startLine = i + 1
    if (line.endsWith("\\")) {
      pending += `${line.slice(0, -1)} `
      return
    }
    const whole = `${pending}${line}`.trim()
    pending = ""
    const keyword = whole.split(/\s+/)[0] ?? ""
    let rest = whole.slice(keyword.length).trim()
    const options: Record<string, string> = {}
    for (let option = /^--([a-z-]+)(?:=(\S+))?\s*/.exec(rest); option !== null; option = /^--([a-z-]+)(?:=(\S+))?\s*/.exec(rest)) {
      options[option[1]!] = option[2] ?? ""
      rest = rest.slice(option[0].length)
    }
    let exec: ReadonlyArray<string> | undefined
    if (rest.startsWith("[")) {
      try {
        const parsed: unknown = JSON.parse(rest)
        if (Array.isArray(parsed) && parsed.every((p) => typeof p === "string")) exec = parsed as Array<string>
      } catch {
        exec = undefined
      }
    }
    instructions.push({ keyword: keyword.toUpperCase(), options, text: rest, exec, line: startLine })
  })
  const stages: Array<{ index: number; name: string | undefined; from: string; instructions: Array<Instruction> }> = []
  for (const instruction of instructions) {
    if (instruction.keyword === "FROM") {
      const [image = "", as, name] = instruction.text.split(/\s+/)
      stages.push({ index: stages.length, name: as?.toUpperCase() === "AS" ? name : undefined, from: image, instructions: [] })
    } else {
      stages.at(-1)?.instructions.push(instruction)
    }
  }
  return stages
}

/** One .dockerignore pattern as the builder reads it (moby/patternmatcher): '!' re-includes, '**' spans directories. */
interface IgnorePattern {
  readonly exclusion: boolean
  readonly regex: RegExp
}

const globToRegex = (glob: string): RegExp => {
  let out = ""
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!
    if (c === "*" && glob[i + 1] === "*") {
      if (glob[i + 2] === "/") {
        out += "(?:.*/)?"
        i += 2
      } else {
        out += ".*"
        i += 1
      }
    } else if (c === "*") out += "[^/]*"
    else if (c === "?") out += "[^/]"
    else out += c.replace(/[.+^${}()|[\]\\]/g, "\\$&")
  }
  return new RegExp(`^${out}$`)
}

export const parseDockerignore = (text: string): ReadonlyArray<IgnorePattern> =>
  text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"))
    .map((line) => {
      const exclusion = line.startsWith("!")
      const pattern = posix.normalize((exclusion ? line.slice(1) : line).trim()).replace(/^\/+/, "").replace(/\/+$/, "")
      return { exclusion, regex: globToRegex(pattern) }
    })

/** Whether the builder leaves `path` (relative to the context, '/'-separated) out of the context. */
export const isIgnored = (path: string, patterns: ReadonlyArray<IgnorePattern>): boolean => {
  const parts = path.split("/")
  const candidates = parts.map((_, i) => parts.slice(0, i + 1).join("/"))
  let ignored = false
  for (const pattern of patterns) {
    if (candidates.some((candidate) => pattern.regex.test(candidate))) ignored = !pattern.exclusion
  }
  return ignored
}

/** Files under a path of the context (the path itself when it is a file), '/'-separated and relative to the context. */
const filesUnder = (context: string, path: string): ReadonlyArray<string> => {
  const absolute = join(context, path)
  if (!statSync(absolute).isDirectory()) return [path]
  return readdirSync(absolute).flatMap((entry) => filesUnder(context, path === "." ? entry : `${path}/${entry}`))
}

export interface DockerfileInput {
  /** Path of the Dockerfile. */
  readonly dockerfile: string
  /** The build context (the repository root for deploy/docker/Dockerfile). */
  readonly context: string
  /** The ignore file to use instead of the one BuildKit would find (fixtures share the real one). */
  readonly ignoreFile?: string
}

/** The ignore file BuildKit uses: <Dockerfile>.dockerignore beside the Dockerfile, else the context's .dockerignore. */
export const ignoreFileOf = ({ dockerfile, context, ignoreFile }: DockerfileInput): string | undefined =>
  ignoreFile ?? [`${dockerfile}.dockerignore`, join(context, ".dockerignore")].find((candidate) => existsSync(candidate))

const nodeBuiltins = new Set(builtinModules)

/** Module specifiers a file imports at run time (type-only imports are erased by Node's type stripping). */
export const importsOf = (source: string): ReadonlyArray<string> => {
  const found: Array<string> = []
  for (const match of source.matchAll(/^[ \t]*(import|export)\s+(type\s+)?[^"'`;]*?\bfrom\s*["']([^"']+)["']/gm)) {
    if (match[2] === undefined) found.push(match[3]!)
  }
  for (const match of source.matchAll(/^[ \t]*import\s*["']([^"']+)["']/gm)) found.push(match[1]!)
  for (const match of source.matchAll(/\b(?:import|require)\(\s*["']([^"']+)["']\s*\)/g)) found.push(match[1]!)
  return found
}

/** "effect/Effect" -> "effect", "@scope/pkg/sub" -> "@scope/pkg". */
const packageOf = (specifier: string): string => specifier.split("/").slice(0, specifier.startsWith("@") ? 2 : 1).join("/")

/** Packages `npm ci --omit=dev` installs at the top of node_modules (where the app's imports resolve), from the lock file. */
export const productionPackages = (lockFile: string): ReadonlySet<string> => {
  const lock = JSON.parse(readFileSync(lockFile, "utf8")) as { packages?: Record<string, { dev?: boolean }> }
  return new Set(
    Object.entries(lock.packages ?? {})
      .filter(([path, entry]) => /^node_modules\/(@[^/]+\/)?[^/]+$/.test(path) && entry.dev !== true)
      .map(([path]) => path.slice("node_modules/".length))
  )
}

/** A file of a stage: its source in the context, and whether the build emitted it from that source (dist/x.js from src/x.ts). */
interface StageFile {
  readonly file: string
  readonly emitted: boolean
}

/** What a target stage's image holds: its working directory and its files (path in the image -> path in the context). */
export interface Image {
  readonly workdir: string
  readonly files: ReadonlyMap<string, string>
}

/**
 * Runs every Dockerfile check; the problems are empty when the images can be built and run. Also
 * gives each target stage's image (by stage name) for cross-checks with the manifests.
 */
export const checkDockerfile = (input: DockerfileInput): { readonly problems: ReadonlyArray<DockerProblem>; readonly images: ReadonlyMap<string, Image> } => {
  const { dockerfile, context } = input
  const stages = parseDockerfile(readFileSync(dockerfile, "utf8"))
  const ignoreFile = ignoreFileOf(input)
  const ignore = ignoreFile === undefined ? [] : parseDockerignore(readFileSync(ignoreFile, "utf8"))
  const problems: Array<DockerProblem> = []
  const images = new Map<string, Image>()
  const add = (check: DockerCheckId, at: string, message: string) => problems.push({ check, where: at, message })
  const name = basename(dockerfile)
  const stageLabel = (stage: Stage) => `${name} stage ${stage.name ?? stage.index}`
  const byName = (ref: string, before: number) => stages.find((s) => s.index < before && (s.name === ref || String(s.index) === ref))

  // The context: what a careless COPY could take is left out.
  for (const path of ["node_modules/.package-lock.json", ".git/HEAD", ".tmp/notes", "test/deploy/kube.ts", "coverage/index.html"]) {
    if (!isIgnored(path, ignore)) add("docker-context", ignoreFile ?? "(no .dockerignore)", `${path.split("/")[0]} is sent to the builder; leave it out of the context`)
  }

  // Stages used by others are not targets; the rest are images someone runs.
  const used = new Set<number>()
  for (const stage of stages) {
    const base = byName(stage.from, stage.index)
    if (base !== undefined) used.add(base.index)
    else if (!/^node:24-slim(@sha256:[0-9a-f]{64})?$/.test(stage.from)) add("docker-base", stageLabel(stage), `FROM ${stage.from}: the base image is node:24-slim`)
    for (const instruction of stage.instructions) {
      const from = instruction.options["from"]
      if (from === undefined) continue
      const source = byName(from, stage.index)
      if (source === undefined) add("docker-copy", `${name}:${instruction.line}`, `COPY --from=${from} names no earlier stage`)
      else used.add(source.index)
    }
  }
  const chain = (stage: Stage): ReadonlyArray<Stage> => {
    const base = byName(stage.from, stage.index)
    return base === undefined ? [stage] : [...chain(base), stage]
  }
  /** A stage's files (in its chain), each with where it comes from in the context and whether the build emitted it from that source. */
  const stageFiles = (stage: Stage): { readonly workdir: string; readonly files: Map<string, StageFile> } => {
    let workdir = "/"
    const files = new Map<string, StageFile>()
    for (const instruction of chain(stage).flatMap((s) => s.instructions)) {
      if (instruction.keyword === "WORKDIR") workdir = posix.resolve(workdir, instruction.text)
      if (instruction.keyword === "RUN" && /\bnpm\s+run\s+(-s\s+)?build\b|scripts\/build\.ts/.test(instruction.text)) {
        const src = posix.join(workdir, "src/")
        for (const [inImage, from] of [...files]) {
          if (!inImage.startsWith(src) || inImage.endsWith(".md")) continue
          const out = posix.join(workdir, "dist", inImage.slice(src.length)).replace(/\.ts$/, ".js")
          files.set(out, { file: from.file, emitted: inImage.endsWith(".ts") })
        }
      }
      if (instruction.keyword !== "COPY") continue
      const parts = instruction.exec ?? instruction.text.split(/\s+/)
      const destination = posix.resolve(workdir, parts.at(-1)!)
      const sources = parts.slice(0, -1)
      const from = instruction.options["from"]
      if (from !== undefined) {
        const origin = byName(from, stage.index + 1)
        if (origin === undefined) continue
        const theirs = stageFiles(origin)
        for (const source of sources) {
          const path = posix.resolve(theirs.workdir, source)
          for (const [there, f] of theirs.files) {
            if (there === path) files.set(parts.at(-1)!.endsWith("/") ? posix.join(destination, posix.basename(there)) : destination, f)
            else if (there.startsWith(`${path}/`)) files.set(posix.join(destination, there.slice(path.length + 1)), f)
          }
        }
        continue
      }
      for (const source of sources) {
        const path = posix.normalize(source).replace(/^\/+/, "").replace(/\/$/, "") || "."
        if (!existsSync(join(context, path))) continue
        const isDir = statSync(join(context, path)).isDirectory()
        for (const file of filesUnder(context, path)) {
          if (isIgnored(file, ignore)) continue
          const inImage = isDir
            ? posix.join(destination, posix.relative(path === "." ? "" : path, file))
            : parts.at(-1)!.endsWith("/") || sources.length > 1
              ? posix.join(destination, posix.basename(file))
              : destination
          files.set(inImage, { file, emitted: false })
        }
      }
    }
    return { workdir, files }
  }
  const production = existsSync(join(context, "package-lock.json")) ? productionPackages(join(context, "package-lock.json")) : new Set<string>()

  for (const stage of stages) {
    // COPY sources exist in the context and are let in; ADD is not used (no remote or archive magic).
    for (const instruction of stage.instructions) {
      if (instruction.keyword === "ADD") add("docker-copy", `${name}:${instruction.line}`, "ADD fetches and unpacks; use COPY")
      if (instruction.keyword !== "COPY" || instruction.options["from"] !== undefined) continue
      const parts = instruction.exec ?? instruction.text.split(/\s+/)
      for (const source of parts.slice(0, -1)) {
        const path = posix.normalize(source).replace(/^\/+/, "").replace(/\/$/, "") || "."
        if (/[*?[]/.test(path)) add("docker-copy", `${name}:${instruction.line}`, `COPY ${source}: name files and directories, not globs (the checks cannot follow them)`)
        else if (!existsSync(join(context, path))) add("docker-copy", `${name}:${instruction.line}`, `COPY ${source}: no such file or directory in the context`)
        else if (isIgnored(path, ignore) || filesUnder(context, path).some((file) => isIgnored(file, ignore))) {
          add("docker-copy", `${name}:${instruction.line}`, `COPY ${source}: left out of the context by ${ignoreFile === undefined ? ".dockerignore" : relative(context, ignoreFile)}`)
        }
      }
    }
    // Dependencies come from a lock file, production only.
    for (const instruction of stage.instructions) {
      if (instruction.keyword !== "RUN") continue
      if (/\bnpm\s+(install|i|add)\b/.test(instruction.text)) add("docker-deps", `${name}:${instruction.line}`, "npm install: use npm ci, which installs exactly the lock file")
      if (/\bnpm\s+ci\b/.test(instruction.text)) {
        const copiesLock = chain(stage).some((s) => s.instructions.some((i) => i.keyword === "COPY" && i.text.includes("package-lock.json")))
        if (!copiesLock) add("docker-deps", `${name}:${instruction.line}`, "npm ci needs package-lock.json copied in first")
      }
    }
  }

  for (const target of stages.filter((s) => !used.has(s.index))) {
    const label = stageLabel(target)
    const all = chain(target).flatMap((s) => s.instructions)
    // The user: set, by number (Kubernetes can verify runAsNonRoot only then), not root.
    const user = all.filter((i) => i.keyword === "USER").at(-1)?.text
    if (user === undefined) add("docker-user", label, "no USER: the image runs as root")
    else if (!/^\d+(:\d+)?$/.test(user)) add("docker-user", label, `USER ${user}: give a numeric UID, so runAsNonRoot can be verified`)
    else if (Number(user.split(":")[0]) === 0) add("docker-user", label, "USER 0 is root")
    // node is PID 1 (exec form), so SIGTERM reaches it and the drain runs.
    const entrypoint = all.filter((i) => i.keyword === "ENTRYPOINT").at(-1)
    const cmd = all.filter((i) => i.keyword === "CMD").at(-1)
    if (entrypoint === undefined) add("docker-entrypoint", label, "no ENTRYPOINT: the base image's runs")
    else if (entrypoint.exec === undefined) add("docker-entrypoint", label, `ENTRYPOINT ${entrypoint.text}: shell form runs /bin/sh as PID 1, which does not pass SIGTERM to node`)
    else if (entrypoint.exec[0] !== "node") add("docker-entrypoint", label, `ENTRYPOINT starts ${entrypoint.exec[0]}, not node`)
    if (cmd !== undefined && cmd.exec === undefined) add("docker-entrypoint", label, `CMD ${cmd.text}: use the exec form`)

    // The image's files: what each COPY puts where (from the context or an earlier stage).
    const { workdir, files } = stageFiles(target)
    // node_modules from another stage: installed there by npm ci, without the devDependencies.
    let nodeModules = false
    for (const instruction of all) {
      const from = instruction.options["from"]
      const parts = instruction.exec ?? instruction.text.split(/\s+/)
      if (instruction.keyword !== "COPY" || from === undefined || !parts.slice(0, -1).some((p) => p.endsWith("node_modules"))) continue
      nodeModules = true
      const source = byName(from, target.index + 1)
      const installs = source === undefined ? [] : chain(source).flatMap((s) => s.instructions.filter((i) => i.keyword === "RUN" && /\bnpm\s+ci\b/.test(i.text)))
      if (installs.length === 0) add("docker-deps", label, `node_modules comes from stage ${from}, which runs no npm ci`)
      for (const install of installs.filter((i) => !/--omit[= ]dev\b/.test(i.text))) {
        add("docker-deps", `${name}:${install.line}`, "npm ci without --omit=dev installs the devDependencies too, and this node_modules ships in the image")
      }
    }
    images.set(target.name ?? String(target.index), { workdir, files: new Map([...files].map(([inImage, f]) => [inImage, f.file])) })
    // Everything the copied code imports is in the image: relative imports among the copied files,
    // packages among the production dependencies.
    const script = entrypoint?.exec?.slice(1).find((a) => !a.startsWith("-")) ?? cmd?.exec?.find((a) => !a.startsWith("-"))
    if (script !== undefined && /\.(m?js|ts)$/.test(script) && !files.has(posix.resolve(workdir, script))) {
      add("docker-imports", label, `node runs ${script}, which is not in the image`)
    }
    for (const [inImage, { file, emitted }] of files) {
      if (!/\.(m?[jt]s)$/.test(inImage)) continue
      for (const imported of importsOf(readFileSync(join(context, file), "utf8"))) {
        // The build rewrites relative .ts imports to .js (rewriteRelativeImportExtensions).
        const specifier = emitted && imported.startsWith(".") ? imported.replace(/\.ts$/, ".js") : imported
        if (specifier.startsWith(".") || specifier.startsWith("/")) {
          const resolved = posix.resolve(posix.dirname(inImage), specifier)
          if (!files.has(resolved)) add("docker-imports", label, `${file} imports ${specifier}, which is not in the image`)
        } else if (!specifier.startsWith("node:") && !nodeBuiltins.has(specifier)) {
          const pkg = packageOf(specifier)
          if (!nodeModules) add("docker-imports", label, `${file} imports ${specifier}, but the image has no node_modules`)
          else if (!production.has(pkg)) add("docker-imports", label, `${file} imports ${specifier}: ${pkg} is not installed by npm ci --omit=dev (a devDependency, or missing)`)
        }
      }
    }
  }
  return { problems, images }
}
