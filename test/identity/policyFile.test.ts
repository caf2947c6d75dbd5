// The policy file (src/identity/policyFile.ts): read as JSON or YAML, refused at start when it is
// not a policy (there is no last good one), re-read when it changes (the directory watch, a
// ConfigMap-style symlink swap, and the poll alone), and a bad version keeps the last good policy,
// logged with why and counted as "invalid".
import * as Result from "effect/Result"
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { MAX_POLICY_FILE_BYTES, type PolicyLoad, type PolicyWatch, readPolicyFile, watchPolicyFile } from "../../src/identity/policyFile.ts"
import { withTimeout } from "../support/iipRaw.ts"

const td = "iip-mesh.local"
const storefront = `spiffe://${td}/ns/shop/sa/storefront`
const reports = `spiffe://${td}/ns/shop/sa/reports`

const allowing = (identity: string) => JSON.stringify({ services: { catalog: { default: "deny", rules: [{ from: [identity], methods: ["GET"] }] } } })

let dir: string
const watches: Array<PolicyWatch> = []
afterEach(() => {
  for (const w of watches.splice(0)) w.close()
  rmSync(dir, { recursive: true, force: true })
})
const freshDir = () => (dir = mkdtempSync(join(tmpdir(), "iip-mesh-policy-")))

/** Watches `path` with logs and loads recorded; `next(n)` waits for the n-th reload (any result). */
const watchFor = async (path: string, pollMs = 60_000, watch = true) => {
  const logged: Array<Record<string, unknown>> = []
  const loads: Array<PolicyLoad> = []
  const waiters: Array<() => void> = []
  const watched = await watchPolicyFile({
    path,
    service: "catalog",
    trustDomain: td,
    pollMs,
    debounceMs: 10,
    watch,
    log: (event, fields) => logged.push({ event, ...fields }),
    onLoad: (result) => {
      loads.push(result)
      for (const wake of waiters.splice(0)) wake()
    }
  })
  if (Result.isFailure(watched)) throw new Error(watched.failure.message)
  watches.push(watched.success)
  const next = (count: number, what: string) =>
    withTimeout(
      new Promise<void>((resolve) => {
        const check = () => (loads.length >= count ? resolve() : waiters.push(check))
        check()
      }),
      5000,
      what
    )
  return { policy: watched.success, logged, loads, next }
}

