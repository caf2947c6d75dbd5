// The standard OTEL_* environment variables, read into plain tracing settings: service name and
// resource attributes, sampler, exporters. Pure (the environment comes in as a record), so it can
// be tested and shown in the admin's /config; tracing.ts turns the settings into a provider.
//
// Precedence, decided here once:
//   enabled       the caller's `enabled` option when given, else not OTEL_SDK_DISABLED=true
//   service.name  OTEL_SERVICE_NAME, else the sidecar's configured service. A `service.name` in
//                 OTEL_RESOURCE_ATTRIBUTES is ignored: in one process several sidecars share the
//                 environment but each has its own service.
//   resource      telemetry.sdk.* < service.instance.id (the caller's `instanceId`) <
//                 OTEL_RESOURCE_ATTRIBUTES (key=value, comma separated, percent-encoded; one bad
//                 entry discards the whole variable, as the spec says) < service.name above
//   sampler       OTEL_TRACES_SAMPLER (always_on, always_off, traceidratio, parentbased_always_on,
//                 parentbased_always_off, parentbased_traceidratio; default parentbased_always_on)
//                 with OTEL_TRACES_SAMPLER_ARG as the ratio (0..1, default 1)
//   exporters     OTEL_TRACES_EXPORTER (otlp, console, none; comma separated). When it is unset, OTLP
//                 export is on only if OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT
//                 is set (the spec's default is otlp, but a sidecar with nothing to send to should
//                 not retry localhost:4318 forever). `none` wins over everything.
//   protocol      OTEL_EXPORTER_OTLP_TRACES_PROTOCOL > OTEL_EXPORTER_OTLP_PROTOCOL > http/protobuf
//                 (also http/json and grpc)
//   url           OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as it is > OTEL_EXPORTER_OTLP_ENDPOINT plus
//                 /v1/traces (for gRPC as it is) > http://localhost:4318/v1/traces (gRPC :4317)
//   headers, timeout, compression
//                 the _TRACES_ variable over the general one (headers are merged, the specific
//                 ones winning). For gRPC the exporter reads headers from process.env itself.
// Empty values count as unset. A value that cannot be used is reported as a warning (naming the
// variable) and the default is used instead, as OpenTelemetry SDKs do; nothing here throws. A
// warning reaches the log and /config, so the value it echoes is `shown`: credentials in URL form
// blanked, control characters escaped, the length clamped (a misplaced secret may be in any of them).
import { quoted, redactUrl } from "../iip/redact.ts"
import { otelCore } from "./otelSdk.ts"

export type Env = Readonly<Record<string, string | undefined>>

export interface TelemetryWarning {
  readonly variable: string
  readonly message: string
}

export type SamplerName =
  | "always_on"
  | "always_off"
  | "traceidratio"
  | "parentbased_always_on"
  | "parentbased_always_off"
  | "parentbased_traceidratio"

export interface SamplerSettings {
  readonly name: SamplerName
  /** The ratio for the traceidratio samplers, 0..1. */
  readonly ratio: number
}

export type OtlpProtocol = "http/protobuf" | "http/json" | "grpc"

export interface OtlpSettings {
  readonly kind: "otlp"
  readonly protocol: OtlpProtocol
  readonly url: string
  /** May hold credentials: never show them. */
  readonly headers: Readonly<Record<string, string>>
  readonly timeoutMillis: number | undefined
  readonly compression: "gzip" | "none" | undefined
}

export type ExporterSettings = OtlpSettings | { readonly kind: "console" }

export interface TracingSettings {
  readonly enabled: boolean
  readonly serviceName: string
  /** Every resource attribute but the SDK's own, service.name included. */
  readonly resourceAttributes: Readonly<Record<string, string>>
  readonly sampler: SamplerSettings
  readonly exporters: ReadonlyArray<ExporterSettings>
  readonly warnings: ReadonlyArray<TelemetryWarning>
}

export interface SettingsInput {
  /** The sidecar's configured service. */
  readonly service: string
  readonly env: Env
  readonly enabled?: boolean
  /** service.instance.id, for example the sidecar's node name. */
  readonly instanceId?: string
}

const samplerNames: ReadonlyArray<SamplerName> = [
  "always_on",
  "always_off",
  "traceidratio",
  "parentbased_always_on",
  "parentbased_always_off",
  "parentbased_traceidratio"
]
const protocols: ReadonlyArray<OtlpProtocol> = ["http/protobuf", "http/json", "grpc"]

export const readTracingSettings = (input: SettingsInput): TracingSettings => {
  const warnings: Array<TelemetryWarning> = []
  const warn = (variable: string, message: string) => warnings.push({ variable, message })
  const get = (name: string): string | undefined => {
    const value = input.env[name]?.trim()
    return value === undefined || value === "" ? undefined : value
  }

  const serviceName = get("OTEL_SERVICE_NAME") ?? input.service
  const resourceAttributes: Record<string, string> = {
    ...(input.instanceId === undefined ? {} : { "service.instance.id": input.instanceId }),
    ...resourceAttributesOf(get("OTEL_RESOURCE_ATTRIBUTES"), warn),
    "service.name": serviceName
  }

  return {
    enabled: input.enabled ?? (get("OTEL_SDK_DISABLED")?.toLowerCase() !== "true"),
    serviceName,
    resourceAttributes,
    sampler: samplerOf(get, warn),
    exporters: exportersOf(get, warn),
    warnings
  }
}

type Get = (name: string) => string | undefined
type Warn = (variable: string, message: string) => void

/** A value from the environment as a warning quotes it. */
const shown = (value: string): string => quoted(redactUrl(value), 120)

