// The sidecar's configuration (src/config/loadSidecarConfig.ts): flags, environment variables and a
// JSON config file merged as flag > env > file > default, validated once, and every problem
// reported together in one message that names the setting, where its value came from and what was
// expected. Plus the CLI: `iip-mesh sidecar` with bad settings prints all of them on stderr and
// exits non-zero without starting anything.
import { Result } from "effect"
import { execFileSync, spawn } from "node:child_process"
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { pickerNames } from "../../src/balancer/serviceBalancer.ts"
import { parseFlags } from "../../src/config/flags.ts"
import { type ConfigInvalid, loadSidecarConfig, MAX_CONFIG_FILE_BYTES } from "../../src/config/loadSidecarConfig.ts"
import type { SidecarConfig } from "../../src/config/sidecarConfig.ts"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"
import { withTimeout } from "../support/iipRaw.ts"

const dir = mkdtempSync(join(tmpdir(), "iip-mesh-config-"))
const writeJson = (name: string, value: unknown): string => {
  const file = join(dir, name)
  writeFileSync(file, typeof value === "string" ? value : JSON.stringify(value))
  return file
}

const load = (argv: ReadonlyArray<string>, env: Record<string, string | undefined> = {}, file?: string) =>
  loadSidecarConfig({ flags: parseFlags(argv), env, ...(file === undefined ? {} : { file }) })

const ok = (result: Result.Result<SidecarConfig, ConfigInvalid>): SidecarConfig => {
  if (Result.isFailure(result)) throw new Error(`expected a valid configuration, got: ${result.failure.message}`)
  return result.success
}

const problems = (result: Result.Result<SidecarConfig, ConfigInvalid>): ConfigInvalid => {
  if (Result.isSuccess(result)) throw new Error(`expected a configuration error, got ${JSON.stringify(result.success)}`)
  return result.failure
}

