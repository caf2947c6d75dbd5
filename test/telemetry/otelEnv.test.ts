// The OTEL_* variables as src/telemetry/otelEnv.ts reads them: which one wins, what the defaults
// are, and how an unusable value is reported (a warning naming the variable, and the default).
import { describe, expect, it } from "vitest"
import { readTracingSettings } from "../../src/telemetry/otelEnv.ts"

const read = (env: Record<string, string>, extra: { enabled?: boolean; instanceId?: string } = {}) => readTracingSettings({ service: "catalog", env, ...extra })

describe("readTracingSettings", () => {
  it("defaults: on, the configured service, parentbased_always_on, no exporter", () => {
    expect(read({})).toStrictEqual({
      enabled: true,
      serviceName: "catalog",
      resourceAttributes: { "service.name": "catalog" },
      sampler: { name: "parentbased_always_on", ratio: 1 },
      exporters: [],
      warnings: []
    })
  })

  it("service.name: OTEL_SERVICE_NAME, else the service; OTEL_RESOURCE_ATTRIBUTES cannot set it", () => {
    expect(read({ OTEL_RESOURCE_ATTRIBUTES: "service.name=x" }).serviceName).toBe("catalog")
    const settings = read({ OTEL_SERVICE_NAME: "from-env", OTEL_RESOURCE_ATTRIBUTES: "service.name=x" })
    expect(settings.serviceName).toBe("from-env")
    expect(settings.resourceAttributes["service.name"]).toBe("from-env")
    expect(read({ OTEL_SERVICE_NAME: "  " }).serviceName).toBe("catalog") // empty counts as unset
  })

  it("resource attributes: percent-decoded, over the instance id; one bad entry discards the variable", () => {
    expect(read({ OTEL_RESOURCE_ATTRIBUTES: "a=1, b = x%2Cy%3Dz ,,k8s.pod.name=p" }, { instanceId: "node-1" }).resourceAttributes).toStrictEqual({
      "service.instance.id": "node-1",
      a: "1",
      b: "x,y=z",
      "k8s.pod.name": "p",
      "service.name": "catalog"
    })
    expect(read({ OTEL_RESOURCE_ATTRIBUTES: "service.instance.id=env" }, { instanceId: "node-1" }).resourceAttributes["service.instance.id"]).toBe("env")
    for (const bad of ["a=1,b", "a=1=2", "=1", "a=%zz"]) {
      const settings = read({ OTEL_RESOURCE_ATTRIBUTES: bad })
      expect(settings.resourceAttributes, bad).toStrictEqual({ "service.name": "catalog" })
      expect(settings.warnings.map((w) => w.variable)).toStrictEqual(["OTEL_RESOURCE_ATTRIBUTES"])
    }
  })

  it("sampler and ratio", () => {
    expect(read({ OTEL_TRACES_SAMPLER: "TraceIdRatio", OTEL_TRACES_SAMPLER_ARG: "0.25" }).sampler).toStrictEqual({ name: "traceidratio", ratio: 0.25 })
    expect(read({ OTEL_TRACES_SAMPLER: "parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG: "0" }).sampler).toStrictEqual({ name: "parentbased_traceidratio", ratio: 0 })
    expect(read({ OTEL_TRACES_SAMPLER: "always_off", OTEL_TRACES_SAMPLER_ARG: "nonsense" }).warnings).toStrictEqual([]) // no ratio to read
    const bad = read({ OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "1.5" })
    expect(bad.sampler).toStrictEqual({ name: "traceidratio", ratio: 1 })
    expect(bad.warnings.map((w) => w.variable)).toStrictEqual(["OTEL_TRACES_SAMPLER_ARG"])
    expect(read({ OTEL_TRACES_SAMPLER: "xray" }).sampler.name).toBe("parentbased_always_on")
  })

  it("OTLP is on when an endpoint is set or OTEL_TRACES_EXPORTER names it; none wins", () => {
    expect(read({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" }).exporters).toStrictEqual([
      { kind: "otlp", protocol: "http/protobuf", url: "http://collector:4318/v1/traces", headers: {}, timeoutMillis: undefined, compression: undefined }
    ])
    expect(read({ OTEL_TRACES_EXPORTER: "otlp" }).exporters).toMatchObject([{ kind: "otlp", url: "http://localhost:4318/v1/traces" }])
    expect(read({ OTEL_TRACES_EXPORTER: "otlp", OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" }).exporters).toMatchObject([{ protocol: "grpc", url: "http://localhost:4317" }])
    expect(read({ OTEL_TRACES_EXPORTER: "none", OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" }).exporters).toStrictEqual([])
    expect(read({ OTEL_TRACES_EXPORTER: "console, otlp, otlp", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://c/t" }).exporters).toMatchObject([
      { kind: "console" },
      { kind: "otlp", url: "http://c/t" }
    ])
    const zipkin = read({ OTEL_TRACES_EXPORTER: "zipkin" })
    expect(zipkin.exporters).toStrictEqual([])
    expect(zipkin.warnings.map((w) => w.variable)).toStrictEqual(["OTEL_TRACES_EXPORTER"])
  })

  it("protocol, endpoint, timeout, compression and headers: the traces variable over the general one", () => {
    const [otlp] = read({
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://general:4318",
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://specific:4318/traces",
      OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
      OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/json",
      OTEL_EXPORTER_OTLP_TIMEOUT: "1000",
      OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: "2000",
      OTEL_EXPORTER_OTLP_COMPRESSION: "none",
      OTEL_EXPORTER_OTLP_TRACES_COMPRESSION: "gzip",
      OTEL_EXPORTER_OTLP_HEADERS: "a=1,b=2",
      OTEL_EXPORTER_OTLP_TRACES_HEADERS: "b=3"
    }).exporters
    expect(otlp).toStrictEqual({
      kind: "otlp",
      protocol: "http/json",
      url: "http://specific:4318/traces",
      headers: { a: "1", b: "3" },
      timeoutMillis: 2000,
      compression: "gzip"
    })
  })

  it("unusable exporter values are reported, naming the variable", () => {
    const settings = read({
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318",
      OTEL_EXPORTER_OTLP_PROTOCOL: "thrift",
      OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: "-1",
      OTEL_EXPORTER_OTLP_COMPRESSION: "zstd"
    })
    expect(settings.exporters).toMatchObject([{ protocol: "http/protobuf", timeoutMillis: undefined, compression: undefined }])
    expect(settings.warnings.map((w) => w.variable)).toStrictEqual(["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_COMPRESSION"])
    const badUrl = read({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "not a url" })
    expect(badUrl.exporters).toStrictEqual([])
    expect(badUrl.warnings.map((w) => w.variable)).toStrictEqual(["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"])
  })

  it("enabled: the option, else OTEL_SDK_DISABLED", () => {
    expect(read({ OTEL_SDK_DISABLED: "TRUE" }).enabled).toBe(false)
    expect(read({ OTEL_SDK_DISABLED: "true" }, { enabled: true }).enabled).toBe(true)
    expect(read({}, { enabled: false }).enabled).toBe(false)
  })
})

describe("warnings echo values safely", () => {
  it("a bad value is quoted with control characters escaped, clamped, and URL credentials blanked", () => {
    const settings = read({
      OTEL_TRACES_EXPORTER: "otlp,\u001b]0;title\u0007zipkin",
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://u:pw-secret@ bad host/v1?token=tok-secret",
      OTEL_RESOURCE_ATTRIBUTES: `a=1,${"b".repeat(10_000)}`
    })
    const byVariable = Object.fromEntries(settings.warnings.map((w) => [w.variable, w.message]))
    expect(byVariable.OTEL_TRACES_EXPORTER).toBe(String.raw`"\u001b]0;title\u0007zipkin" is not supported (otlp, console or none); ignored`)
    expect(byVariable.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).toBe(`"http://***@ bad host/v1?token=***" is not a URL; OTLP export is off`)
    expect(byVariable.OTEL_RESOURCE_ATTRIBUTES).toMatch(/got "b{120}\.\.\.\(9880 more\)"; the variable is ignored$/)
  })
})
