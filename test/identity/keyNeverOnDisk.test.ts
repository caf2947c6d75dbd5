// A sidecar's private key never touches the disk, checked on the real process: `iip-mesh
// sidecar` runs with Node's permission model granting reads only (--permission
// --allow-fs-read=*), so any file write on any code path (key, temporary file, cache) throws
// ERR_ACCESS_DENIED. It obtains its certificate from a real issuer and renews it twice (the
// issuer signs 4 s leaves), which exercises every code path that holds the key; it must stay up,
// report no denied access, and leave its fresh working directory, HOME and TMPDIR empty.
import { spawn, spawnSync } from "node:child_process"
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"
import { joinTokensNow, makeIssuingCa, type RunningIssuer, startIssuer, trustDomain } from "../support/identityTest.ts"

const main = resolve(import.meta.dirname, "../../src/cli/main.ts")
const token = "k".repeat(48)
const work = mkdtempSync(join(tmpdir(), "iip-mesh-no-disk-"))
const inputs = join(work, "inputs")
const writable = { cwd: join(work, "cwd"), home: join(work, "home"), tmp: join(work, "tmp") }
let issuer: RunningIssuer
// The start, then two renewals of 4 s leaves (each due well within a leaf's life): events that
// should come, bounded so that a sidecar that never renews fails with its output.
const RENEWALS_MS = 20_000
const START_AND_RENEWALS_MS = CHILD_START_MS + RENEWALS_MS

beforeAll(async () => {
  for (const dir of [inputs, ...Object.values(writable)]) mkdirSync(dir, { recursive: true })
  const ca = await makeIssuingCa()
  writeFileSync(join(inputs, "bundle.pem"), ca.trustBundlePem)
  writeFileSync(join(inputs, "join-token"), `${token}\n`)
  issuer = await startIssuer(ca, { joinTokens: joinTokensNow(`${token} catalog`), leafLifetimeMs: 4_000 })
})

afterAll(async () => {
  await issuer.stop()
  rmSync(work, { recursive: true, force: true })
})

const readOnlyNode = ["--permission", "--allow-fs-read=*"]

describe("the sidecar's private key never touches the disk", () => {
  it("the harness blocks writes: a write under the same flags is denied", () => {
    const probe = spawnSync(process.execPath, [...readOnlyNode, "-e", `require("node:fs").writeFileSync(${JSON.stringify(join(writable.tmp, "probe"))}, "x")`], { encoding: "utf8" })
    expect(probe.status).not.toBe(0)
    expect(probe.stderr).toMatch(/ERR_ACCESS_DENIED/)
    expect(readdirSync(writable.tmp)).toStrictEqual([])
  })

  it("a sidecar allowed no writes obtains its certificate, renews it twice, and writes nothing", async () => {
    const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("IIP_MESH_") && !name.startsWith("OTEL_")))
    const child = spawn(
      process.execPath,
      [
        ...readOnlyNode,
        main,
        "sidecar",
        "--service", "catalog",
        "--outbound", "127.0.0.1:0",
        "--inbound", "127.0.0.1:0",
        "--admin", "127.0.0.1:0",
        "--identity-issuer", issuer.url,
        "--identity-join-token-file", join(inputs, "join-token"),
        "--trust-bundle", join(inputs, "bundle.pem"),
        "--trust-domain", trustDomain
      ],
      { cwd: writable.cwd, env: { ...env, HOME: writable.home, TMPDIR: writable.tmp, TMP: writable.tmp, TEMP: writable.tmp }, stdio: ["ignore", "pipe", "pipe"] }
    )
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    const renewals = () => stderr.split("\n").filter((line) => line.includes('"identity-renewed"')).length
    try {
      await new Promise<void>((done, failed) => {
        const timer = setTimeout(() => failed(new Error(`no two renewals within ${START_AND_RENEWALS_MS} ms of spawn; stdout: ${stdout}; stderr: ${stderr}`)), START_AND_RENEWALS_MS)
        child.stderr.on("data", (chunk: Buffer) => {
          stderr += chunk.toString()
          if (renewals() >= 2) {
            clearTimeout(timer)
            done()
          }
        })
        child.once("exit", (code) => {
          clearTimeout(timer)
          failed(new Error(`sidecar exited with ${code}: ${stderr}`))
        })
      })
      const ready = JSON.parse(stdout.split("\n")[0]!) as { event: string; identity: string }
      expect(ready).toMatchObject({ event: "sidecar-ready", identity: `spiffe://${trustDomain}/svc/catalog` })
      expect(child.exitCode).toBeNull()
      expect(stderr).not.toMatch(/ERR_ACCESS_DENIED|identity-renewal-failed/)
      expect(issuer.issuer.signed().join).toBeGreaterThanOrEqual(3)
      for (const dir of Object.values(writable)) expect(readdirSync(dir), dir).toStrictEqual([])
    } finally {
      child.kill("SIGKILL")
    }
  }, holdsStarts(1, RENEWALS_MS + 10_000))
})