// After every describe block of the file: the balancing settings' tests write files here too.
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe("loadSidecarConfig", () => {
  it("three bad flag values are reported together in one message, each naming the setting and its source", () => {
    const error = problems(load(["--service", "store", "--app", "localhost:99999", "--request-timeout", "soon", "--endpoint", "catalog=127.0.0.1:80#0"]))
    expect(error.problems).toHaveLength(3)
    expect(error.message.startsWith("invalid configuration:")).toBe(true)
    for (const line of [
      `app (from --app): Expected HOST:PORT with a port of 0..65535, got "localhost:99999"`,
      `requestTimeoutMs (from --request-timeout): Expected a duration like 15s or 500ms, got "soon"`,
      `endpoints.catalog.0.weight (from --endpoint): Expected a value between 1 and 1000, got 0`
    ]) {
      expect(error.problems).toContain(line)
      expect(error.message).toContain(line)
    }
  })

  it("a service name in --endpoint that is not a DNS label is reported, not dropped", () => {
    expect(problems(load(["--service", "store", "--endpoint", "Bad_Svc=127.0.0.1:80"])).problems).toStrictEqual([
      `endpoints (from --endpoint): Expected service names that are DNS labels (a-z, 0-9, -), got "Bad_Svc"`
    ])
  })

  it("a bad value names the environment variable or the config file it came from", () => {
    const file = writeJson("bad-values.json", { drainTimeoutMs: -5, outbound: "nowhere" })
    const error = problems(load([], { IIP_MESH_SERVICE: "store", IIP_MESH_APP: "x", IIP_MESH_CONFIG: file }))
    expect(error.problems).toHaveLength(3)
    expect(error.problems).toContain(`app (from IIP_MESH_APP): Expected HOST:PORT with a port of 0..65535, got "x"`)
    expect(error.problems.find((p) => p.startsWith(`drainTimeoutMs (from ${file}):`))).toMatch(/got -5$/)
    expect(error.problems).toContain(`outbound (from ${file}): Expected HOST:PORT with a port of 0..65535, got "nowhere"`)
  })

  it("defaults apply when nothing is set but the service", () => {
    const config = ok(load(["--service", "store"]))
    expect(config).toMatchObject({
      service: "store",
      app: null,
      outbound: "127.0.0.1:4140",
      inbound: "127.0.0.1:4143",
      admin: "127.0.0.1:9990",
      endpoints: {},
      requestTimeoutMs: 15_000,
      drainTimeoutMs: 10_000,
      accessLog: false
    })
    expect(config.node).toMatch(new RegExp(`-${process.pid}$`))
  })

  it("precedence is flag > env > file > default, setting by setting", () => {
    const file = writeJson("layers.json", {
      service: "from-file",
      node: "file-node",
      app: "127.0.0.1:7001",
      requestTimeoutMs: 1111,
      drainTimeoutMs: 2222,
      accessLog: true,
      endpoints: { catalog: [{ address: "10.0.0.1:4143", weight: 3 }] }
    })
    const config = ok(
      load(["--config", file, "--request-timeout", "500ms", "--service", "from-flag"], {
        IIP_MESH_SERVICE: "from-env",
        IIP_MESH_REQUEST_TIMEOUT: "3s",
        IIP_MESH_DRAIN_TIMEOUT: "4s",
        IIP_MESH_APP: "none"
      })
    )
    expect(config.service).toBe("from-flag") // flag over env over file
    expect(config.requestTimeoutMs).toBe(500) // flag over env over file
    expect(config.drainTimeoutMs).toBe(4000) // env over file
    expect(config.app).toBeNull() // env ("none") over file
    expect(config.node).toBe("file-node") // file over default
    expect(config.accessLog).toBe(true) // file over default
    expect(config.endpoints).toStrictEqual({ catalog: [{ address: "10.0.0.1:4143", weight: 3 }] }) // file
    expect(config.outbound).toBe("127.0.0.1:4140") // default
  })

  it("the config file can be named by --config, IIP_MESH_CONFIG or the caller, --config winning", () => {
    const first = writeJson("first.json", { service: "first" })
    const second = writeJson("second.json", { service: "second" })
    const third = writeJson("third.json", { service: "third" })
    expect(ok(load([], {}, first)).service).toBe("first")
    expect(ok(load([], { IIP_MESH_CONFIG: second }, first)).service).toBe("second")
    expect(ok(load(["--config", third], { IIP_MESH_CONFIG: second }, first)).service).toBe("third")
  })

  it("endpoints from flags: comma-separated or repeated, weights after #, default weight 1", () => {
    const config = ok(load(["--service", "store", "--endpoint", "catalog=127.0.0.1:4143#5,catalog=[::1]:4144", "--endpoint", "users=127.0.0.1:5000"]))
    expect(config.endpoints).toStrictEqual({
      catalog: [
        { address: "127.0.0.1:4143", weight: 5 },
        { address: "[::1]:4144", weight: 1 }
      ],
      users: [{ address: "127.0.0.1:5000", weight: 1 }]
    })
  })

  it("endpoint options after ';': identity, security and ca; a bad identity or security is reported", () => {
    const config = ok(load(["--service", "store", "--endpoint", "catalog=10.0.0.5:4143#2;identity=spiffe://iip-mesh.local/svc/catalog,legacy=10.0.0.9:9000;security=tls;ca=/etc/ca.pem"]))
    expect(config.endpoints).toStrictEqual({
      catalog: [{ address: "10.0.0.5:4143", weight: 2, identity: "spiffe://iip-mesh.local/svc/catalog" }],
      legacy: [{ address: "10.0.0.9:9000", weight: 1, security: "tls", ca: "/etc/ca.pem" }]
    })
    const bad = problems(load(["--service", "store", "--endpoint", "catalog=10.0.0.5:4143;identity=catalog;security=tcp"])).problems.join("\n")
    expect(bad).toMatch(/endpoints\.catalog\.0\.identity .*Expected a SPIFFE ID/)
    expect(bad).toMatch(/endpoints\.catalog\.0\.security/)
  })

  it("endpoint option ';version=' labels the endpoint's subset; --app-version, --routes and --routes-poll; bad labels are reported", () => {
    const config = ok(load(["--service", "store", "--endpoint", "pricing=10.0.0.5:4143#3;version=v2,pricing=10.0.0.6:4143;identity=spiffe://iip-mesh.local/svc/pricing;version=v1.0"]))
    expect(config.endpoints).toStrictEqual({
      pricing: [
        { address: "10.0.0.5:4143", weight: 3, version: "v2" },
        { address: "10.0.0.6:4143", weight: 1, identity: "spiffe://iip-mesh.local/svc/pricing", version: "v1.0" }
      ]
    })
    const defaults = ok(load(["--service", "store"]))
    expect([defaults.appVersion, defaults.routes, defaults.routesPollMs]).toStrictEqual([null, null, 5_000])
    const set = ok(load(["--service", "store", "--app-version", "v2", "--routes", "/etc/routes.yaml", "--routes-poll", "2s"]))
    expect([set.appVersion, set.routes, set.routesPollMs]).toStrictEqual(["v2", "/etc/routes.yaml", 2_000])
    expect(ok(load([], { IIP_MESH_SERVICE: "store", IIP_MESH_APP_VERSION: "canary", IIP_MESH_ROUTES: "r.json" })).routes).toBe("r.json")
    const bad = problems(load(["--service", "store", "--app-version", "v 2", "--endpoint", "pricing=10.0.0.5:4143;version=-v2"])).problems.join("\n")
    expect(bad).toMatch(/appVersion \(from --app-version\): Expected a version label/)
    expect(bad).toMatch(/endpoints\.pricing\.0\.version .*Expected a version label/)
  })

  it("--mtls on|permissive|off (unset: decided by the credentials), --tls-credentials-dir, --tls-handshake-timeout", () => {
    const defaults = ok(load(["--service", "store"]))
    expect([defaults.mtls, defaults.tlsCredentialsDir, defaults.tlsHandshakeTimeoutMs]).toStrictEqual([null, null, 10_000])
    const set = ok(load(["--service", "store", "--mtls", "permissive", "--tls-credentials-dir", "/run/creds", "--tls-handshake-timeout", "2s"]))
    expect([set.mtls, set.tlsCredentialsDir, set.tlsHandshakeTimeoutMs]).toStrictEqual(["permissive", "/run/creds", 2000])
    expect(ok(load([], { IIP_MESH_SERVICE: "store", IIP_MESH_MTLS: "off" })).mtls).toBe("off")
    expect(problems(load(["--service", "store", "--mtls", "maybe"])).problems.join("\n")).toMatch(/mtls \(from --mtls\)/)
  })

  it("Kubernetes Services from --kubernetes (repeated or comma-separated) or IIP_MESH_KUBERNETES; a bad one is reported", () => {
    expect(ok(load(["--service", "store"])).kubernetes).toStrictEqual({})
    expect(ok(load(["--service", "store", "--kubernetes", "catalog=shop/catalog,users=auth/users-v2", "--kubernetes", "pay=shop/pay"])).kubernetes).toStrictEqual({
      catalog: "shop/catalog",
      users: "auth/users-v2",
      pay: "shop/pay"
    })
    expect(ok(load([], { IIP_MESH_SERVICE: "store", IIP_MESH_KUBERNETES: "catalog=shop/catalog" })).kubernetes).toStrictEqual({ catalog: "shop/catalog" })
    expect(problems(load(["--service", "store", "--kubernetes", "catalog=catalog"])).problems).toStrictEqual([
      `kubernetes.catalog (from --kubernetes): Expected NAMESPACE/NAME[+NAME...] (DNS labels), got "catalog"`
    ])
    // Version Services that make one service.
    expect(ok(load(["--service", "store", "--kubernetes", "pricing=shop/pricing-v1+pricing-v2"])).kubernetes).toStrictEqual({ pricing: "shop/pricing-v1+pricing-v2" })
    expect(problems(load(["--service", "store", "--kubernetes", "pricing=shop/pricing-v1+"])).problems).toHaveLength(1)
  })

  it("HTTPRoute namespaces from --kubernetes-routes; a bad one is reported", () => {
    expect(ok(load(["--service", "store"])).kubernetesRoutes).toStrictEqual([])
    expect(ok(load(["--service", "store", "--kubernetes-routes", "shop,auth"])).kubernetesRoutes).toStrictEqual(["shop", "auth"])
    expect(ok(load([], { IIP_MESH_SERVICE: "store", IIP_MESH_KUBERNETES_ROUTES: "shop" })).kubernetesRoutes).toStrictEqual(["shop"])
    expect(problems(load(["--service", "store", "--kubernetes-routes", "Shop"])).problems).toStrictEqual([
      `kubernetesRoutes.0 (from --kubernetes-routes): Expected a namespace (a DNS label), got "Shop"`
    ])
  })

  it("an unknown flag is reported (with the other problems), as is an unknown setting in the file", () => {
    const flagError = problems(load(["--service", "store", "--bogus", "1", "--app", "x"]))
    expect(flagError.problems).toContain("--bogus: unknown flag")
    expect(flagError.problems).toHaveLength(2)
    const file = writeJson("unknown-key.json", { service: "store", colour: "blue" })
    expect(problems(load([], {}, file)).problems).toStrictEqual([`colour (from ${file}): unknown setting`])
  })

  it("an argument that is not a flag (one dash, or a stray word) is reported, not ignored", () => {
    expect(problems(load(["-service", "store", "--access-log", "--tracing", "false", "extra"])).problems).toStrictEqual([
      `"-service": not a flag (flags are --name VALUE or --name=VALUE)`,
      `argument 2 (after "-service"): a word that is not a flag, not shown (it may be a value, a secret; flags are --name VALUE or --name=VALUE)`,
      `argument 6 (after "--tracing"): a word that is not a flag, not shown (it may be a value, a secret; flags are --name VALUE or --name=VALUE)`,
      "service: required (set --service or IIP_MESH_SERVICE)"
    ])
  })

  it("a secret flag written wrong (one dash, a space after its =) does not put the secret in the problem", () => {
    const secret = "s3cret-TOKEN-value-0123"
    const cases: ReadonlyArray<[ReadonlyArray<string>, number]> = [[["-admin-token", secret], 2], [[`-admin-token=${secret}`], 1], [["--admin-token=", secret], 1], [["--admin-token", "=", secret], 1]]
    for (const [argv, strays] of cases) {
      const error = problems(load(["--service", "store", ...argv]))
      expect(error.message, argv.join(" ")).not.toContain(secret.slice(0, 6))
      expect(error.problems.filter((p) => p.includes("not a flag")), argv.join(" ")).toHaveLength(strays)
    }
  })

  it("a missing service and an unreadable config file are reported", () => {
    expect(problems(load([])).problems).toStrictEqual(["service: required (set --service or IIP_MESH_SERVICE)"])
    const notJson = writeJson("not-json.json", "{ nope")
    const error = problems(load(["--service", "store"], {}, notJson))
    expect(error.problems).toHaveLength(1)
    expect(error.problems[0]).toMatch(new RegExp(`^config file ${notJson.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: `))
    expect(problems(load(["--service", "store", "--config", join(dir, "missing.json")])).problems[0]).toMatch(/^config file .*missing\.json: .*ENOENT/)
  })

  it("a config file that is not JSON near its adminToken is reported by line, without the text around the error (V8 quotes 10 characters either side)", () => {
    const unquoted = writeJson("unquoted-token.json", `{\n  "service": "store",\n  "adminToken": s3cretTOKENvalue0123\n}`)
    expect(problems(load(["--service", "store"], {}, unquoted)).problems).toStrictEqual([`config file ${unquoted}: Unexpected token on line 3 (not valid JSON; the text around it is not shown: the file may hold a secret)`])
    const short = writeJson("short-token.json", `{"t": s3cret}`)
    expect(problems(load(["--service", "store"], {}, short)).problems).toStrictEqual([`config file ${short}: Unexpected token (not valid JSON; the text around it is not shown: the file may hold a secret)`])
  })
})