/** OTEL_RESOURCE_ATTRIBUTES without service.name; one bad entry discards the whole value. */
const resourceAttributesOf = (raw: string | undefined, warn: Warn): Record<string, string> => {
  const attributes: Record<string, string> = {}
  if (raw === undefined) return attributes
  for (const entry of raw.split(",")) {
    if (entry.trim() === "") continue
    const parts = entry.split("=")
    const key = decode(parts[0]?.trim() ?? "")
    const value = parts.length === 2 ? decode(parts[1]!.trim()) : undefined
    if (key === undefined || key === "" || value === undefined) {
      warn("OTEL_RESOURCE_ATTRIBUTES", `expected key=value pairs with ',' and '=' percent-encoded, got ${shown(entry)}; the variable is ignored`)
      return {}
    }
    if (key !== "service.name") attributes[key] = value
  }
  return attributes
}

const decode = (text: string): string | undefined => {
  try {
    return decodeURIComponent(text)
  } catch {
    return undefined
  }
}

const samplerOf = (get: Get, warn: Warn): SamplerSettings => {
  const raw = get("OTEL_TRACES_SAMPLER")?.toLowerCase()
  let name: SamplerName = "parentbased_always_on"
  if (raw !== undefined) {
    if ((samplerNames as ReadonlyArray<string>).includes(raw)) name = raw as SamplerName
    else warn("OTEL_TRACES_SAMPLER", `${shown(raw)} is not supported (one of ${samplerNames.join(", ")}); using parentbased_always_on`)
  }
  let ratio = 1
  const arg = get("OTEL_TRACES_SAMPLER_ARG")
  if (arg !== undefined && name.endsWith("traceidratio")) {
    const parsed = Number(arg)
    if (Number.isFinite(parsed) && parsed >= 0 && parsed <= 1) ratio = parsed
    else warn("OTEL_TRACES_SAMPLER_ARG", `expected a ratio between 0 and 1, got ${shown(arg)}; using 1`)
  }
  return { name, ratio }
}

const exportersOf = (get: Get, warn: Warn): Array<ExporterSettings> => {
  const listed = get("OTEL_TRACES_EXPORTER")
  const names = listed === undefined
    ? (get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") ?? get("OTEL_EXPORTER_OTLP_ENDPOINT")) === undefined ? [] : ["otlp"]
    : listed.split(",").map((name) => name.trim().toLowerCase()).filter((name) => name !== "")
  if (names.includes("none")) return []
  const exporters: Array<ExporterSettings> = []
  for (const name of new Set(names)) {
    if (name === "otlp") {
      const otlp = otlpOf(get, warn)
      if (otlp !== undefined) exporters.push(otlp)
    } else if (name === "console") exporters.push({ kind: "console" })
    else warn("OTEL_TRACES_EXPORTER", `${shown(name)} is not supported (otlp, console or none); ignored`)
  }
  return exporters
}

const otlpOf = (get: Get, warn: Warn): OtlpSettings | undefined => {
  const protocolVariable = get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") === undefined ? "OTEL_EXPORTER_OTLP_PROTOCOL" : "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
  const rawProtocol = get(protocolVariable)?.toLowerCase()
  let protocol: OtlpProtocol = "http/protobuf"
  if (rawProtocol !== undefined) {
    if ((protocols as ReadonlyArray<string>).includes(rawProtocol)) protocol = rawProtocol as OtlpProtocol
    else warn(protocolVariable, `${shown(rawProtocol)} is not supported (one of ${protocols.join(", ")}); using http/protobuf`)
  }

  const specific = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
  const general = get("OTEL_EXPORTER_OTLP_ENDPOINT")
  const url = specific
    ?? (general === undefined ? undefined : protocol === "grpc" ? general : `${general.replace(/\/+$/, "")}/v1/traces`)
    ?? (protocol === "grpc" ? "http://localhost:4317" : "http://localhost:4318/v1/traces")
  if (!URL.canParse(url)) {
    warn(specific === undefined ? "OTEL_EXPORTER_OTLP_ENDPOINT" : "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", `${shown(url)} is not a URL; OTLP export is off`)
    return undefined
  }

  const timeoutVariable = get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") === undefined ? "OTEL_EXPORTER_OTLP_TIMEOUT" : "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
  const rawTimeout = get(timeoutVariable)
  let timeoutMillis: number | undefined
  if (rawTimeout !== undefined) {
    const parsed = Number(rawTimeout)
    if (Number.isFinite(parsed) && parsed > 0) timeoutMillis = parsed
    else warn(timeoutVariable, `expected a positive number of milliseconds, got ${shown(rawTimeout)}; using the default`)
  }

  const compressionVariable = get("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION") === undefined ? "OTEL_EXPORTER_OTLP_COMPRESSION" : "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"
  const rawCompression = get(compressionVariable)?.toLowerCase()
  let compression: "gzip" | "none" | undefined
  if (rawCompression !== undefined) {
    if (rawCompression === "gzip" || rawCompression === "none") compression = rawCompression
    else warn(compressionVariable, `expected gzip or none, got ${shown(rawCompression)}; using none`)
  }

  const { parseKeyPairsIntoRecord } = otelCore()
  return {
    kind: "otlp",
    protocol,
    url,
    headers: { ...parseKeyPairsIntoRecord(get("OTEL_EXPORTER_OTLP_HEADERS")), ...parseKeyPairsIntoRecord(get("OTEL_EXPORTER_OTLP_TRACES_HEADERS")) },
    timeoutMillis,
    compression
  }
}
