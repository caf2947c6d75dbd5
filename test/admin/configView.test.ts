// What the admin's /config and the sidecar's log show of the OTEL_* variables (issue 13, point 8):
// an exporter URL's `user:password@`, credential-like query parameters and fragment are shown as
// `***`; a bad OTEL_* value is echoed in its warning (on /config and in the `otel-setting-ignored`
// log event) with control characters escaped, its length clamped, and credentials left out.
import { afterEach, describe, expect, it } from "vitest"
import { Cleanup } from "../support/iipRaw.ts"
import { call, sidecarConfig, startAdmin, startSidecar } from "../support/sidecarHarness.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

interface ConfigBody {
  readonly telemetry: {
    readonly exporters: ReadonlyArray<{ readonly url?: string }>
    readonly warnings: ReadonlyArray<{ readonly variable: string; readonly message: string }>
  }
}

describe("/config and the OTEL_* warnings", () => {
  it("never show credentials, and show bad values escaped and clamped", async () => {
    const logged: Array<Record<string, unknown>> = []
    const env = {
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://tracer:s3cret-pass@127.0.0.1:1/v1/traces?api_key=k3y-value&region=eu#access_token=fr4gment",
      OTEL_TRACES_SAMPLER: `bogus\r\n{"event":"forged"}\u001b[2J\u2028${"x".repeat(5000)}`,
      OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: "user:hunter2@host"
    }
    const running = await startSidecar(cleanup, sidecarConfig({ service: "store" }), (event, fields) => logged.push({ event, ...fields }), { env })
    const admin = await startAdmin(cleanup, running)
    const answer = await call(Number(new URL(admin).port), { path: "/config", headers: { host: "127.0.0.1" } })
    expect(answer.status).toBe(200)
    const text = answer.body.toString()
    for (const secret of ["s3cret-pass", "k3y-value", "fr4gment", "hunter2"]) expect(text).not.toContain(secret)
    const body = JSON.parse(text) as ConfigBody
    expect(body.telemetry.exporters.map((e) => e.url)).toStrictEqual(["http://***@127.0.0.1:1/v1/traces?api_key=***&region=eu#***"])

    const sampler = body.telemetry.warnings.find((w) => w.variable === "OTEL_TRACES_SAMPLER")!
    expect(sampler.message).not.toMatch(/[\u0000-\u001f\u2028]/)
    expect(sampler.message).toContain(String.raw`bogus\r\n{\"event\":\"forged\"}\u001b[2j\u2028xxx`) // lower-cased as read
    expect(sampler.message.length).toBeLessThan(400)
    const timeout = body.telemetry.warnings.find((w) => w.variable === "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")!
    expect(timeout.message).toContain("***@host")

    const events = logged.filter((l) => l.event === "otel-setting-ignored")
    expect(events.map((e) => e.variable)).toStrictEqual(["OTEL_TRACES_SAMPLER", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"])
    const line = JSON.stringify(events)
    for (const secret of ["s3cret-pass", "k3y-value", "hunter2"]) expect(line).not.toContain(secret)
    expect(line).not.toMatch(/[\u0000-\u001f\u2028]/)
  })
})