describe("loadSidecarConfig: the balancing settings", () => {
  it("default to the balancer's defaults: p2c, no hash key, 1000 pending, budget 0.2 + 10/s, no per-try timeout, no active checks", () => {
    expect(ok(load(["--service", "store"]))).toMatchObject({
      loadBalancer: "p2c",
      hashKey: null,
      maxPendingPerEndpoint: 1000,
      retryBudgetRatio: 0.2,
      retryBudgetMinPerSecond: 10,
      perTryTimeoutMs: null,
      ejectConsecutiveFailures: 5,
      ejectErrorRatePercent: 50,
      ejectionBaseMs: 5000,
      ejectionMaxMs: 300_000,
      maxEjectedPercent: 50,
      healthCheckIntervalMs: null,
      restartWindowMs: 30_000,
      busyPingAfterMs: 1000,
      busyPingTimeoutMs: 2000,
      slowTryFloorMs: 2000,
      idleGcMs: 2000
    })
  })

  it("--idle-gc: a duration from the flag or IIP_MESH_IDLE_GC, off for never, a bad value named", () => {
    expect(ok(load(["--service", "store", "--idle-gc", "5s"])).idleGcMs).toBe(5000)
    expect(ok(load(["--service", "store", "--idle-gc", "off"])).idleGcMs).toBeNull()
    expect(ok(load([], { IIP_MESH_SERVICE: "store", IIP_MESH_IDLE_GC: "500ms" })).idleGcMs).toBe(500)
    expect(problems(load(["--service", "store", "--idle-gc", "0"])).problems.join("\n")).toMatch(/idleGcMs/)
  })

  it("--answer-idle-timeout: a duration from the flag or IIP_MESH_ANSWER_IDLE_TIMEOUT (default 60s, apart from the body idle timeout), a bad value named", () => {
    const defaults = ok(load(["--service", "store"]))
    expect([defaults.answerIdleTimeoutMs, defaults.bodyIdleTimeoutMs]).toStrictEqual([60_000, 10_000])
    expect(ok(load(["--service", "store", "--answer-idle-timeout", "5m"])).answerIdleTimeoutMs).toBe(300_000)
    expect(ok(load([], { IIP_MESH_SERVICE: "store", IIP_MESH_ANSWER_IDLE_TIMEOUT: "90s" })).answerIdleTimeoutMs).toBe(90_000)
    for (const bad of ["0", "2h", "soon", "-1s"]) {
      expect(problems(load(["--service", "store", "--answer-idle-timeout", bad])).problems.join("\n")).toMatch(/answerIdleTimeoutMs \(from --answer-idle-timeout\)/)
    }
  })

  it("--metric-series-idle: a duration from the flag or IIP_MESH_METRIC_SERIES_IDLE (default 10m), at least 1s and at most 1440m (24 hours), a bad value named", () => {
    expect(ok(load(["--service", "store"])).metricSeriesIdleMs).toBe(600_000)
    expect(ok(load(["--service", "store", "--metric-series-idle", "1s"])).metricSeriesIdleMs).toBe(1000)
    expect(ok(load(["--service", "store", "--metric-series-idle", "1440m"])).metricSeriesIdleMs).toBe(86_400_000)
    expect(ok(load([], { IIP_MESH_SERVICE: "store", IIP_MESH_METRIC_SERIES_IDLE: "30m" })).metricSeriesIdleMs).toBe(1_800_000)
    for (const bad of ["999ms", "0", "1441m", "24h", "soon"]) {
      expect(problems(load(["--service", "store", "--metric-series-idle", bad])).problems.join("\n"), bad).toMatch(/metricSeriesIdleMs \(from --metric-series-idle\)/)
    }
  })

  it("--trace-store-rate: a count from the flag or IIP_MESH_TRACE_STORE_RATE (default 100), off for every trace, a bad value named", () => {
    expect(ok(load(["--service", "store"])).traceStoreRate).toBe(100)
    expect(ok(load(["--service", "store", "--trace-store-rate", "20"])).traceStoreRate).toBe(20)
    expect(ok(load(["--service", "store", "--trace-store-rate", "off"])).traceStoreRate).toBeNull()
    expect(ok(load([], { IIP_MESH_SERVICE: "store", IIP_MESH_TRACE_STORE_RATE: "5" })).traceStoreRate).toBe(5)
    expect(problems(load(["--service", "store", "--trace-store-rate", "0"])).problems.join("\n")).toMatch(/traceStoreRate/)
    expect(problems(load(["--service", "store", "--trace-store-rate", "many"])).problems.join("\n")).toMatch(/traceStoreRate/)
  })

  it("--trace-store-bytes: a size from the flag or IIP_MESH_TRACE_STORE_BYTES (default 2MiB), out of range or unreadable named", () => {
    expect(ok(load(["--service", "store"])).traceStoreBytes).toBe(2 * 1024 * 1024)
    expect(ok(load(["--service", "store", "--trace-store-bytes", "8MiB"])).traceStoreBytes).toBe(8 * 1024 * 1024)
    expect(ok(load([], { IIP_MESH_SERVICE: "store", IIP_MESH_TRACE_STORE_BYTES: "65536" })).traceStoreBytes).toBe(65536)
    expect(problems(load(["--service", "store", "--trace-store-bytes", "1KiB"])).problems.join("\n")).toMatch(/traceStoreBytes/)
    expect(problems(load(["--service", "store", "--trace-store-bytes", "lots"])).problems.join("\n")).toMatch(/traceStoreBytes/)
  })
  it("--read-slab-pool-bytes: a size from the flag or IIP_MESH_READ_SLAB_POOL_BYTES (default 8MiB, 0 allowed), out of range or unreadable named", () => {
    expect(ok(load(["--service", "slabs"])).readSlabPoolBytes).toBe(8 * 1024 * 1024)
    expect(ok(load(["--service", "slabs", "--read-slab-pool-bytes", "1MiB"])).readSlabPoolBytes).toBe(1024 * 1024)
    expect(ok(load([], { IIP_MESH_SERVICE: "slabs", IIP_MESH_READ_SLAB_POOL_BYTES: "0" })).readSlabPoolBytes).toBe(0)
    expect(problems(load(["--service", "slabs", "--read-slab-pool-bytes", "2GiB"])).problems.join("\n")).toMatch(/readSlabPoolBytes/)
    expect(problems(load(["--service", "slabs", "--read-slab-pool-bytes", "lots"])).problems.join("\n")).toMatch(/readSlabPoolBytes/)
  })


  it("the restart, frozen-peer and slow-try settings from flags and environment; --slow-try off", () => {
    expect(ok(load(["--service", "store", "--restart-window", "1m", "--busy-ping-after", "500ms", "--busy-ping-timeout", "3s", "--slow-try", "off"]))).toMatchObject({
      restartWindowMs: 60_000,
      busyPingAfterMs: 500,
      busyPingTimeoutMs: 3000,
      slowTryFloorMs: null
    })
    const fromEnv = load([], {
      IIP_MESH_SERVICE: "store",
      IIP_MESH_RESTART_WINDOW: "10s",
      IIP_MESH_BUSY_PING_AFTER: "2s",
      IIP_MESH_BUSY_PING_TIMEOUT: "1500",
      IIP_MESH_SLOW_TRY: "5s"
    })
    expect(ok(fromEnv)).toMatchObject({ restartWindowMs: 10_000, busyPingAfterMs: 2000, busyPingTimeoutMs: 1500, slowTryFloorMs: 5000 })
    expect(problems(load(["--service", "store", "--busy-ping-timeout", "0"])).problems.join("\n")).toMatch(/busyPingTimeoutMs/)
  })

  it("every one is read from its flag, durations with units", () => {
    const config = ok(
      load([
        "--service", "store",
        "--load-balancer", "weighted-round-robin",
        "--hash-key", "header:x-user",
        "--max-pending-per-endpoint", "2",
        "--retry-budget-ratio", "0.5",
        "--retry-budget-min-per-second", "0",
        "--per-try-timeout", "100ms",
        "--eject-consecutive-failures", "3",
        "--eject-error-rate", "25.5",
        "--ejection-base", "1.5s",
        "--ejection-max", "2m",
        "--max-ejected-percent", "34",
        "--health-check-interval", "50ms"
      ])
    )
    expect(config).toMatchObject({
      loadBalancer: "weighted-round-robin",
      hashKey: "header:x-user",
      maxPendingPerEndpoint: 2,
      retryBudgetRatio: 0.5,
      retryBudgetMinPerSecond: 0,
      perTryTimeoutMs: 100,
      ejectConsecutiveFailures: 3,
      ejectErrorRatePercent: 25.5,
      ejectionBaseMs: 1500,
      ejectionMaxMs: 120_000,
      maxEjectedPercent: 34,
      healthCheckIntervalMs: 50
    })
  })

  it("every one is read from its environment variable, a bare number of ms too", () => {
    const config = ok(
      load([], {
        IIP_MESH_SERVICE: "store",
        IIP_MESH_LOAD_BALANCER: "MethodURIParam",
        IIP_MESH_HASH_KEY: "query:user",
        IIP_MESH_MAX_PENDING_PER_ENDPOINT: "50",
        IIP_MESH_RETRY_BUDGET_RATIO: "0",
        IIP_MESH_RETRY_BUDGET_MIN_PER_SECOND: "2.5",
        IIP_MESH_PER_TRY_TIMEOUT: "250",
        IIP_MESH_EJECT_CONSECUTIVE_FAILURES: "0",
        IIP_MESH_EJECT_ERROR_RATE: "0",
        IIP_MESH_EJECTION_BASE: "500ms",
        IIP_MESH_EJECTION_MAX: "30s",
        IIP_MESH_MAX_EJECTED_PERCENT: "100",
        IIP_MESH_HEALTH_CHECK_INTERVAL: "1s"
      })
    )
    expect(config).toMatchObject({
      loadBalancer: "MethodURIParam",
      hashKey: "query:user",
      maxPendingPerEndpoint: 50,
      retryBudgetRatio: 0,
      retryBudgetMinPerSecond: 2.5,
      perTryTimeoutMs: 250,
      ejectConsecutiveFailures: 0,
      ejectErrorRatePercent: 0,
      ejectionBaseMs: 500,
      ejectionMaxMs: 30_000,
      maxEjectedPercent: 100,
      healthCheckIntervalMs: 1000
    })
  })

  it("from the config file, with the flag over the environment over the file", () => {
    const file = writeJson("balancing.json", { service: "store", loadBalancer: "least-pending", perTryTimeoutMs: 300, healthCheckIntervalMs: 200, maxPendingPerEndpoint: 7 })
    expect(ok(load([], {}, file))).toMatchObject({ loadBalancer: "least-pending", perTryTimeoutMs: 300, healthCheckIntervalMs: 200, maxPendingPerEndpoint: 7 })
    const layered = ok(load(["--load-balancer", "MethodRandom"], { IIP_MESH_LOAD_BALANCER: "MethodIpHash", IIP_MESH_PER_TRY_TIMEOUT: "2s" }, file))
    expect(layered).toMatchObject({ loadBalancer: "MethodRandom", perTryTimeoutMs: 2000, healthCheckIntervalMs: 200, maxPendingPerEndpoint: 7 })
  })

  it("perTryTimeoutMs and healthCheckIntervalMs are turned off by off, none or an empty value, also over a value set below", () => {
    for (const off of ["off", "none", ""]) {
      const config = ok(load(["--service", "store", "--per-try-timeout", off, "--health-check-interval", off]))
      expect([off, config.perTryTimeoutMs, config.healthCheckIntervalMs]).toStrictEqual([off, null, null])
      const fromEnv = ok(load([], { IIP_MESH_SERVICE: "store", IIP_MESH_PER_TRY_TIMEOUT: off, IIP_MESH_HEALTH_CHECK_INTERVAL: off }))
      expect([off, fromEnv.perTryTimeoutMs, fromEnv.healthCheckIntervalMs]).toStrictEqual([off, null, null])
    }
    const file = writeJson("checks-on.json", { service: "store", perTryTimeoutMs: 100, healthCheckIntervalMs: 50 })
    expect(ok(load(["--health-check-interval", "off"], { IIP_MESH_PER_TRY_TIMEOUT: "none" }, file))).toMatchObject({ perTryTimeoutMs: null, healthCheckIntervalMs: null })
  })

  it("a bad duration, zero, or a word other than off/none is reported as a duration problem", () => {
    expect(problems(load(["--service", "store", "--per-try-timeout", "soon", "--health-check-interval", "0", "--ejection-base", "off", "--ejection-max", "0ms"])).problems).toStrictEqual([
      `perTryTimeoutMs (from --per-try-timeout): Expected a duration like 15s or 500ms, got "soon"`,
      `ejectionBaseMs (from --ejection-base): Expected a duration like 15s or 500ms, got "off"`,
      `ejectionMaxMs (from --ejection-max): Expected a value between 1 and 3600000, got 0`,
      `healthCheckIntervalMs (from --health-check-interval): Expected a value between 1 and 3600000, got 0`
    ])
  })

  it("hashKey takes header:NAME, query:NAME or client, and none for no key; anything else is reported", () => {
    expect(ok(load(["--service", "store", "--hash-key", "header:X-User-Id"])).hashKey).toBe("header:X-User-Id")
    expect(ok(load(["--service", "store", "--hash-key", "query:user"])).hashKey).toBe("query:user")
    expect(ok(load(["--service", "store", "--hash-key", "client"])).hashKey).toBe("client")
    expect(ok(load(["--service", "store", "--hash-key", "none"])).hashKey).toBeNull()
    expect(ok(load([], { IIP_MESH_SERVICE: "store", IIP_MESH_HASH_KEY: "" })).hashKey).toBeNull()
    for (const bad of ["cookie:session", "header:", "header:two words", "query:", "Client", "x-user"]) {
      expect(problems(load(["--service", "store", "--hash-key", bad])).problems).toStrictEqual([
        `hashKey (from --hash-key): Expected header:NAME, query:NAME or client, got ${JSON.stringify(bad)}`
      ])
    }
    const file = writeJson("bad-hash-key.json", { service: "store", hashKey: "ip" })
    expect(problems(load([], {}, file)).problems).toStrictEqual([`hashKey (from ${file}): Expected header:NAME, query:NAME or client, got "ip"`])
  })

  it("every picker name is accepted; an unknown one is rejected with a message listing the names", () => {
    // The hashing pickers need a key; query:NAME serves both.
    for (const name of pickerNames) expect(ok(load(["--service", "store", "--load-balancer", name, "--hash-key", "query:id"])).loadBalancer).toBe(name)
    for (const bad of ["round-robin", "P2C", "MethodRoundRobin", ""]) {
      const error = problems(load(["--service", "store", "--load-balancer", bad]))
      expect(error.problems).toHaveLength(1)
      const [problem] = error.problems
      expect(problem!.startsWith("loadBalancer (from --load-balancer): Expected ")).toBe(true)
      for (const name of pickerNames) expect(problem).toContain(JSON.stringify(name))
      expect(problem!.endsWith(`got ${JSON.stringify(bad)}`)).toBe(true)
    }
    expect(problems(load([], { IIP_MESH_SERVICE: "store", IIP_MESH_LOAD_BALANCER: "fastest" })).problems[0]).toMatch(/^loadBalancer \(from IIP_MESH_LOAD_BALANCER\): Expected "p2c" \| .*, got "fastest"$/)
  })

  it("settings that do not fit together are reported: a hashing picker without a key, ejectionMax below ejectionBase", () => {
    expect(problems(load(["--service", "store", "--load-balancer", "consistent-hash"])).problems).toStrictEqual([
      "hashKey: consistent-hash needs a key (header:NAME, query:NAME or client); without one every request would go to the same endpoint"
    ])
    expect(problems(load(["--service", "store", "--load-balancer", "MethodURIParam", "--hash-key", "header:x-user"])).problems).toStrictEqual([
      "hashKey: MethodURIParam hashes a query parameter: set query:NAME"
    ])
    expect(problems(load(["--service", "store", "--ejection-base", "10s", "--ejection-max", "5s"])).problems).toStrictEqual([
      "ejectionMaxMs: 5000 ms is shorter than ejectionBaseMs (10000 ms)"
    ])
    expect(problems(load(["--service", "store", "--retry-budget-ratio", "-1"])).problems[0]).toMatch(/^retryBudgetRatio \(from --retry-budget-ratio\): .*got -1$/)
  })

  it("numbers out of range or not numbers are reported together, each with its setting", () => {
    const error = problems(
      load([
        "--service", "store",
        "--max-pending-per-endpoint", "0",
        "--retry-budget-ratio", "11",
        "--retry-budget-min-per-second", "many",
        "--eject-consecutive-failures", "1.5",
        "--eject-error-rate", "150",
        "--max-ejected-percent", "101"
      ])
    )
    expect(error.problems).toStrictEqual([
      `maxPendingPerEndpoint (from --max-pending-per-endpoint): Expected a value between 1 and 1000000, got 0`,
      `retryBudgetRatio (from --retry-budget-ratio): Expected a value between 0 and 10, got 11`,
      `retryBudgetMinPerSecond (from --retry-budget-min-per-second): Expected number, got "many"`,
      `ejectConsecutiveFailures (from --eject-consecutive-failures): Expected an integer, got 1.5`,
      `ejectErrorRatePercent (from --eject-error-rate): Expected a value between 0 and 100, got 150`,
      `maxEjectedPercent (from --max-ejected-percent): Expected a value between 0 and 100, got 101`
    ])
  })
})

