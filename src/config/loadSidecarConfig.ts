// The sidecar's configuration loaded (`iip-mesh sidecar`, the demo): sources merged as defaults <
// config file < environment < flags (settings.ts, settingText.ts), then validated once with the
// schema (sidecarConfig.ts) and the checks across settings; a bad start-up names every wrong
// setting, where it came from and what is expected, never a secret's value.
import * as Data from "effect/Data"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"
import { parseJsonStrict } from "../iip/jsonStrict.ts"
import { readSmallFile } from "../iip/smallFile.ts"
import { type SidecarConfig, SidecarConfigSchema } from "./sidecarConfig.ts"
import { fromText } from "./settingText.ts"
import { configDefaults, secretSettings, settings } from "./settings.ts"

/** A config file larger than this is refused unread. */
export const MAX_CONFIG_FILE_BYTES = 1024 * 1024

export class ConfigInvalid extends Data.TaggedError("ConfigInvalid")<{ readonly message: string; readonly problems: ReadonlyArray<string> }> {}

export interface ConfigSources {
  /** Flags as given: name (with --) to values, in order. */
  readonly flags: ReadonlyMap<string, ReadonlyArray<string>>
  readonly env: Record<string, string | undefined>
  /** A JSON config file; `--config` or IIP_MESH_CONFIG name it. */
  readonly file?: string | undefined
}

/** An address only this machine (this pod) can reach: 127.0.0.0/8, ::1, localhost. */
export const isLoopbackAddress = (address: string): boolean => {
  const host = address.slice(0, address.lastIndexOf(":")).replace(/^\[(.*)\]$/, "$1").toLowerCase()
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host) || /^::ffff:127\./.test(host)
}

/** Settings that are each valid but do not fit together. */
const crossChecks = (config: SidecarConfig): Array<string> => {
  const problems: Array<string> = []
  if (config.loadBalancer === "consistent-hash" && config.hashKey === null) {
    problems.push("hashKey: consistent-hash needs a key (header:NAME, query:NAME or client); without one every request would go to the same endpoint")
  }
  if (config.loadBalancer === "MethodURIParam" && !(config.hashKey?.startsWith("query:") ?? false)) {
    problems.push("hashKey: MethodURIParam hashes a query parameter: set query:NAME")
  }
  if (config.adminToken !== null && config.adminTokenFile !== null) {
    problems.push("adminToken: set the token or a file that holds it, not both")
  }
  if (!isLoopbackAddress(config.adminControl) && config.adminToken === null && config.adminTokenFile === null) {
    problems.push(`adminControl: ${config.adminControl} is not a loopback address: the control listener changes weights and shows the mesh, so off loopback it needs a token (adminToken or adminTokenFile)`)
  }
  const proofs = [config.identityTokenFile, config.identityJoinTokenFile].filter((file) => file !== null).length
  if (config.identityIssuer !== null) {
    if (config.identityDevCaDir !== null) problems.push("identityDevCaDir: a sidecar gets its certificate from the issuer or (development) signs it itself, not both")
    if (config.trustBundleFile === null) problems.push("trustBundleFile: required with identityIssuer (the issuer is verified against it)")
    if (proofs !== 1) problems.push("identityIssuer: set exactly one of identityTokenFile (Kubernetes) and identityJoinTokenFile")
  } else if (proofs > 0) {
    problems.push("identityIssuer: required with identityTokenFile or identityJoinTokenFile")
  }
  if (config.ejectionMaxMs < config.ejectionBaseMs) {
    problems.push(`ejectionMaxMs: ${config.ejectionMaxMs} ms is shorter than ejectionBaseMs (${config.ejectionBaseMs} ms)`)
  }
  return problems
}

/** A wrong value as a problem shows it: at most 200 characters of its JSON, never thrown (a value nested too deeply for JSON.stringify). */
const echo = (value: unknown): string => {
  try {
    const text = JSON.stringify(typeof value === "string" ? value.slice(0, 200) : value) ?? String(value)
    return text.length > 200 ? `${text.slice(0, 200)}...` : text
  } catch {
    return Array.isArray(value) ? "an array nested too deeply" : "an object nested too deeply"
  }
}

/** A problem line (the schema's message may quote a long value) at most 400 characters. */
const bounded = (line: string): string => (line.length > 400 ? `${line.slice(0, 400)}...` : line)

/**
 * JSON.parse's problem with `text` without the text it quotes: V8 says `Unexpected token 'x',
 * ..."inToken": s3cretTOKE"... is not valid JSON`, and the config file may hold adminToken. The
 * line is kept (the quote starts 10 characters before the token when it starts with "...").
 */
