// Routes as data (src/sidecar/routes.ts, routing.ts, routesFile.ts), no network: the document's
// checks name the route and the field; matches on path (exact, prefix, regex), method, headers and
// baggage, first match wins; the split spreads exactly by weight; the sticky baggage member wins
// over the routes where the target has its subset and is added only once; the baggage header is
// read within its bounds. A real file in a temp directory for the reader (JSON and YAML).
import * as Result from "effect/Result"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import type { IncomingHttpHeaders } from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { compileRoutes, MAX_REGEX_LENGTH, noRoutes, parseRoutesDocument } from "../../src/sidecar/routes.ts"
import { searchSource } from "../../src/sidecar/regexSafety.ts"
import { readRoutesFile } from "../../src/sidecar/routesFile.ts"
import { addStickyMember, baggageMembers, chooseSubset, STICKY_MEMBER } from "../../src/sidecar/routing.ts"
import { MAX_BAGGAGE_CHARS, MAX_BAGGAGE_MEMBERS } from "../../src/telemetry/propagation.ts"

const root = mkdtempSync(join(tmpdir(), "iip-mesh-routes-"))
afterAll(() => rmSync(root, { recursive: true, force: true }))

const compiled = (routes: ReadonlyArray<unknown>) => {
  const document = parseRoutesDocument({ routes })
  if (Result.isFailure(document)) throw new Error(document.failure.message)
  return compileRoutes(document.success)
}

/** A directory where pricing has v1 and v2, catalog only v1. */
const directory = { hasSubset: (service: string, subset: string) => (service === "pricing" ? subset === "v1" || subset === "v2" : subset === "v1") }

/** The choice for a request, without its route's counters (test/admin/routes-view.test.ts checks those). */
const choose = (routes: ReturnType<typeof compiled>, request: { method?: string; uri?: string; headers?: IncomingHttpHeaders; service?: string }) => {
  const choice = chooseSubset(routes, directory, request.service ?? "pricing", request.method ?? "GET", request.uri ?? "/", request.headers ?? {})
  if (choice === undefined) return undefined
  const { counters: _counters, ...rest } = choice
  return rest
}

