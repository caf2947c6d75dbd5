// Files re-read while running (src/iip/documentFile.ts: the sidecar's --authz-policy and --routes
// files, the issuer's --join-tokens file) written in place in two parts with a pause between (an
// editor saving in place, `cat > file`): the first part alone is valid YAML with fewer rules or
// routes, a policy that allows more than meant, or a join-token line binding its token to a
// service cut short (another service's name). A version is taken only once unchanged for the settle time and across the read,
// so the part is never applied and the whole is. Real files in a temp dir; the settle time on
// faked timers (the pause of the writer is where the test writes the rest), the file system real.
import * as Result from "effect/Result"
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import { settleMsDefault, settleTries } from "../../src/iip/documentFile.ts"
import { watchJoinTokensFile } from "../../src/identity/joinTokensFile.ts"
import { checkJoinToken } from "../../src/identity/proofs.ts"
import { watchPolicyFile } from "../../src/identity/policyFile.ts"
import { watchRoutesFile } from "../../src/sidecar/routesFile.ts"

const td = "iip-mesh.local"
const storefront = `spiffe://${td}/ns/shop/sa/storefront`
const reports = `spiffe://${td}/ns/shop/sa/reports`

let dir: string
const closers: Array<() => void> = []
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "iip-mesh-half-written-"))
  // The settle time's timer only (the poll's is an hour and unref'd): the file system's callbacks stay real.
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] })
})
afterEach(() => {
  for (const close of closers.splice(0)) close()
  vi.useRealTimers()
  rmSync(dir, { recursive: true, force: true })
})

/** Until the check waits out a settle time (a timer is pending) or has ended: observable state, not a sleep. */
const settling = async (checking: Promise<void>): Promise<"settling" | "done"> => {
  let done = false
  void checking.then(() => (done = true))
  for (;;) {
    if (done) return "done"
    if (vi.getTimerCount() > 0) return "settling"
    await new Promise((resolve) => setImmediate(resolve))
  }
}

/** `text` at `path`, its mtime a second back: a file in place before the watch starts, which the start takes at once. */
const writeBefore = (path: string, text: string) => {
  writeFileSync(path, text)
  const second = Date.now() / 1000 - 1
  utimesSync(path, second, second)
}

const loggedTo = (logged: Array<Record<string, unknown>>) => (event: string, fields?: Readonly<Record<string, unknown>>) => logged.push({ event, ...fields })

/** The policy file at `path` for catalog, checked only when the test says (no watch, an hour's poll), its log and reloads recorded. */
const watchPolicy = async (path: string) => {
  const logged: Array<Record<string, unknown>> = []
  const loads: Array<string> = []
  const watched = await watchPolicyFile({ path, service: "catalog", trustDomain: td, pollMs: 3_600_000, watch: false, log: loggedTo(logged), onLoad: (load) => loads.push(load) })
  if (Result.isFailure(watched)) throw new Error(watched.failure.message)
  closers.push(watched.success.close)
  return { policy: watched.success, logged, loads }
}

