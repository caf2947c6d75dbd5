// Every setting of the sidecar in one place (README "Configuration"): its schema, its default,
// its environment variable and its flag. Sources are merged as defaults < config file <
// environment < flags, then validated once with Schema; a bad start-up names every wrong setting,
// where it came from and what is expected.
import * as Data from "effect/Data"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"
import { readFileSync } from "node:fs"
import { hostname } from "node:os"

const addressPattern = /^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/
const servicePattern = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/
/** "NAMESPACE/NAME" of a Kubernetes Service: two DNS labels. */
const kubernetesServicePattern = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\/[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/

const Address = Schema.String.pipe(
  Schema.check(
    Schema.makeFilter((text: string) => {
      const match = addressPattern.exec(text)
      return match !== null && Number(match[1]) <= 65535 ? undefined : `Expected HOST:PORT with a port of 0..65535, got ${JSON.stringify(text)}`
    })
  )
)
const ServiceName = Schema.String.pipe(
  Schema.check(Schema.makeFilter((text: string) => (servicePattern.test(text) ? undefined : `Expected a DNS label (a-z, 0-9, -), got ${JSON.stringify(text)}`)))
)
const PositiveMs = Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 3_600_000 })))

const EndpointSpec = Schema.Struct({
  address: Address,
  weight: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 1000 })))
})

export const SidecarConfigSchema = Schema.Struct({
  /** The service this sidecar fronts (its name in the mesh). */
  service: ServiceName,
  /** This sidecar's name in hellos and traces. */
  node: Schema.NonEmptyString,
  /** The local app the inbound side forwards to; null for an app that only calls out. */
  app: Schema.NullOr(Address),
  /** Where the local app sends its outbound HTTP (keep it on loopback). */
  outbound: Address,
  /** Where other sidecars reach this one over IIP. */
  inbound: Address,
  /** Health, readiness and the mesh view; loopback by default. */
  admin: Address,
  /**
   * Static endpoints per service (until discovery finds them). The names are checked on the whole
   * record: a Record with a checked key type would drop a bad name silently instead of reporting it.
   */
  endpoints: Schema.Record(Schema.String, Schema.Array(EndpointSpec)).pipe(
    Schema.check(
      Schema.makeFilter((record: Readonly<Record<string, unknown>>) => {
        const bad = Object.keys(record).filter((name) => !servicePattern.test(name))
        return bad.length === 0 ? undefined : `Expected service names that are DNS labels (a-z, 0-9, -), got ${bad.map((b) => JSON.stringify(b)).join(", ")}`
      })
    )
  ),
  /** A JSON file of endpoints shaped like `endpoints`, re-read when it changes; null for none. */
  endpointsFile: Schema.NullOr(Schema.NonEmptyString),
  /** DNS SRV names per service (a Kubernetes headless Service's full name). */
  dnsSrv: Schema.Record(Schema.String, Schema.NonEmptyString),
  /**
   * Kubernetes Services per mesh service, as "NAMESPACE/NAME": their EndpointSlices are watched
   * with the in-cluster configuration (port named "mesh"). Optional in the type so configurations
   * built in code without it stay valid; loadSidecarConfig always fills it.
   */
  kubernetes: Schema.optionalKey(
    Schema.Record(
      Schema.String,
      Schema.String.pipe(
        Schema.check(
          Schema.makeFilter((text: string) =>
            kubernetesServicePattern.test(text) ? undefined : `Expected NAMESPACE/NAME (DNS labels), got ${JSON.stringify(text)}`
          )
        )
      )
    )
  ),
  /** DNS servers for the SRV lookups ("ip" or "ip:port"); empty for the system's. */
  dnsServers: Schema.Array(Schema.String),
  /** A directory where sidecars on this machine announce themselves and find each other; null for none. */
  localDiscovery: Schema.NullOr(Schema.NonEmptyString),
  /** Announce this service and find the others by mDNS on the LAN. */
  mdns: Schema.Boolean,
  /** Keeps two meshes on one LAN apart (mDNS). */
  meshName: ServiceName,
  /** IPv4 address of the interface mDNS uses; null for all. */
  mdnsInterface: Schema.NullOr(Schema.String),
  /** This instance's share of its service's traffic, as announced. */
  weight: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 1000 }))),
  requestTimeoutMs: PositiveMs,
  drainTimeoutMs: PositiveMs,
  accessLog: Schema.Boolean
})

export type SidecarConfig = typeof SidecarConfigSchema.Type