describe("routes document", () => {
  it("refuses a path regex that can backtrack without bound (an app's path is hostile input, matched per request); ordinary ones pass", () => {
    const withRegex = (regex: string) =>
      parseRoutesDocument({ routes: [{ name: "r", service: "pricing", matches: [{ path: { regex } }], split: [{ subset: "v1", weight: 1 }] }] })
    for (const regex of ["^(a+)+$", "(x*)*y", "^/(a|aa)+$", "(?:[a-z]+/?){2,}$", "^(.*)\\1$", "(?<p>a)\\k<p>"]) {
      const result = withRegex(regex)
      if (Result.isSuccess(result)) throw new Error(`expected ${regex} to be refused`)
      expect(result.failure.problems.join("\n")).toMatch(/routes\[0\]\.matches\[0\]\.path\.regex \(route "r"\): Expected a regular expression without (a repeated group that itself repeats or branches|back-references)/)
    }
    for (const regex of ["^/orders/[0-9]+$", "^/api/(v1|v2)/items(/[0-9]+)?$", "^/a\\(b+\\)+$", "^/files/[^/]+\\.(png|jpe?g)$", "^/x{2,4}/(ab){3}$"]) {
      expect(Result.isSuccess(withRegex(regex)), regex).toBe(true)
    }
    // The worst case it guards against: (a+)+$ on a 30-character path takes seconds in V8.
  })

  it("refuses repetitions in sequence that can share characters: backtracking polynomial in the path's length, of degree their count (plus one unanchored)", () => {
    const withRegex = (regex: string) =>
      parseRoutesDocument({ routes: [{ name: "r", service: "pricing", matches: [{ path: { regex } }], split: [{ subset: "v1", weight: 1 }] }] })
    // a*a*b unanchored as written: 5 s on a 2048-character path of "a" (node 24); a*a*a*b: 2 s on 200 characters, hours on 2048.
    // A leading repeated character is dropped for the search (searchSource), so these start with another.
    for (const regex of ["=a*a*b", "^a*a*a*b", "=.*.*=", "=\\d+\\d+x", "^/(?=.*a)(?=.*b).*c", "/x/.*-[0-9]+$|^/y"]) {
      const result = withRegex(regex)
      if (Result.isSuccess(result)) throw new Error(`expected ${regex} to be refused`)
      expect(result.failure.problems.join("\n"), regex).toMatch(/routes\[0\]\.matches\[0\]\.path\.regex \(route "r"\): Expected a regular expression with at most 2 repetitions that can share characters/)
    }
    // Repetitions that end at a character they cannot match (/ after [0-9]+) or at the end, and at most one that shares (anchored).
    // a*a*b and .*.*= are searched for as b and = (searchSource): linear.
    for (const regex of ["a*b", "a*a*b", ".*.*=", "/orders/[0-9]+", "^/users/[0-9]+/orders/[0-9]+/items/[0-9]+$", "^/api/[^/]+/v[0-9]+/.*$", "^/api/.*/v[0-9]+/.*$", "^.*\\.json$", "^/quote(?:/|$)"]) {
      const result = withRegex(regex)
      expect(Result.isSuccess(result) ? "accepted" : result.failure.message, regex).toBe("accepted")
    }
  })

  it("refuses two choices that multiply even at degree 2: two repetitions that share characters, or one and an unanchored start (n^2: milliseconds a request on a 2048-character path)", () => {
    const withRegex = (regex: string) =>
      parseRoutesDocument({ routes: [{ name: "r", service: "pricing", matches: [{ path: { regex } }], split: [{ subset: "v1", weight: 1 }] }] })
    // Accepted before; per test on a 2048-character path (node 24, load 17): ^a*a*b 5.6 ms on "a", ^/(.*)/(.*)/items$ 5.8 ms
    // on "/", =.*; 6.0 ms on "=", /api/.*/items 1.3 ms on "/api/" repeated, x[a-z]+/ 5.1 ms on "x" (each start's scan
    // runs over the next starts).
    // A character written as a hex or unicode escape is the character: ^a*\x61*b was accepted (its
    // escape read as "\x", "6" and a repeated "1"), 2.0 ms a test on 2048 "a", as ^a*a*b.
    for (const regex of ["^a*a*b", "^/(.*)/(.*)/items$", "=.*;", "/api/.*/items", "x[a-z]+/", "/a[^x]+;", "^a*\\x61*b", "^a*\\u0061*b", "^a+\\x61+b"]) {
      const result = withRegex(regex)
      if (Result.isSuccess(result)) throw new Error(`expected ${regex} to be refused`)
      expect(result.failure.problems.join("\n"), regex).toMatch(/Expected a regular expression with at most 2 repetitions that can share characters/)
    }
    // What to write instead, linear (at most 0.14 ms on the same paths): a class that stops at the separator, or an anchor.
    for (const regex of ["^a*b", "^/([^/]*)/(.*)/items$", "^/([^/]+)/([^/]+)/items$", "^/api/.*/items", "/orders/[0-9]+", "x[0-9]+/", "^/v[0-9]+\\x2f[0-9]+$", "^[a-z]*\\u002f[a-z]+$"]) {
      const result = withRegex(regex)
      expect(Result.isSuccess(result) ? "accepted" : result.failure.message, regex).toBe("accepted")
    }
    // An unanchored start written as an escape is dropped for the search like any other: \x41*b was run
    // as written, 10 ms a test on 2048 "A".
    expect([searchSource("\\x41*b"), searchSource("\\u0041+b")]).toEqual(["b", "\\u0041b"])
  })

  it("counts what can follow a repetition as the engine does: an optional character is no boundary, a case-insensitive group matches either case, a group's end is not, a fixed count is no choice", () => {
    const withRegex = (regex: string) =>
      parseRoutesDocument({ routes: [{ name: "r", service: "pricing", matches: [{ path: { regex } }], split: [{ subset: "v1", weight: 1 }] }] })
    // The / may be absent, so the \d+ share the digits: \d+/?\d+x 760 ms on 1024 digits (x8 per doubling: ~6 s on 2048),
    // the anchored three 600 ms on 1024; the (?i:) one 120 ms on 300 characters (node 24, load 15). A leading \d+ is
    // searched for as \d (searchSource): the x before it keeps the three.
    for (const regex of ["x\\d+/?\\d+x", "^\\d+/?\\d+/?\\d+x$", "^(?i:[a-z]+A[a-z]+A[a-z]+A)$"]) {
      const result = withRegex(regex)
      if (Result.isSuccess(result)) throw new Error(`expected ${regex} to be refused`)
      expect(result.failure.problems.join("\n"), regex).toMatch(/Expected a regular expression with at most 2 repetitions that can share characters/)
    }
    // Routes users write, accepted before the degree check and linear on a 2048-character path.
    for (const regex of ["^/[a-z]{2}(-[A-Z]{2})?/.*$", "^/([a-z]+)/([a-z]+)/([0-9]+)$", "^/users/(?<id>[0-9]+)/orders/(?<oid>[0-9]+)/items/(?<item>[0-9]+)$", "^/(\\w+)/(\\w+)/(\\d+)$"]) {
      const result = withRegex(regex)
      expect(Result.isSuccess(result) ? "accepted" : result.failure.message, regex).toBe("accepted")
    }
  })
  it("names the route and the field of every problem", () => {
    const result = parseRoutesDocument({
      routes: [
        { name: "ok", service: "pricing", split: [{ subset: "v1", weight: 1 }] },
        { name: "canary", service: "pricing", split: [{ subset: "v2", weight: -1 }], sticky: "cookie" },
        { name: "paths", service: "pricing", matches: [{ path: { prefix: "/a", exact: "/b" } }, { path: { regex: "(" } }], split: [{ subset: "v1", weight: 0 }] },
        { name: "extra", service: "Pricing", split: [{ subset: "v 1", weight: 1 }], retries: 3 },
        { name: "long", service: "pricing", matches: [{ path: { regex: "a".repeat(MAX_REGEX_LENGTH + 1) } }], split: [{ subset: "v1", weight: 1 }] }
      ]
    })
    if (Result.isSuccess(result)) throw new Error("expected the document to be rejected")
    const problems = result.failure.problems.join("\n")
    expect(problems).toMatch(/routes\[1\]\.split\[0\]\.weight \(route "canary"\)/)
    expect(problems).toMatch(/routes\[1\]\.sticky \(route "canary"\)/)
    expect(problems).toMatch(/routes\[2\]\.matches\[0\]\.path \(route "paths"\): Expected exactly one of exact, prefix, regex/)
    expect(problems).toMatch(/routes\[2\]\.matches\[1\]\.path\.regex \(route "paths"\): Expected a regular expression/)
    expect(problems).toMatch(/routes\[2\]\.split \(route "paths"\): Expected at least one weight above 0/)
    expect(problems).toMatch(/routes\[3\]\.service \(route "extra"\): Expected a service name/)
    expect(problems).toMatch(/routes\[3\]\.split\[0\]\.subset \(route "extra"\)/)
    expect(problems).toMatch(/routes\[3\]\.retries \(route "extra"\)/)
    expect(problems).toMatch(/routes\[4\]\.matches\[0\]\.path\.regex \(route "long"\): Expected a regular expression of at most 256 characters/)
    expect(problems).not.toMatch(/routes\[0\]/)
    const twice = parseRoutesDocument({ routes: [{ name: "a", service: "x", split: [{ subset: "v1", weight: 1 }] }, { name: "a", service: "y", split: [{ subset: "v1", weight: 1 }] }] })
    expect(Result.isFailure(twice) && twice.failure.message).toMatch(/unique, got "a" twice/)
    expect(Result.isFailure(parseRoutesDocument([]))).toBe(true)
  })

  it("the file reader takes JSON and YAML, names the file, and refuses what does not parse", async () => {
    const json = join(root, "routes.json")
    writeFileSync(json, JSON.stringify({ routes: [{ name: "all", service: "pricing", split: [{ subset: "v1", weight: 1 }] }] }))
    const fromJson = await readRoutesFile(json)
    expect(Result.isSuccess(fromJson) && fromJson.success.source).toBe("1 route for 1 service")
    const yaml = join(root, "routes.yaml")
    writeFileSync(yaml, "routes:\n  - name: all\n    service: pricing\n    split:\n      - { subset: v2, weight: 1 }\n  - name: other\n    service: catalog\n    split: [{ subset: v1, weight: 1 }]\n")
    const fromYaml = await readRoutesFile(yaml)
    if (Result.isFailure(fromYaml)) throw new Error(fromYaml.failure.message)
    expect(choose(fromYaml.success, {})).toStrictEqual({ subset: "v2", route: "all", stick: false })
    writeFileSync(yaml, "routes: [ {")
    const broken = await readRoutesFile(yaml)
    expect(Result.isFailure(broken) && broken.failure.message).toMatch(new RegExp(`^${yaml}: cannot parse it as YAML`))
    writeFileSync(json, JSON.stringify({ routes: [{ name: "all", service: "pricing", split: [] }] }))
    const empty = await readRoutesFile(json)
    expect(Result.isFailure(empty) && empty.failure.message).toMatch(/routes\[0\]\.split \(route "all"\)/)
  })
})