describe("iip-mesh sidecar with a bad configuration", () => {
  const main = resolve(import.meta.dirname, "../../src/cli/main.ts")

  it("exits non-zero with every problem on stderr and nothing on stdout", async () => {
    // No IIP_MESH_* from the environment the tests run in.
    const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("IIP_MESH_")))
    const child = spawn(process.execPath, [main, "sidecar", "--service", "Bad_Name", "--app", "x"], { stdio: ["ignore", "pipe", "pipe"], env })
    try {
      let stdout = ""
      let stderr = ""
      child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
      child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
      const code = await withTimeout(new Promise<number | null>((done) => child.on("close", (c) => done(c))), CHILD_START_MS, "the sidecar to exit")
      expect(code).not.toBe(0)
      expect(code).not.toBeNull()
      expect(stdout).toBe("")
      expect(stderr).toContain("iip-mesh sidecar: invalid configuration:")
      expect(stderr).toContain(`service (from --service): Expected a DNS label (a-z, 0-9, -), got "Bad_Name"`)
      expect(stderr).toContain(`app (from --app): Expected HOST:PORT with a port of 0..65535, got "x"`)
    } finally {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, "SIGKILL")
    }
  }, holdsStarts(1, 5000))

  it("--mtls on without credentials exits 2 with one line saying what is missing", async () => {
    const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("IIP_MESH_")))
    const listeners = ["--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
    const child = spawn(process.execPath, [main, "sidecar", "--service", "store", "--mtls", "on", ...listeners], { stdio: ["ignore", "pipe", "pipe"], env })
    try {
      let stderr = ""
      child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
      const code = await withTimeout(new Promise<number | null>((done) => child.on("close", (c) => done(c))), CHILD_START_MS, "the sidecar to exit")
      expect(code).toBe(2)
      expect(stderr).toBe("iip-mesh sidecar: --mtls on needs workload credentials (an identity issuer, or --tls-credentials-dir for tests and benches)\n")
    } finally {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, "SIGKILL")
    }
  }, holdsStarts(1, 5000))
})