const jsonProblem = (message: string, text: string): string => {
  const quoted = /^Unexpected token '.*', (\.\.\.)?"(.*)"(?:\.\.\.)? is not valid JSON$/s.exec(message)
  if (quoted === null) return message
  const at = quoted[1] === undefined ? -1 : text.indexOf(quoted[2]!)
  const line = at === -1 ? "" : ` on line ${text.slice(0, at + 10).split("\n").length}`
  return `Unexpected token${line} (not valid JSON; the text around it is not shown: the file may hold a secret)`
}

/**
 * Problems listed at most: a 1 MiB config file of 40,000 unknown keys made a 2.1 MB error message
 * (one line a key) that the sidecar wrote to its log; past this many, their count.
 */
const MaxProblemsListed = 50

/** Merges the sources and validates the result; every problem is reported at once (the first MaxProblemsListed by name). */
export const loadSidecarConfig = (sources: ConfigSources): Result.Result<SidecarConfig, ConfigInvalid> => {
  const raw: Record<string, unknown> = { service: undefined, ...configDefaults() }
  const origin = new Map<string, string>(Object.keys(raw).map((k) => [k, "default"]))
  const problems: Array<string> = []
  const known = new Set<string>([...settings.map((s) => s.flag), "--config"])
  for (const name of sources.flags.keys()) {
    if (name.startsWith("--")) {
      if (!known.has(name)) problems.push(`${JSON.stringify(name.slice(0, 80)).slice(1, -1)}: unknown flag`)
    } else if (name.startsWith("-")) problems.push(`${JSON.stringify(name)}: not a flag (flags are --name VALUE or --name=VALUE)`)
    else problems.push(`${name}: a word that is not a flag, not shown (it may be a value, a secret; flags are --name VALUE or --name=VALUE)`)
  }
  const file = sources.flags.get("--config")?.at(-1) ?? sources.env.IIP_MESH_CONFIG ?? sources.file
  if (file !== undefined) {
    try {
      // Opened without blocking and checked on the descriptor: a FIFO, a device or a huge file is refused unread.
      const read = readSmallFile(file, MAX_CONFIG_FILE_BYTES, { followSymlink: true })
      if ("problem" in read) throw new Error(read.problem)
      let parsed: unknown
      try {
        parsed = parseJsonStrict(read.text)
      } catch (error) {
        throw error instanceof SyntaxError ? new Error(jsonProblem(error.message, read.text)) : error
      }
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("expected a JSON object")
      for (const [key, value] of Object.entries(parsed)) {
        // Own keys only: "toString" or "__proto__" is in every object.
        if (!Object.hasOwn(raw, key)) {
          problems.push(`${JSON.stringify(key.slice(0, 80)).slice(1, -1)} (from ${file}): unknown setting`)
          continue
        }
        raw[key] = value
        origin.set(key, file)
      }
    } catch (error) {
      problems.push(`config file ${file}: ${error instanceof Error ? error.message : String(error)}`)
    }
  }
  for (const setting of settings) {
    const fromEnv = sources.env[setting.env]
    if (fromEnv !== undefined) {
      raw[setting.key] = fromText(setting.key, [fromEnv])
      origin.set(setting.key, setting.env)
    }
    const fromFlag = sources.flags.get(setting.flag)
    if (fromFlag !== undefined) {
      raw[setting.key] = fromText(setting.key, fromFlag)
      origin.set(setting.key, setting.flag)
    }
  }
  if (raw.service === undefined) problems.push(`service: required (set --service or IIP_MESH_SERVICE)`)
  const result = Schema.decodeUnknownResult(SidecarConfigSchema)(raw, { errors: "all" })
  if (Result.isFailure(result)) {
    for (const issue of SchemaIssue.makeFormatterStandardSchemaV1()(result.failure.issue).issues) {
      const path = (issue.path ?? []).map((p) => String(typeof p === "object" && p !== null && "key" in p ? p.key : p))
      if (path[0] === "service" && raw.service === undefined) continue
      const value = path.reduce<unknown>((at, key) => (typeof at === "object" && at !== null ? (at as Record<string, unknown>)[key] : undefined), raw)
      const expected = path[0]!.endsWith("Ms") && typeof value === "string" ? "Expected a duration like 15s or 500ms" : issue.message
      // A secret is never echoed, not even a wrong one.
      const got = secretSettings.has(path[0] ?? "") ? "" : expected.includes(", got ") ? "" : `, got ${echo(value)}`
      problems.push(bounded(`${path.join(".")} (from ${origin.get(path[0] ?? "") ?? "default"}): ${expected}${got}`))
    }
  }
  if (Result.isSuccess(result)) problems.push(...crossChecks(result.success))
  if (problems.length > 0) {
    const listed = problems.length <= MaxProblemsListed ? problems : [...problems.slice(0, MaxProblemsListed), `and ${problems.length - MaxProblemsListed} more problems, not listed`]
    return Result.fail(new ConfigInvalid({ message: `invalid configuration:\n  ${listed.join("\n  ")}`, problems: listed }))
  }
  return Result.succeed((result as Result.Success<SidecarConfig, never>).success)
}