describe("the policy file", () => {
  it("reads JSON and YAML alike", async () => {
    freshDir()
    writeFileSync(join(dir, "p.json"), allowing(storefront))
    writeFileSync(join(dir, "p.yaml"), `services:\n  catalog:\n    default: deny\n    rules:\n      - from: ["${storefront}"]\n        methods: [GET]\n`)
    for (const name of ["p.json", "p.yaml"]) {
      const read = await readPolicyFile(join(dir, name), "catalog", td)
      if (Result.isFailure(read)) throw new Error(read.failure.message)
      expect(read.success.decide(storefront, "GET", "/"), name).toBe("allow")
      expect(read.success.decide(storefront, "POST", "/"), name).toBe("no-rule-matched")
    }
  })

  it("at start, a file that is missing, too large, unparsable or not a policy is refused with why", async () => {
    freshDir()
    const cases: Record<string, { readonly content?: string; readonly says: RegExp }> = {
      "missing.json": { says: /ENOENT/ },
      "large.json": { content: " ".repeat(MAX_POLICY_FILE_BYTES + 1), says: /more than the 1048576 a policy file may hold/ },
      "broken.json": { content: "{\"services\":", says: /cannot parse it as JSON/ },
      "broken.yaml": { content: "services: [\n", says: /cannot parse it as YAML/ },
      "wrong.json": { content: JSON.stringify({ services: { catalog: { default: "open" } } }), says: /services\.catalog\.default: expected one of allow-all, mesh-authenticated, deny, got "open"/ }
    }
    for (const [name, { content, says }] of Object.entries(cases)) {
      if (content !== undefined) writeFileSync(join(dir, name), content)
      const watched = await watchPolicyFile({ path: join(dir, name), service: "catalog", trustDomain: td, pollMs: 60_000, log: () => {} })
      expect(Result.isFailure(watched), name).toBe(true)
      if (Result.isFailure(watched)) expect(watched.failure.message, name).toMatch(says)
    }
  })

  it("a YAML file of 100,000 unclosed [ is refused at once for its nesting, not after seconds of the parser's recursion", async () => {
    freshDir()
    const path = join(dir, "policy.yaml")
    writeFileSync(path, `services: ${"[".repeat(100_000)}`)
    const started = performance.now()
    const result = await readPolicyFile(path, "catalog", td)
    // yaml.parse took 3.7 s here before its stack gave out (6.9 s for 500,000).
    expect(performance.now() - started).toBeLessThan(500)
    expect(Result.isFailure(result) && result.failure.message).toMatch(/nested deeper than 100/)
    writeFileSync(path, `services: {catalog: {rules: [{from: [${storefront}], methods: [GET]}]}}\n`)
    expect(Result.isSuccess(await readPolicyFile(path, "catalog", td))).toBe(true)
  })

  it("the nesting bound counts YAML's own [ and {, not those in quoted values and comments", async () => {
    freshDir()
    const path = join(dir, "policy.yaml")
    // 100,000 real levels, each holding a quoted "]" that does not close one: refused at once all the same.
    writeFileSync(path, `services: ${'["]", '.repeat(100_000)}`)
    const started = performance.now()
    const hostile = await readPolicyFile(path, "catalog", td)
    expect(performance.now() - started).toBeLessThan(1_000)
    expect(Result.isFailure(hostile) && hostile.failure.message).toMatch(/nested deeper than 100/)
    // A legitimate file whose comments and quoted values hold 150 unclosed [ and { nests 3 deep.
    const rules = Array.from({ length: 150 }, (_, i) => `      # ticket [OPS-${i}\n      - {from: ["${storefront}"], methods: [GET], paths: ["/{${i}"]}\n`).join("")
    writeFileSync(path, `services:\n  catalog:\n    rules:\n${rules}`)
    const legitimate = await readPolicyFile(path, "catalog", td)
    expect(Result.isSuccess(legitimate) || legitimate.failure.message).toBe(true)
  })

  it("a change is picked up; a bad version keeps the last good policy, logged and counted; a good one after it applies", async () => {
    freshDir()
    const path = join(dir, "policy.json")
    writeFileSync(path, allowing(storefront))
    const { policy, logged, loads, next } = await watchFor(path)
    expect(policy.current().decide(reports, "GET", "/")).toBe("no-rule-matched")

    writeFileSync(path, allowing(reports))
    await next(1, "the watch to re-read the changed file")
    expect(loads).toStrictEqual(["ok"])
    expect(policy.current().decide(reports, "GET", "/")).toBe("allow")

    writeFileSync(path, JSON.stringify({ services: { catalog: { rules: [{ from: ["reports"] }] } } }))
    await next(2, "the watch to re-read the bad file")
    expect(loads).toStrictEqual(["ok", "invalid"])
    expect(policy.current().decide(reports, "GET", "/")).toBe("allow")
    expect(policy.current().decide(storefront, "GET", "/")).toBe("no-rule-matched")
    const invalid = logged.find((l) => l.event === "authz-policy-invalid")!
    expect(invalid.message).toContain(`services.catalog.rules[0].from[0]: expected a SPIFFE ID pattern`)
    expect(invalid.keeping).toBe("services.catalog")

    writeFileSync(path, "{")
    await next(3, "the watch to re-read the unparsable file")
    expect(policy.current().decide(reports, "GET", "/")).toBe("allow")

    writeFileSync(path, allowing(storefront))
    await next(4, "the watch to re-read the good file")
    expect(loads).toStrictEqual(["ok", "invalid", "invalid", "ok"])
    expect(policy.current().decide(storefront, "GET", "/")).toBe("allow")
    expect(policy.current().decide(reports, "GET", "/")).toBe("no-rule-matched")
  })

  it("follows a Kubernetes ConfigMap update: the ..data symlink swapped to a new directory", async () => {
    freshDir()
    // How the kubelet lays out a mounted ConfigMap: policy.json -> ..data/policy.json, ..data -> ..v1.
    mkdirSync(join(dir, "..v1"))
    writeFileSync(join(dir, "..v1", "policy.json"), allowing(storefront))
    symlinkSync("..v1", join(dir, "..data"))
    symlinkSync("..data/policy.json", join(dir, "policy.json"))
    const { policy, next } = await watchFor(join(dir, "policy.json"))
    expect(policy.current().decide(reports, "GET", "/")).toBe("no-rule-matched")
    mkdirSync(join(dir, "..v2"))
    writeFileSync(join(dir, "..v2", "policy.json"), allowing(reports))
    symlinkSync("..v2", join(dir, "..data_tmp"))
    renameSync(join(dir, "..data_tmp"), join(dir, "..data"))
    await next(1, "the swap to be seen")
    expect(policy.current().decide(reports, "GET", "/")).toBe("allow")
  })

  it("the poll alone finds a change (a watch that missed it), and an unchanged file is not read again", async () => {
    freshDir()
    const path = join(dir, "policy.json")
    writeFileSync(path, allowing(storefront))
    const { policy, loads, next } = await watchFor(path, 50, false)
    await policy.check()
    expect(loads).toStrictEqual([])
    writeFileSync(path, allowing(reports))
    await next(1, "the poll to re-read the file")
    expect(policy.current().decide(reports, "GET", "/")).toBe("allow")
  })
})