describe("loadSidecarConfig: the inbound budgets and timeouts", () => {
  it("default to 1024 requests and 32 MiB per connection, 16384 and 128 MiB in all (a quarter of the IIP library's: the sidecar's RSS target is 100 MB), 512 MiB of writes, 1024/65536 channels, 1024 tunnels (512 per peer), 8192 app connections, 1 MiB whole bodies, 10 s / 30 s / 5 min", () => {
    const config = ok(load(["--service", "a"]))
    expect(config).toMatchObject({
      maxQueuedRequestsPerConnection: 1024,
      maxQueuedBytesPerConnection: 32 * 1024 * 1024,
      maxQueuedRequests: 16_384,
      maxQueuedBytes: 128 * 1024 * 1024,
      maxQueuedWriteBytes: 512 * 1024 * 1024,
      maxChannelsPerConnection: 1024,
      maxChannels: 65_536,
      maxTunnels: 1024,
      maxTunnelsPerPeer: 512,
      maxAppConnections: 8192,
      maxWholeBodyBytes: 1024 * 1024,
      firstPacketTimeoutMs: 10_000,
      packetTimeoutMs: 30_000,
      idleTimeoutMs: 300_000,
      writeTimeoutMs: 60_000
    })
  })

  it("are read from flags (sizes with KiB/MiB/GiB, durations with units) and environment variables; off turns a timeout off", () => {
    const fromFlags = ok(load([
      "--service", "a",
      "--max-queued-requests-per-connection", "64",
      "--max-queued-bytes-per-connection", "4MiB",
      "--max-queued-requests", "2000",
      "--max-queued-bytes", "1GiB",
      "--max-queued-write-bytes", "64MiB",
      "--max-channels-per-connection", "16",
      "--max-channels", "4096",
      "--max-tunnels", "300",
      "--max-app-connections", "50",
      "--max-whole-body-bytes", "256KiB",
      "--first-packet-timeout", "2s",
      "--packet-timeout", "500ms",
      "--idle-timeout", "off",
      "--write-timeout", "10s"
    ]))
    expect(fromFlags).toMatchObject({
      maxQueuedRequestsPerConnection: 64,
      maxQueuedBytesPerConnection: 4 * 1024 * 1024,
      maxQueuedRequests: 2000,
      maxQueuedBytes: 1024 ** 3,
      maxQueuedWriteBytes: 64 * 1024 * 1024,
      maxChannelsPerConnection: 16,
      maxChannels: 4096,
      maxTunnels: 300,
      maxAppConnections: 50,
      maxWholeBodyBytes: 256 * 1024,
      firstPacketTimeoutMs: 2000,
      packetTimeoutMs: 500,
      idleTimeoutMs: null,
      writeTimeoutMs: 10_000
    })
    const fromEnv = ok(load(["--service", "a"], { IIP_MESH_MAX_QUEUED_BYTES: "1048576", IIP_MESH_IDLE_TIMEOUT: "2m", IIP_MESH_MAX_CHANNELS: "100", IIP_MESH_MAX_TUNNELS: "7", IIP_MESH_MAX_APP_CONNECTIONS: "9", IIP_MESH_WRITE_TIMEOUT: "off" }))
    expect(fromEnv).toMatchObject({ maxQueuedBytes: 1024 * 1024, idleTimeoutMs: 120_000, maxChannels: 100, maxTunnels: 7, maxAppConnections: 9, writeTimeoutMs: null })
  })

  it("bad sizes, counts and durations are reported together, each with its setting", () => {
    const error = problems(load(["--service", "a", "--max-queued-bytes", "lots", "--max-channels", "0", "--max-whole-body-bytes", "12", "--packet-timeout", "soon"]))
    expect(error.problems).toHaveLength(4)
    expect(error.message).toContain("maxQueuedBytes (from --max-queued-bytes)")
    expect(error.message).toContain("maxChannels (from --max-channels)")
    expect(error.message).toContain("maxWholeBodyBytes (from --max-whole-body-bytes)")
    expect(error.message).toContain("packetTimeoutMs (from --packet-timeout): Expected a duration")
  })
})