describe("matching", () => {
  const routes = compiled([
    { name: "exact", service: "pricing", matches: [{ path: { exact: "/quote" }, method: "GET" }], split: [{ subset: "v2", weight: 1 }] },
    { name: "orders", service: "pricing", matches: [{ path: { regex: "^/orders/[0-9]+$" }, method: "POST" }], split: [{ subset: "v2", weight: 1 }] },
    { name: "testers", service: "pricing", matches: [{ headers: { "X-Tester": "yes" } }, { baggage: { tester: "alice" } }], split: [{ subset: "v2", weight: 1 }] },
    { name: "beta", service: "pricing", matches: [{ path: { prefix: "/beta/" } }, { query: { beta: "on", "the user": "a&b" } }], split: [{ subset: "v2", weight: 1 }] },
    { name: "stable", service: "pricing", split: [{ subset: "v1", weight: 1 }] }
  ])
  const routeOf = (request: Parameters<typeof choose>[1]) => choose(routes, request)?.route

  it("path exact, prefix and regex (on the path without its query), method, headers, query and baggage; the first match wins", () => {
    expect(routeOf({ uri: "/quote?sku=1" })).toBe("exact")
    expect(routeOf({ uri: "/quote", method: "POST" })).toBe("stable")
    expect(routeOf({ uri: "/quote/x" })).toBe("stable")
    expect(routeOf({ uri: "/orders/12", method: "POST" })).toBe("orders")
    expect(routeOf({ uri: "/orders/12a", method: "POST" })).toBe("stable")
    expect(routeOf({ uri: "/orders/12", method: "GET" })).toBe("stable")
    expect(routeOf({ headers: { "x-tester": "yes" } })).toBe("testers")
    expect(routeOf({ headers: { "x-tester": "no" } })).toBe("stable")
    expect(routeOf({ headers: { baggage: "user=bob, tester=alice;ttl=1" } })).toBe("testers")
    expect(routeOf({ headers: { baggage: "tester=alicia" } })).toBe("stable")
    expect(routeOf({ uri: "/beta/list" })).toBe("beta")
    expect(routeOf({ uri: "/list?beta=on&the%20user=a%26b" })).toBe("beta")
    expect(routeOf({ uri: "/list?beta=on" })).toBe("stable")
    expect(routeOf({ uri: "/quote", headers: { "x-tester": "yes" } })).toBe("exact")
    expect(choose(routes, { service: "catalog" })).toBeUndefined()
    expect(choose(noRoutes, {})).toBeUndefined()
  })

  it("an unanchored regex that begins with a repeated character (.*, [^/]*, .+) matches as the search it is, in time linear in the path", () => {
    // Before: run as written, .*\\.json$ tried every start and scanned the rest from each: 510 ms on a
    // 16,384-character path, ~2 s on the 32,768 here (node 24); .*/download$ 966 ms on 16,384.
    const adversarial = ["/ab".repeat(10_923).slice(0, 32_768), "a".repeat(32_768), "1".repeat(32_767) + "x"]
    const samples = ["/a/b.json", "/a.json/b", "/x/download", "/x/download/y", "/download", ".json", "/ab\n/c.json", "/aab", "/b", "/"]
    for (const regex of [".*\\.json$", ".*?/download$", "[^/]*\\.json$", ".+\\.json$", "a*b", "a+?b"]) {
      const routes = compiled([{ name: "r", service: "pricing", matches: [{ path: { regex } }], split: [{ subset: "v2", weight: 1 }] }])
      for (const uri of samples) expect(choose(routes, { uri })?.route === "r", `${regex} on ${JSON.stringify(uri)}`).toBe(new RegExp(regex).test(uri))
      for (const uri of adversarial) {
        const start = performance.now()
        choose(routes, { uri })
        expect(performance.now() - start, `${regex} on ${JSON.stringify(uri.slice(0, 9))}...`).toBeLessThan(100)
      }
    }
  })

  it("a split spreads exactly by weight: 90/10 gives 9,000 and 1,000 of 10,000, interleaved", () => {
    const split = compiled([{ name: "canary", service: "pricing", split: [{ subset: "v1", weight: 90 }, { subset: "v2", weight: 10 }, { subset: "v3", weight: 0 }] }])
    const picks = Array.from({ length: 10_000 }, () => choose(split, {})!.subset)
    expect(picks.filter((s) => s === "v2").length).toBe(1000)
    expect(picks.filter((s) => s === "v1").length).toBe(9000)
    // Smooth: v2 once in every 10.
    for (let i = 0; i < 10_000; i += 10) expect(picks.slice(i, i + 10).filter((s) => s === "v2").length).toBe(1)
  })
})