export class ConfigInvalid extends Data.TaggedError("ConfigInvalid")<{ readonly message: string; readonly problems: ReadonlyArray<string> }> {}

/** Where each setting comes from, in README order. */
export const settings = [
  { key: "service", env: "IIP_MESH_SERVICE", flag: "--service", help: "the service this sidecar fronts" },
  { key: "node", env: "IIP_MESH_NODE", flag: "--node", help: "this sidecar's name (default: host-pid)" },
  { key: "app", env: "IIP_MESH_APP", flag: "--app", help: "the local app, HOST:PORT, or none" },
  { key: "outbound", env: "IIP_MESH_OUTBOUND", flag: "--outbound", help: "HTTP listener for the app's calls (default 127.0.0.1:4140)" },
  { key: "inbound", env: "IIP_MESH_INBOUND", flag: "--inbound", help: "IIP listener for other sidecars (default 127.0.0.1:4143)" },
  { key: "admin", env: "IIP_MESH_ADMIN", flag: "--admin", help: "admin HTTP listener (default 127.0.0.1:9990)" },
  { key: "endpoints", env: "IIP_MESH_ENDPOINTS", flag: "--endpoint", help: "SERVICE=HOST:PORT[#WEIGHT], comma-separated or repeated" },
  { key: "endpointsFile", env: "IIP_MESH_ENDPOINTS_FILE", flag: "--endpoints-file", help: "a JSON file of endpoints, re-read when it changes" },
  { key: "dnsSrv", env: "IIP_MESH_DNS_SRV", flag: "--dns-srv", help: "SERVICE=SRV-NAME (full name), comma-separated or repeated" },
  { key: "kubernetes", env: "IIP_MESH_KUBERNETES", flag: "--kubernetes", help: "SERVICE=NAMESPACE/NAME, a Kubernetes Service whose EndpointSlices to watch (in-cluster), comma-separated or repeated" },
  { key: "dnsServers", env: "IIP_MESH_DNS_SERVERS", flag: "--dns-server", help: "DNS servers for SRV lookups, IP[:PORT] (default: the system's)" },
  { key: "localDiscovery", env: "IIP_MESH_LOCAL_DISCOVERY", flag: "--local-discovery", help: "a directory where sidecars on this machine find each other" },
  { key: "mdns", env: "IIP_MESH_MDNS", flag: "--mdns", help: "announce and discover by mDNS on the LAN (default off)" },
  { key: "meshName", env: "IIP_MESH_MESH_NAME", flag: "--mesh-name", help: "mesh name for mDNS (default: default)" },
  { key: "mdnsInterface", env: "IIP_MESH_MDNS_INTERFACE", flag: "--mdns-interface", help: "IPv4 address of the interface for mDNS (default: all)" },
  { key: "weight", env: "IIP_MESH_WEIGHT", flag: "--weight", help: "this instance's weight, as announced (default 1)" },
  { key: "requestTimeoutMs", env: "IIP_MESH_REQUEST_TIMEOUT", flag: "--request-timeout", help: "deadline of a proxied request (default 15s)" },
  { key: "drainTimeoutMs", env: "IIP_MESH_DRAIN_TIMEOUT", flag: "--drain-timeout", help: "how long a stop lets requests finish (default 10s)" },
  { key: "accessLog", env: "IIP_MESH_ACCESS_LOG", flag: "--access-log", help: "one JSON line per request on stdout (default off)" }
] as const

type Key = (typeof settings)[number]["key"]

export const defaults = (): Record<Key, unknown> => ({
  service: undefined,
  node: `${hostname()}-${process.pid}`,
  app: null,
  outbound: "127.0.0.1:4140",
  inbound: "127.0.0.1:4143",
  admin: "127.0.0.1:9990",
  endpoints: {},
  endpointsFile: null,
  dnsSrv: {},
  kubernetes: {},
  dnsServers: [],
  localDiscovery: null,
  mdns: false,
  meshName: "default",
  mdnsInterface: null,
  weight: 1,
  requestTimeoutMs: 15_000,
  drainTimeoutMs: 10_000,
  accessLog: false
})

