// The sidecar's configuration (src/config/sidecarConfig.ts): flags, environment variables and a
// JSON config file merged as flag > env > file > default, validated once, and every problem
// reported together in one message that names the setting, where its value came from and what was
// expected. Plus the CLI: `iip-mesh sidecar` with bad settings prints all of them on stderr and
// exits non-zero without starting anything.
import { Result } from "effect"
import { spawn } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { type ConfigInvalid, loadSidecarConfig, parseFlags, type SidecarConfig } from "../../src/config/sidecarConfig.ts"
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

describe("loadSidecarConfig", () => {
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

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

  it("Kubernetes Services from --kubernetes (repeated or comma-separated) or IIP_MESH_KUBERNETES; a bad one is reported", () => {
    expect(ok(load(["--service", "store"])).kubernetes).toStrictEqual({})
    expect(ok(load(["--service", "store", "--kubernetes", "catalog=shop/catalog,users=auth/users-v2", "--kubernetes", "pay=shop/pay"])).kubernetes).toStrictEqual({
      catalog: "shop/catalog",
      users: "auth/users-v2",
      pay: "shop/pay"
    })
    expect(ok(load([], { IIP_MESH_SERVICE: "store", IIP_MESH_KUBERNETES: "catalog=shop/catalog" })).kubernetes).toStrictEqual({ catalog: "shop/catalog" })
    expect(problems(load(["--service", "store", "--kubernetes", "catalog=catalog"])).problems).toStrictEqual([
      `kubernetes.catalog (from --kubernetes): Expected NAMESPACE/NAME (DNS labels), got "catalog"`
    ])
  })

  it("an unknown flag is reported (with the other problems), as is an unknown setting in the file", () => {
    const flagError = problems(load(["--service", "store", "--bogus", "1", "--app", "x"]))
    expect(flagError.problems).toContain("--bogus: unknown flag")
    expect(flagError.problems).toHaveLength(2)
    const file = writeJson("unknown-key.json", { service: "store", colour: "blue" })
    expect(problems(load([], {}, file)).problems).toStrictEqual([`colour (from ${file}): unknown setting`])
  })

  it("a missing service and an unreadable config file are reported", () => {
    expect(problems(load([])).problems).toStrictEqual(["service: required (set --service or IIP_MESH_SERVICE)"])
    const notJson = writeJson("not-json.json", "{ nope")
    const error = problems(load(["--service", "store"], {}, notJson))
    expect(error.problems).toHaveLength(1)
    expect(error.problems[0]).toMatch(new RegExp(`^config file ${notJson.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: `))
    expect(problems(load(["--service", "store", "--config", join(dir, "missing.json")])).problems[0]).toMatch(/^config file .*missing\.json: .*ENOENT/)
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
      const code = await withTimeout(new Promise<number | null>((done) => child.on("close", (c) => done(c))), 15_000, "the sidecar to exit")
      expect(code).not.toBe(0)
      expect(code).not.toBeNull()
      expect(stdout).toBe("")
      expect(stderr).toContain("iip-mesh sidecar: invalid configuration:")
      expect(stderr).toContain(`service (from --service): Expected a DNS label (a-z, 0-9, -), got "Bad_Name"`)
      expect(stderr).toContain(`app (from --app): Expected HOST:PORT with a port of 0..65535, got "x"`)
    } finally {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, "SIGKILL")
    }
  })
})