describe("authorization policy and admin listener settings (issue 15)", () => {
  it("default to no policy file (allow all) polled every 5 s, the control listener on 127.0.0.1:9991 without a token", () => {
    expect(ok(load(["--service", "store"]))).toMatchObject({
      authzPolicy: null,
      authzPolicyPollMs: 5000,
      admin: "127.0.0.1:9990",
      adminControl: "127.0.0.1:9991",
      adminToken: null,
      adminTokenFile: null
    })
  })

  it("are read from flags and environment variables", () => {
    expect(ok(load(["--service", "store", "--authz-policy", "/etc/p.yaml", "--authz-policy-poll", "2s", "--admin-control", "127.0.0.1:7000", "--admin-token-file", "/run/t"]))).toMatchObject({
      authzPolicy: "/etc/p.yaml",
      authzPolicyPollMs: 2000,
      adminControl: "127.0.0.1:7000",
      adminTokenFile: "/run/t"
    })
    expect(ok(load([], { IIP_MESH_SERVICE: "store", IIP_MESH_AUTHZ_POLICY: "/p.json", IIP_MESH_ADMIN_CONTROL: "[::1]:7000", IIP_MESH_ADMIN_TOKEN: "0123456789abcdef" }))).toMatchObject({
      authzPolicy: "/p.json",
      adminControl: "[::1]:7000",
      adminToken: "0123456789abcdef"
    })
  })

  it("the read-only listener may go on the pod address; the control listener only with a token; a short token is refused without being echoed", () => {
    expect(ok(load(["--service", "store", "--admin", "0.0.0.0:9990"])).adminControl).toBe("127.0.0.1:9991")
    for (const control of ["0.0.0.0:9991", "10.1.2.3:9991", "[::]:9991", "pod.local:9991"]) {
      expect(problems(load(["--service", "store", "--admin-control", control])).problems, control).toStrictEqual([
        `adminControl: ${control} is not a loopback address: the control listener changes weights and shows the mesh, so off loopback it needs a token (adminToken or adminTokenFile)`
      ])
    }
    for (const control of ["127.0.0.1:0", "127.0.0.2:9991", "localhost:9991", "[::1]:9991"]) expect(ok(load(["--service", "store", "--admin-control", control])).adminControl).toBe(control)
    expect(ok(load(["--service", "store", "--admin-control", "0.0.0.0:9991", "--admin-token-file", "/run/t"])).adminControl).toBe("0.0.0.0:9991")
    const short = problems(load(["--service", "store"], { IIP_MESH_ADMIN_TOKEN: "hunter2" }))
    expect(short.problems).toHaveLength(1)
    expect(short.problems[0]).toMatch(/^adminToken \(from IIP_MESH_ADMIN_TOKEN\): /)
    expect(short.message).not.toContain("hunter2")
    expect(problems(load(["--service", "store", "--admin-token-file", "/run/t"], { IIP_MESH_ADMIN_TOKEN: "0123456789abcdef" })).problems).toStrictEqual([
      "adminToken: set the token or a file that holds it, not both"
    ])
  })
})