/** "SERVICE=HOST:PORT[#WEIGHT]" entries into the endpoints shape; malformed entries are kept for the schema to reject. */
export const parseEndpointList = (entries: ReadonlyArray<string>): Record<string, Array<{ address: string; weight: unknown }>> => {
  const out: Record<string, Array<{ address: string; weight: unknown }>> = {}
  for (const entry of entries.flatMap((e) => e.split(",")).map((e) => e.trim()).filter((e) => e !== "")) {
    const eq = entry.indexOf("=")
    const service = eq === -1 ? entry : entry.slice(0, eq)
    const rest = eq === -1 ? "" : entry.slice(eq + 1)
    const hash = rest.lastIndexOf("#")
    const address = hash === -1 ? rest : rest.slice(0, hash)
    const weight = hash === -1 ? 1 : /^\d+$/.test(rest.slice(hash + 1)) ? Number(rest.slice(hash + 1)) : rest.slice(hash + 1)
    ;(out[service] ??= []).push({ address, weight })
  }
  return out
}

/** "15s", "500ms", "2m" or a bare number of milliseconds; anything else is kept for the schema to reject. */
const parseDurationMs = (text: string): unknown => {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim())
  if (match === null) return text
  const value = Number(match[1])
  return Math.round(match[2] === "s" ? value * 1000 : match[2] === "m" ? value * 60_000 : value)
}

const fromText = (key: Key, values: ReadonlyArray<string>): unknown => {
  const last = values[values.length - 1]!
  switch (key) {
    case "endpoints":
      return parseEndpointList(values)
    case "dnsSrv":
    case "kubernetes":
      return Object.fromEntries(
        values.flatMap((v) => v.split(",")).map((e) => e.trim()).filter((e) => e !== "").map((e) => [e.slice(0, Math.max(0, e.indexOf("="))), e.slice(e.indexOf("=") + 1)])
      )
    case "dnsServers":
      return values.flatMap((v) => v.split(",")).map((e) => e.trim()).filter((e) => e !== "")
    case "requestTimeoutMs":
    case "drainTimeoutMs":
      return parseDurationMs(last)
    case "weight":
      return /^\d+$/.test(last) ? Number(last) : last
    case "mdnsInterface":
      return last === "" || last === "all" ? null : last
    case "mdns":
    case "accessLog":
      return last === "" || last === "true" || last === "1" ? true : last === "false" || last === "0" ? false : last
    case "app":
      return last === "none" ? null : last
    default:
      return last
  }
}

export interface ConfigSources {
  /** Flags as given: name (with --) to values, in order. */
  readonly flags: ReadonlyMap<string, ReadonlyArray<string>>
  readonly env: Record<string, string | undefined>
  /** A JSON config file; `--config` or IIP_MESH_CONFIG name it. */
  readonly file?: string | undefined
}

/** Splits argv into flags; `--name value`, `--name=value`, and bare boolean `--access-log`. */
export const parseFlags = (argv: ReadonlyArray<string>): Map<string, Array<string>> => {
  const flags = new Map<string, Array<string>>()
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (!arg.startsWith("--")) continue
    const eq = arg.indexOf("=")
    const name = eq === -1 ? arg : arg.slice(0, eq)
    const next = argv[i + 1]
    const value = eq !== -1 ? arg.slice(eq + 1) : next !== undefined && !next.startsWith("--") ? (i++, next) : ""
    flags.set(name, [...(flags.get(name) ?? []), value])
  }
  return flags
}

/** Merges the sources and validates the result; every problem is reported at once. */
export const loadSidecarConfig = (sources: ConfigSources): Result.Result<SidecarConfig, ConfigInvalid> => {
  const raw: Record<string, unknown> = defaults()
  const origin = new Map<string, string>(Object.keys(raw).map((k) => [k, "default"]))
  const problems: Array<string> = []
  const known = new Set<string>([...settings.map((s) => s.flag), "--config"])
  for (const name of sources.flags.keys()) if (!known.has(name)) problems.push(`${name}: unknown flag`)
  const file = sources.flags.get("--config")?.at(-1) ?? sources.env.IIP_MESH_CONFIG ?? sources.file
  if (file !== undefined) {
    try {
      const parsed: unknown = JSON.parse(readFileSync(file, "utf8"))
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("expected a JSON object")
      for (const [key, value] of Object.entries(parsed)) {
        if (!(key in raw)) {
          problems.push(`${key} (from ${file}): unknown setting`)
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
      const got = expected.includes(", got ") ? "" : `, got ${JSON.stringify(value)}`
      problems.push(`${path.join(".")} (from ${origin.get(path[0] ?? "") ?? "default"}): ${expected}${got}`)
    }
  }
  if (problems.length > 0) {
    return Result.fail(new ConfigInvalid({ message: `invalid configuration:\n  ${problems.join("\n  ")}`, problems }))
  }
  return Result.succeed((result as Result.Success<SidecarConfig, never>).success)
}