describe("sticky baggage", () => {
  const routes = compiled([{ name: "canary", service: "pricing", matches: [{ headers: { "x-canary": "on" } }], split: [{ subset: "v2", weight: 1 }], sticky: "baggage" }])

  it("a sticky route says to add the member; a request carrying it goes to its subset where the target has it, ahead of the routes", () => {
    expect(choose(routes, { headers: { "x-canary": "on" } })).toStrictEqual({ subset: "v2", route: "canary", stick: true })
    expect(choose(routes, { headers: { baggage: `${STICKY_MEMBER}=v2` } })).toStrictEqual({ subset: "v2", route: "baggage", stick: false })
    expect(choose(noRoutes, { headers: { baggage: `user=bob,${STICKY_MEMBER}=v1` } })).toStrictEqual({ subset: "v1", route: "baggage", stick: false })
    // The target has no such subset: the member is ignored here (and not replaced).
    expect(choose(noRoutes, { service: "catalog", headers: { baggage: `${STICKY_MEMBER}=v2` } })).toBeUndefined()
    expect(choose(routes, { headers: { "x-canary": "on", baggage: `${STICKY_MEMBER}=v9` } })).toStrictEqual({ subset: "v2", route: "canary", stick: false })
    expect(choose(noRoutes, { headers: { baggage: `${STICKY_MEMBER}=v%202` } })).toBeUndefined()
  })

  it("the member is appended to the baggage there is, or is the baggage; not past the size bound", () => {
    const headers: Array<[string, string]> = [["accept", "*/*"], ["Baggage", "user=bob"]]
    expect(addStickyMember(headers, "v2")).toBe(true)
    expect(headers).toStrictEqual([["accept", "*/*"], ["Baggage", `user=bob,${STICKY_MEMBER}=v2`]])
    const none: Array<[string, string]> = [["accept", "*/*"]]
    addStickyMember(none, "v2")
    expect(none).toStrictEqual([["accept", "*/*"], ["baggage", `${STICKY_MEMBER}=v2`]])
    const full: Array<[string, string]> = [["baggage", `k=${"x".repeat(MAX_BAGGAGE_CHARS - 10)}`]]
    expect(addStickyMember(full, "v2")).toBe(false)
    expect(full[0]![1].length).toBe(MAX_BAGGAGE_CHARS - 8)
  })

  it("the baggage header is read within its bounds: characters, members, malformed members skipped", () => {
    expect([...baggageMembers(" a = 1 ;p=q, b=%41%42,bad,=x,c=%zz, a=2")]).toStrictEqual([["a", "1"], ["b", "AB"]])
    const many = Array.from({ length: MAX_BAGGAGE_MEMBERS + 20 }, (_, i) => `k${i}=v`).join(",")
    expect(baggageMembers(many).size).toBe(MAX_BAGGAGE_MEMBERS)
    const long = `${"f=".padEnd(MAX_BAGGAGE_CHARS - 5, "x")},late=1,${STICKY_MEMBER}=v2`
    expect(baggageMembers(long).has("f")).toBe(true)
    expect(baggageMembers(long).has(STICKY_MEMBER)).toBe(false)
    expect(baggageMembers("x".repeat(MAX_BAGGAGE_CHARS * 2)).size).toBe(0)
  })
})