describe("loadSidecarConfig: hostile input", () => {
  it("a service named like an Object property in --endpoint or --dns-srv is reported, not thrown (constructor is a DNS label: a service)", () => {
    for (const name of ["__proto__", "toString"]) {
      expect(problems(load(["--service", "store", "--endpoint", `${name}=127.0.0.1:80`])).problems, name).toStrictEqual([
        `endpoints (from --endpoint): Expected service names that are DNS labels (a-z, 0-9, -), got ${JSON.stringify(name)}`
      ])
      expect(problems(load(["--service", "store", "--dns-srv", `${name}=_mesh._tcp.x.local`])).problems, name).toStrictEqual([
        `dnsSrv (from --dns-srv): Expected service names that are DNS labels (a-z, 0-9, -), got ${JSON.stringify(name)}`
      ])
    }
    // Compared as entries: toStrictEqual reads a key named constructor as the object's class.
    expect(Object.entries(ok(load(["--service", "store", "--endpoint", "constructor=127.0.0.1:80"])).endpoints)).toStrictEqual([["constructor", [{ address: "127.0.0.1:80", weight: 1 }]]])
  })

  it("keys of the config file that Object.prototype has (toString, constructor, __proto__) are unknown settings", () => {
    const file = writeJson("proto-keys.json", `{"service": "store", "toString": 1, "constructor": 2, "__proto__": {"adminToken": "x"}}`)
    expect(problems(load([], {}, file)).problems).toStrictEqual(["toString", "constructor", "__proto__"].map((key) => `${key} (from ${file}): unknown setting`))
  })

  it("a config file of 40,000 unknown keys lists the first 50 and counts the rest: the error stays a few KB, not 2 MB", () => {
    const keys = Object.fromEntries(Array.from({ length: 40_000 }, (_, i) => [`k${i}`, 1]))
    const file = writeJson("many-keys.json", { service: "store", ...keys })
    const { problems: listed, message } = problems(load([], {}, file))
    expect(listed).toHaveLength(51)
    expect(listed[0]).toBe(`k0 (from ${file}): unknown setting`)
    expect(listed[50]).toBe("and 39950 more problems, not listed")
    expect(message.length).toBeLessThan(8 * 1024)
  })

  it("a setting twice in the config file (or a key twice in one of its objects) is reported, not the last one taken silently", () => {
    const twice = writeJson("twice.json", `{"service": "store", "adminControl": "0.0.0.0:9991", "adminControl": "127.0.0.1:9991"}`)
    expect(problems(load(["--service", "store"], {}, twice)).problems).toStrictEqual([`config file ${twice}: "adminControl" twice in one object`])
  })

  it("a config file that is too large, a directory or a device is refused unread, a FIFO without blocking", () => {
    const large = writeJson("large.json", { service: "store", node: "n".repeat(MAX_CONFIG_FILE_BYTES) })
    expect(problems(load(["--service", "store"], {}, large)).problems).toStrictEqual([`config file ${large}: larger than ${MAX_CONFIG_FILE_BYTES} bytes (${statSync(large).size})`])
    for (const path of [dir, "/dev/zero"]) expect(problems(load(["--service", "store"], {}, path)).problems, path).toStrictEqual([`config file ${path}: not a regular file`])
    const fifo = join(dir, "config.fifo")
    execFileSync("mkfifo", [fifo])
    expect(problems(load(["--service", "store"], {}, fifo)).problems).toStrictEqual([`config file ${fifo}: not a regular file`])
  })

  it("a deeply nested or huge wrong value is reported, its echo bounded", () => {
    const deep = writeJson("deep.json", `{"service": "store", "endpoints": {"a": ${"[".repeat(100_000)}${"]".repeat(100_000)}}}`)
    const error = problems(load([], {}, deep))
    expect(error.problems).toHaveLength(1)
    expect(error.problems[0]).toMatch(new RegExp(`^endpoints\\.a\\.0 \\(from ${deep.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\): `))
    expect(error.message.length).toBeLessThan(1000)
    const huge = problems(load(["--service", "store", "--app", `${"a".repeat(100_000)}:1`, "--weight", "9".repeat(100_000)]))
    expect(huge.problems.map((problem) => problem.slice(0, 30))).toStrictEqual(["app (from --app): Expected a h", "weight (from --weight): Expect", "weight (from --weight): Expect"])
    for (const problem of huge.problems) expect(problem.length, problem.slice(0, 80)).toBeLessThan(400)
  })

  it("a node name, DNS server or mDNS interface that peers or the resolver would refuse is reported at start", () => {
    expect(problems(load(["--service", "store", "--node", "a\r\nb", "--dns-server", "1.2.3.4;x", "--mdns-interface", "eth0;x"])).problems).toStrictEqual([
      `node (from --node): Expected a node name (1-253 characters, no controls), got "a\\r\\nb"`,
      `dnsServers.0 (from --dns-server): Expected an IP address, or IP:PORT ([IPv6]:PORT), got "1.2.3.4;x"`,
      `mdnsInterface (from --mdns-interface): Expected the IPv4 address of an interface, got "eth0;x"`
    ])
    expect(problems(load(["--service", "store", "--node", "n".repeat(254)])).problems).toHaveLength(1)
    const fine = ok(load(["--service", "store", "--node", "pod-7.zone", "--dns-server", "10.0.0.10,10.0.0.11:5353,::1,[fd00::1]:53", "--mdns-interface", "192.168.1.5"]))
    expect([fine.node, fine.dnsServers, fine.mdnsInterface]).toStrictEqual(["pod-7.zone", ["10.0.0.10", "10.0.0.11:5353", "::1", "[fd00::1]:53"], "192.168.1.5"])
  })
})

