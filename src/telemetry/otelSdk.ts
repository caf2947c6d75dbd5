// The OpenTelemetry SDK packages and Effect's bridge to them, loaded on first use. A sidecar keeps
// its own spans as compact records (spanRecord.ts) and shows them from its trace store, so with no
// exporter configured nothing here is needed: tracing.ts, spanRecord.ts, propagation.ts and
// otelEnv.ts reach these packages only through this module, when an exporter is configured, when
// code asks for the SDK tracer or Effect's tracing layer, for a ratio sampler, or for a request that
// carries tracestate or baggage. Left unloaded they save about 2 MB of an idle sidecar's resident
// memory (test/cli/lazyModules.test.ts keeps them out of a default sidecar). The packages are
// CommonJS (@effect/opentelemetry is ESM without top-level await), so `require` loads them at once
// and the instances are the ones an `import` of the same package gets.
import { createRequire } from "node:module"

const load = createRequire(import.meta.url)

type Core = typeof import("@opentelemetry/core")
type Resources = typeof import("@opentelemetry/resources")
type SdkTraceBase = typeof import("@opentelemetry/sdk-trace-base")
type OtelTracerModule = typeof import("@effect/opentelemetry/OtelTracer")

let core: Core | undefined
let resources: Resources | undefined
let sdkTraceBase: SdkTraceBase | undefined
let otelTracer: OtelTracerModule | undefined

export const otelCore = (): Core => (core ??= load("@opentelemetry/core") as Core)
export const otelResources = (): Resources => (resources ??= load("@opentelemetry/resources") as Resources)
export const otelSdkTraceBase = (): SdkTraceBase => (sdkTraceBase ??= load("@opentelemetry/sdk-trace-base") as SdkTraceBase)
export const effectOtelTracer = (): OtelTracerModule => (otelTracer ??= load("@effect/opentelemetry/OtelTracer") as OtelTracerModule)