describe("a file written in two parts is never applied half", () => {
  it("the authorization policy: the part without `methods` (every method allowed) is not applied, the whole is", async () => {
    const path = join(dir, "policy.yaml")
    writeBefore(path, `services:\n  catalog:\n    rules:\n      - from: ["${reports}"]\n        methods: [GET]\n`)
    const { policy, logged, loads } = await watchPolicy(path)
    const firstPart = `services:\n  catalog:\n    rules:\n      - from: ["${storefront}"]\n`
    const whole = `${firstPart}        methods: [GET]\n`

    writeFileSync(path, firstPart)
    const checking = policy.check()
    const first = await settling(checking)
    expect(policy.current().decide(storefront, "POST", "/")).toBe("no-rule-matched")
    expect(first).toBe("settling")
    // The writer's pause ends before the settle time does.
    await vi.advanceTimersByTimeAsync(settleMsDefault - 1)
    expect(policy.current().decide(storefront, "POST", "/")).toBe("no-rule-matched")
    writeFileSync(path, whole)
    await vi.advanceTimersByTimeAsync(1)
    // The part was skipped (changed during its settle time); the whole now waits out its own.
    expect(await settling(checking)).toBe("settling")
    expect(policy.current().decide(storefront, "POST", "/")).toBe("no-rule-matched")
    expect(policy.current().decide(reports, "GET", "/")).toBe("allow")
    await vi.advanceTimersByTimeAsync(settleMsDefault)
    await checking

    expect(policy.current().decide(storefront, "GET", "/")).toBe("allow")
    expect(policy.current().decide(storefront, "POST", "/")).toBe("no-rule-matched")
    expect(policy.current().decide(reports, "GET", "/")).toBe("no-rule-matched")
    expect(loads).toStrictEqual(["ok"])
    expect(logged.filter((l) => l.event !== "authz-policy-loaded" || l.skipped !== undefined).map((l) => [l.event, l.skipped])).toStrictEqual([["authz-policy-changed", undefined], ["authz-policy-loaded", "1"]])
  })

  it("the routes: the part with the first route only is not applied, the whole is", async () => {
    const route = (name: string, service: string) => `  - name: ${name}\n    service: ${service}\n    split: [{subset: v1, weight: 1}]\n`
    const path = join(dir, "routes.yaml")
    writeBefore(path, `routes:\n${route("a", "pricing")}${route("b", "store")}${route("c", "search")}`)
    const logged: Array<Record<string, unknown>> = []
    const watched = await watchRoutesFile({ path, pollMs: 3_600_000, watch: false, log: loggedTo(logged) })
    if (Result.isFailure(watched)) throw new Error(watched.failure.message)
    const routes = watched.success
    closers.push(routes.close)
    expect(routes.current().source).toBe("3 routes for 3 services")

    writeFileSync(path, `routes:\n${route("a", "pricing")}`)
    const checking = routes.check()
    const first = await settling(checking)
    expect(routes.current().source).toBe("3 routes for 3 services")
    expect(first).toBe("settling")
    await vi.advanceTimersByTimeAsync(settleMsDefault - 1)
    writeFileSync(path, `routes:\n${route("a", "pricing")}${route("b", "store")}`)
    await vi.advanceTimersByTimeAsync(1)
    expect(await settling(checking)).toBe("settling")
    expect(routes.current().source).toBe("3 routes for 3 services")
    await vi.advanceTimersByTimeAsync(settleMsDefault)
    await checking
    expect(routes.current().source).toBe("2 routes for 2 services")
    expect(logged.map((l) => [l.event, l.applies])).toStrictEqual([["routes-loaded", "3 routes for 3 services"], ["routes-changed", undefined], ["routes-loaded", "2 routes for 2 services"]])
  })

  it("the issuer's join tokens: the part binding a token to `storefront` (the line cut inside `storefront-admin`) is not applied, the whole is", async () => {
    const path = join(dir, "join-tokens")
    const [catalogToken, adminToken] = ["c".repeat(40), "a".repeat(40)]
    writeBefore(path, `${catalogToken} catalog\n`)
    const logged: Array<Record<string, unknown>> = []
    const watched = await watchJoinTokensFile({ path, defaultTtlMs: 3_600_000, pollMs: 3_600_000, watch: false, log: loggedTo(logged) })
    if (Result.isFailure(watched)) throw new Error(watched.failure.message)
    const tokens = watched.success
    closers.push(tokens.close)
    /** The service `token` earns when it asks for `service`, or the refusal's reason. */
    const earns = (token: string, service: string) => {
      try {
        return checkJoinToken(tokens.current(), token, service, Date.now(), undefined).service
      } catch (error) {
        return (error as { reason: string }).reason
      }
    }

    writeFileSync(path, `${adminToken} storefront`)
    const checking = tokens.check()
    expect(await settling(checking)).toBe("settling")
    await vi.advanceTimersByTimeAsync(settleMsDefault - 1)
    writeFileSync(path, `${adminToken} storefront-admin\n`)
    await vi.advanceTimersByTimeAsync(1)
    expect(await settling(checking)).toBe("settling")
    expect(earns(adminToken, "storefront")).toBe("bad-join-token")
    expect(earns(catalogToken, "catalog")).toBe("catalog")
    await vi.advanceTimersByTimeAsync(settleMsDefault)
    await checking

    expect(earns(adminToken, "storefront")).toBe("identity-not-allowed")
    expect(earns(adminToken, "storefront-admin")).toBe("storefront-admin")
    expect(earns(catalogToken, "catalog")).toBe("bad-join-token")
    expect(tokens.reloads()).toStrictEqual({ ok: 1, invalid: 0 })
    expect(logged.map((l) => [l.event, l.skipped, l.applies])).toStrictEqual([
      ["identity-join-tokens-loaded", undefined, "1 join token, 0 ended"],
      ["identity-join-tokens-changed", undefined, undefined],
      ["identity-join-tokens-loaded", "1", "1 join token, 0 ended"]
    ])
  })

  it("a file that keeps changing is left after a bounded number of looks, logged, the last good kept; the next check takes it once still", async () => {
    const path = join(dir, "policy.yaml")
    const allowing = (identity: string, note: number) => `# ${note}\nservices:\n  catalog:\n    rules:\n      - from: ["${identity}"]\n`
    writeBefore(path, allowing(reports, 0))
    const { policy, logged, loads } = await watchPolicy(path)

    writeFileSync(path, allowing(storefront, 1))
    const checking = policy.check()
    for (let write = 2; write <= settleTries + 1; write++) {
      expect(await settling(checking)).toBe("settling")
      // A size change each time, so the version differs whatever the mtime's granularity.
      writeFileSync(path, allowing(storefront, 10 ** write))
      await vi.advanceTimersByTimeAsync(settleMsDefault)
    }
    expect(await settling(checking)).toBe("done")
    expect(loads).toStrictEqual([])
    expect(policy.current().decide(storefront, "GET", "/")).toBe("no-rule-matched")
    expect(logged.at(-1)).toMatchObject({ event: "authz-policy-still-changing", tries: String(settleTries), keeping: "services.catalog" })

    const next = policy.check()
    expect(await settling(next)).toBe("settling")
    await vi.advanceTimersByTimeAsync(settleMsDefault)
    await next
    expect(loads).toStrictEqual(["ok"])
    expect(policy.current().decide(storefront, "GET", "/")).toBe("allow")
  })

  it("at start: a file written within the settle time is read once it stands still; an older one at once", async () => {
    const path = join(dir, "policy.yaml")
    const firstPart = `services:\n  catalog:\n    rules:\n      - from: ["${storefront}"]\n`
    const whole = `${firstPart}        methods: [GET]\n`
    writeFileSync(path, firstPart)
    const starting = watchPolicy(path)
    const first = await settling(starting.then(() => undefined))
    writeFileSync(path, whole)
    await vi.advanceTimersByTimeAsync(settleMsDefault)
    await settling(starting.then(() => undefined))
    await vi.advanceTimersByTimeAsync(settleMsDefault)
    const { policy, logged } = await starting
    expect(policy.current().decide(storefront, "POST", "/")).toBe("no-rule-matched")
    expect(policy.current().decide(storefront, "GET", "/")).toBe("allow")
    expect(first).toBe("settling")
    expect(logged.map((l) => [l.event, l.skipped])).toStrictEqual([["authz-policy-loaded", "1"]])

    // Written a second before the start: taken without waiting.
    const old = join(dir, "old.yaml")
    writeBefore(old, whole)
    const quick = watchPolicy(old)
    expect(await settling(quick.then(() => undefined))).toBe("done")
    expect((await quick).policy.current().decide(storefront, "GET", "/")).toBe("allow")
  })

  it("at start: a file still changing after the bounded looks is not taken (its part may allow more); the start fails, saying so", async () => {
    const path = join(dir, "policy.yaml")
    const allowing = (note: number) => `# ${note}\nservices:\n  catalog:\n    rules:\n      - from: ["${storefront}"]\n`
    writeFileSync(path, allowing(1))
    const logged: Array<Record<string, unknown>> = []
    const starting = watchPolicyFile({ path, service: "catalog", trustDomain: td, pollMs: 3_600_000, watch: false, log: loggedTo(logged) })
    const started = starting.then(() => undefined)
    for (let write = 2; write <= settleTries + 1; write++) {
      expect(await settling(started)).toBe("settling")
      // A size change each time, so the version differs whatever the mtime's granularity.
      writeFileSync(path, allowing(10 ** write))
      await vi.advanceTimersByTimeAsync(settleMsDefault)
    }
    expect(await settling(started)).toBe("done")
    const result = await starting
    if (Result.isSuccess(result)) closers.push(result.success.close)
    expect(Result.isFailure(result) ? result.failure : "started").toMatchObject({ _tag: "PolicyFileInvalid", message: expect.stringMatching(/still changing/) })
    expect(logged.map((l) => l.event)).toStrictEqual(["authz-policy-still-changing"])
  })
})