describe("route actions (routeActions.ts)", () => {
  const split = [{ subset: "v1", weight: 1 }]
  const actionsOf = (fields: Record<string, unknown>) => choose(compiled([{ name: "r", service: "pricing", split, ...fields }]), {})?.actions

  it("are checked: each problem names the route and the field; unknown keys, framing and hop-by-hop headers are refused", () => {
    const result = parseRoutesDocument({
      routes: [
        { name: "ok", service: "pricing", split, timeoutMs: 100, retries: { attempts: 2, perTryTimeoutMs: 50 }, requestHeaders: { set: { "x-a": "1" }, add: { "x-b": "2" }, remove: ["x-c"] }, fault: { abort: { status: 503, percent: 5 }, delay: { ms: 10, percent: 5 } } },
        { name: "times", service: "pricing", split, timeoutMs: 0, retries: { attempts: 9, perTryTimeoutMs: 1.5, budget: 3 } },
        { name: "heads", service: "pricing", split, requestHeaders: { set: { "content-length": "0" }, add: { "x-ok": "a\r\nb" }, remove: ["connection"], rename: {} } },
        { name: "mesh", service: "pricing", split, requestHeaders: { set: { "iip-timeout": "1" }, add: { "transfer-encoding": "chunked" } } },
        { name: "faults", service: "pricing", split, fault: { abort: { status: 200, percent: 101 }, delay: { ms: 600_000, percent: 5 }, drop: true } }
      ]
    })
    if (Result.isSuccess(result)) throw new Error("expected the document to be rejected")
    const problems = result.failure.problems.join("\n")
    expect(problems).not.toMatch(/route "ok"/)
    expect(problems).toMatch(/routes\[1\]\.timeoutMs \(route "times"\)/)
    expect(problems).toMatch(/routes\[1\]\.retries\.attempts \(route "times"\): Expected a value between 1 and 5/)
    expect(problems).toMatch(/routes\[1\]\.retries\.perTryTimeoutMs \(route "times"\)/)
    expect(problems).toMatch(/routes\[1\]\.retries\.budget \(route "times"\)/)
    expect(problems).toMatch(/routes\[2\]\.requestHeaders\.set \(route "heads"\): Expected an end-to-end header name .*"content-length"/)
    expect(problems).toMatch(/routes\[2\]\.requestHeaders\.add \(route "heads"\): Expected a header value/)
    expect(problems).toMatch(/routes\[2\]\.requestHeaders\.remove\[0\] \(route "heads"\): Expected an end-to-end header name/)
    expect(problems).toMatch(/routes\[2\]\.requestHeaders\.rename \(route "heads"\)/)
    expect(problems).toMatch(/routes\[3\]\.requestHeaders\.set \(route "mesh"\): .*"iip-timeout"/)
    expect(problems).toMatch(/routes\[3\]\.requestHeaders\.add \(route "mesh"\): .*"transfer-encoding"/)
    expect(problems).toMatch(/routes\[4\]\.fault\.abort\.status \(route "faults"\): Expected a value between 400 and 599/)
    expect(problems).toMatch(/routes\[4\]\.fault\.abort\.percent \(route "faults"\): Expected a value between 0 and 100/)
    expect(problems).toMatch(/routes\[4\]\.fault\.delay\.ms \(route "faults"\): Expected a value between 1 and 60000/)
    expect(problems).toMatch(/routes\[4\]\.fault\.drop \(route "faults"\)/)
  })

  it("a route without actions carries none; timeout and retries come through as given", () => {
    expect(actionsOf({})).toBeUndefined()
    expect(actionsOf({ timeoutMs: 250, retries: { attempts: 1 } })).toStrictEqual({ timeoutMs: 250, attempts: 1 })
    expect(actionsOf({ retries: { attempts: 4, perTryTimeoutMs: 80 } })).toStrictEqual({ attempts: 4, perTryTimeoutMs: 80 })
  })

  it("fault percentages are counted: 7 % of 10,000 is exactly 700 aborts, 33 % exactly 3,300 delays, spread out; 0 % never", () => {
    const actions = actionsOf({ fault: { abort: { status: 418, percent: 7 }, delay: { ms: 25, percent: 33 } } })!
    let aborts = 0
    let delays = 0
    let longestRun = 0
    let run = 0
    for (let i = 0; i < 10_000; i++) {
      const status = actions.abortStatus!()
      if (status !== undefined) {
        expect(status).toBe(418)
        aborts++
        longestRun = Math.max(longestRun, ++run)
      } else run = 0
      const delay = actions.delayMs!()
      if (delay > 0) {
        expect(delay).toBe(25)
        delays++
      }
    }
    expect(aborts).toBe(700)
    expect(delays).toBe(3300)
    expect(longestRun).toBe(1)
    const never = actionsOf({ fault: { abort: { status: 503, percent: 0 } } })!
    expect(never.abortStatus).toBeUndefined()
  })

  it("header modifiers: remove and set drop every value of the name (case-insensitive), set and add append; the rest keeps its order", () => {
    const modify = actionsOf({ requestHeaders: { set: { "X-Env": "canary" }, add: { "x-tag": "route" }, remove: ["X-Debug"] } })!.modifyHeaders!
    const headers: Array<[string, string]> = [["x-env", "prod"], ["accept", "*/*"], ["x-debug", "1"], ["x-tag", "app"], ["x-env", "again"], ["x-debug", "2"]]
    modify(headers)
    expect(headers).toStrictEqual([["accept", "*/*"], ["x-tag", "app"], ["x-env", "canary"], ["x-tag", "route"]])
  })

  it("mirror: checked (subset label, percent, bound); counted like the faults; its gate skips past the bound and frees on leave", () => {
    const bad = parseRoutesDocument({ routes: [{ name: "m", service: "pricing", split, mirror: { subset: "v 2", percent: 150, maxInFlight: 0, to: "x" } }] })
    if (Result.isSuccess(bad)) throw new Error("expected the document to be rejected")
    const problems = bad.failure.problems.join("\n")
    expect(problems).toMatch(/routes\[0\]\.mirror\.subset \(route "m"\): Expected a label/)
    expect(problems).toMatch(/routes\[0\]\.mirror\.percent \(route "m"\): Expected a value between 0 and 100/)
    expect(problems).toMatch(/routes\[0\]\.mirror\.maxInFlight \(route "m"\): Expected a value between 1 and 1024/)
    expect(problems).toMatch(/routes\[0\]\.mirror\.to \(route "m"\)/)

    const actions = actionsOf({ mirror: { subset: "v2", percent: 25, maxInFlight: 2 } })!
    const picks = Array.from({ length: 8 }, () => actions.mirrorSubset!())
    expect(picks.filter((p) => p === "v2")).toHaveLength(2)
    expect(picks.filter((p) => p === undefined)).toHaveLength(6)
    const gate = actions.mirrorGate!
    expect([gate.tryEnter(), gate.tryEnter(), gate.tryEnter()]).toStrictEqual([true, true, false])
    gate.leave()
    expect([gate.tryEnter(), gate.tryEnter()]).toStrictEqual([true, false])
    expect(actionsOf({ mirror: { subset: "v2" } })!.mirrorSubset!()).toBe("v2")
  })

  it("a request the sticky member routes gets no route's actions (later hops follow the journey's subset only)", () => {
    const routes = compiled([{ name: "r", service: "pricing", split, timeoutMs: 5 }])
    expect(choose(routes, {})?.actions).toStrictEqual({ timeoutMs: 5 })
    expect(choose(routes, { headers: { baggage: `${STICKY_MEMBER}=v2` } })).toStrictEqual({ subset: "v2", route: "baggage", stick: false })
  })
})