describe("loadSidecarConfig: paths, the issuer's URL and SRV names", () => {
  it("a path with NUL (from the config file: argv and the environment cannot hold one), an issuer URL or SRV name with characters no host has is reported", () => {
    const file = writeJson("nul-paths.json", { service: "store", routes: "/etc/routes\u0000.yaml", endpoints: { shop: [{ address: "127.0.0.1:1", weight: 1, ca: "/ca\u0000" }] } })
    expect(problems(load([], {}, file)).problems).toStrictEqual([
      `endpoints.shop.0.ca (from ${file}): Expected a path (at most 4096 characters, no NUL), got "/ca\\u0000"`,
      `routes (from ${file}): Expected a path (at most 4096 characters, no NUL), got "/etc/routes\\u0000.yaml"`
    ])
    expect(problems(load(["--service", "store", "--routes", "r".repeat(4097)])).problems).toHaveLength(1)
    expect(problems(load(["--service", "store", "--identity-issuer", "https://a\u0000b:8443", "--dns-srv", "shop=_mesh._tcp.shop;x"])).problems).toStrictEqual([
      `dnsSrv.shop (from --dns-srv): Expected a DNS name (at most 253 of A-Z a-z 0-9 _ . -), got "_mesh._tcp.shop;x"`,
      `identityIssuer (from --identity-issuer): Expected https://HOST:PORT, got "https://a\\u0000b:8443"`
    ])
    const fine = ok(load(["--service", "store", "--dns-srv", "shop=_mesh._tcp.shop.prod.svc.cluster.local", "--routes", "/etc/iip mesh/routes.yaml"]))
    expect([fine.dnsSrv, fine.routes]).toStrictEqual([{ shop: "_mesh._tcp.shop.prod.svc.cluster.local" }, "/etc/iip mesh/routes.yaml"])
    // iip_identity: a Compose service's name (the issuer is verified by its SPIFFE ID, not its host name: src/identity/signers.ts).
    for (const issuer of ["https://issuer.mesh:8443", "https://[::1]:8443/", "https://10.0.0.1", "https://iip_identity:8443", "https://Issuer.Example.COM:8443"]) {
      expect(problems(load(["--service", "store", "--identity-issuer", issuer])).problems.filter((p) => p.startsWith("identityIssuer (")), issuer).toStrictEqual([])
    }
  })
})

describe("secret files named by the configuration (adminTokenFile, the identity token files)", () => {
  it("a file too large, a directory, a device or a FIFO is refused without blocking and without showing what it holds", async () => {
    const { adminListenersOf } = await import("../../src/admin/adminServer.ts")
    const { readSecretFile } = await import("../../src/identity/signers.ts")
    const { MAX_SECRET_FILE_BYTES } = await import("../../src/iip/smallFile.ts")
    const base = { admin: "127.0.0.1:9990", adminControl: "127.0.0.1:9991", adminToken: null }
    const tokenFile = writeJson("admin-token", "t".repeat(64 * 1024 + 1))
    const fifo = join(dir, "token.fifo")
    execFileSync("mkfifo", [fifo])
    for (const [path, problem] of [[tokenFile, `larger than ${MAX_SECRET_FILE_BYTES} bytes (${64 * 1024 + 1})`], [dir, "not a regular file"], ["/dev/zero", "not a regular file"], [fifo, "not a regular file"]] as const) {
      const result = adminListenersOf({ ...base, adminTokenFile: path })
      expect(Result.isFailure(result) ? result.failure.message : "accepted", path).toBe(`adminTokenFile ${path}: ${problem}`)
      expect(() => readSecretFile(path), path).toThrow(`${path}: ${problem}`)
    }
    const good = writeJson("good-token", "0123456789abcdef\n")
    const result = adminListenersOf({ ...base, adminTokenFile: good })
    expect(Result.isSuccess(result) ? result.success.token : result.failure.message).toBe("0123456789abcdef")
    expect(readSecretFile(good)).toBe("0123456789abcdef")
  })
})
