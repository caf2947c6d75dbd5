// The authorization policy on its own (src/identity/policy.ts): a document is checked with every
// problem named where it is; compiled for one service, it allows and denies by identity (exact,
// `*` in a segment, trailing `/**`, lone `*`), path (exact, prefix) and method, falls back to the
// service's default (allow-all, mesh-authenticated, deny) or the document's for a service it does
// not name; a path that decodes to a dot segment never matches a prefix rule.
import * as Result from "effect/Result"
import { describe, expect, it } from "vitest"
import { compilePolicy, identityMatcher, matchablePath, parsePolicyDocument, type PolicyDocument } from "../../src/identity/policy.ts"
import { prng } from "../helpers/prng.ts"
import { threadCpuMs } from "../support/offCore.ts"

const td = "iip-mesh.local"
const storefront = `spiffe://${td}/ns/shop/sa/storefront`
const reports = `spiffe://${td}/ns/shop/sa/reports`
const batch = `spiffe://${td}/ns/jobs/sa/nightly`
const foreign = "spiffe://other.org/ns/shop/sa/storefront"

const document = (value: unknown): PolicyDocument => {
  const parsed = parsePolicyDocument(value)
  if (Result.isFailure(parsed)) throw new Error(parsed.failure.message)
  return parsed.success
}

const problems = (value: unknown): ReadonlyArray<string> => {
  const parsed = parsePolicyDocument(value)
  if (Result.isSuccess(parsed)) throw new Error("expected the document to be refused")
  return parsed.failure.problems
}

describe("policy decisions", () => {
  const shop = compilePolicy(
    document({
      services: {
        catalog: {
          default: "deny",
          rules: [
            { from: [storefront], paths: ["/products", "/products/*"], methods: ["GET", "head"] },
            { from: [`spiffe://${td}/ns/shop/sa/*`], paths: ["/health"] },
            { from: [`spiffe://${td}/ns/jobs/**`], methods: ["POST"], paths: ["/reindex"] }
          ]
        }
      }
    }),
    "catalog",
    td
  )

  it("allows what a rule allows: its identity, one of its paths (exact or prefix), one of its methods", () => {
    expect(shop.allowsAll).toBe(false)
    expect(shop.decide(storefront, "GET", "/products")).toBe("allow")
    expect(shop.decide(storefront, "GET", "/products/42?currency=EUR")).toBe("allow")
    expect(shop.decide(storefront, "HEAD", "/products/42")).toBe("allow") // rule methods are upper-cased
    expect(shop.decide(reports, "DELETE", "/health")).toBe("allow") // `*` in a segment, any method
    expect(shop.decide(batch, "POST", "/reindex")).toBe("allow") // trailing /**
  })

  it("denies another method, another path or another identity", () => {
    expect(shop.decide(storefront, "POST", "/products")).toBe("no-rule-matched")
    expect(shop.decide(storefront, "get", "/products")).toBe("no-rule-matched") // methods are case-sensitive on the wire
    expect(shop.decide(storefront, "GET", "/productsX")).toBe("no-rule-matched") // /products is exact, /products/* a prefix
    expect(shop.decide(storefront, "GET", "/admin")).toBe("no-rule-matched")
    expect(shop.decide(reports, "GET", "/products")).toBe("no-rule-matched")
    expect(shop.decide(batch, "GET", "/reindex")).toBe("no-rule-matched")
    expect(shop.decide(`spiffe://${td}/ns/shop/sa/a/b`, "GET", "/health")).toBe("no-rule-matched") // * stays in one segment
    expect(shop.decide(foreign, "GET", "/products")).toBe("no-rule-matched")
    expect(shop.decide(undefined, "GET", "/products")).toBe("unauthenticated")
  })

  it("matches paths decoded, and never lets a dot segment or a backslash through a prefix rule", () => {
    expect(shop.decide(storefront, "GET", "/product%73/1")).toBe("allow")
    for (const sneaky of ["/products/../admin", "/products/%2E%2E/admin", "/products%2F..%2Fadmin", "/products/./x", "/products/..", "/products/x%5C..%5Cadmin", "/products/%zz",
      // A servlet container strips a segment's parameters before it resolves dot segments: `..;` is `..` to it.
      "/products/..;/admin", "/products/.;x/y", "/products/%2E%2E%3B/admin", "/products/..;jsessionid=1"]) {
      expect(shop.decide(storefront, "GET", sneaky), sneaky).toBe("no-rule-matched")
    }
    // A rule without paths still applies to such a path (it allows every path anyway).
    const anyPath = compilePolicy(document({ services: { catalog: { rules: [{ from: [storefront] }] } } }), "catalog", td)
    expect(anyPath.decide(storefront, "GET", "/a/../b")).toBe("allow")
    expect(matchablePath("/a%2Fb?x=1")).toBe("/a/b")
    expect(matchablePath("/a/..b/c")).toBe("/a/..b/c")
    expect(matchablePath("/a/..b;c/d")).toBe("/a/..b;c/d")
    // Parameters on any other segment are no dot segment: such a path still passes a prefix rule.
    expect(shop.decide(storefront, "GET", "/products/1;jsessionid=x")).toBe("allow")
    expect(shop.decide(storefront, "GET", "/products/...;x")).toBe("allow")
    // A pattern that holds one could never match: it is refused, one with parameters elsewhere is not.
    expect(problems({ services: { catalog: { rules: [{ from: [storefront], paths: ["/a/..;/*", "/a/.;x", "/a;v=1/*"] }] } } })).toStrictEqual([
      `services.catalog.rules[0].paths[0]: a path pattern may not hold . or .. segments, got "/a/..;/*"`,
      `services.catalog.rules[0].paths[1]: a path pattern may not hold . or .. segments, got "/a/.;x"`
    ])
  })

  it("defaults: allow-all allows everyone, mesh-authenticated any identity of the trust domain, deny no one; omitted means deny", () => {
    const of = (fallback: unknown) => compilePolicy(document({ services: { catalog: fallback === undefined ? {} : { default: fallback } } }), "catalog", td)
    const allowAll = of("allow-all")
    expect(allowAll.allowsAll).toBe(true)
    expect(allowAll.decide(undefined, "DELETE", "/x")).toBe("allow")
    const authenticated = of("mesh-authenticated")
    expect(authenticated.decide(storefront, "DELETE", "/x")).toBe("allow")
    expect(authenticated.decide(`spiffe://${td}`, "GET", "/")).toBe("allow")
    expect(authenticated.decide(foreign, "GET", "/")).toBe("not-in-trust-domain")
    expect(authenticated.decide(`spiffe://${td}.evil/x`, "GET", "/")).toBe("not-in-trust-domain")
    expect(authenticated.decide(undefined, "GET", "/")).toBe("unauthenticated")
    expect(of("deny").decide(storefront, "GET", "/")).toBe("default-deny")
    expect(of(undefined).decide(storefront, "GET", "/")).toBe("default-deny")
  })

  it("mesh-authenticated with rules: the rules can admit identities of another trust domain", () => {
    const policy = compilePolicy(document({ services: { catalog: { default: "mesh-authenticated", rules: [{ from: [foreign], methods: ["GET"] }] } } }), "catalog", td)
    expect(policy.decide(foreign, "GET", "/")).toBe("allow")
    expect(policy.decide(foreign, "POST", "/")).toBe("not-in-trust-domain")
    expect(policy.decide(reports, "POST", "/")).toBe("allow")
  })

  it("a service the document does not name gets the document's default (deny when it says none)", () => {
    expect(compilePolicy(document({ default: "allow-all", services: {} }), "pricing", td).allowsAll).toBe(true)
    const denied = compilePolicy(document({ services: { catalog: { default: "allow-all" } } }), "pricing", td)
    expect(denied.decide(storefront, "GET", "/")).toBe("default-deny")
    expect(denied.source).toContain("names no pricing")
    expect(compilePolicy(document({}), "catalog", td).decide(storefront, "GET", "/")).toBe("default-deny")
  })

  it("identity patterns: exact, * within a segment, /** below, * alone for every identity", () => {
    expect(identityMatcher("spiffe://td/ns/shop/sa/web")("spiffe://td/ns/shop/sa/web")).toBe(true)
    expect(identityMatcher("spiffe://td/ns/shop/sa/*")("spiffe://td/ns/shop/sa/web")).toBe(true)
    expect(identityMatcher("spiffe://td/ns/shop/sa/*")("spiffe://td/ns/shop/sa/web/x")).toBe(false)
    expect(identityMatcher("spiffe://td/ns/shop/**")("spiffe://td/ns/shop/sa/web")).toBe(true)
    expect(identityMatcher("spiffe://td/ns/shop/**")("spiffe://td/ns/shop/")).toBe(false)
    expect(identityMatcher("spiffe://td/ns/shop/**")("spiffe://td/ns/shopping/sa/web")).toBe(false)
    expect(identityMatcher("spiffe://td/ns/*/sa/storefront")("spiffe://td/ns/shop/sa/storefront")).toBe(true)
    expect(identityMatcher("spiffe://td/ns/sh*p/sa/st*")("spiffe://td/ns/shp/sa/st")).toBe(true)
    expect(identityMatcher("spiffe://td/ns/s.p/sa/a")("spiffe://td/ns/sxp/sa/a")).toBe(false)
    expect(identityMatcher("*")("spiffe://other/x")).toBe(true)
  })
})

describe("a policy document of many problems", () => {
  it("1,000 rules of 256 bad identities each: refused with the first 100 problems, in well under a second, not 25 MB of message", () => {
    const document = { services: { catalog: { rules: Array.from({ length: 1_000 }, () => ({ from: Array.from({ length: 256 }, () => "x") })) } } }
    // Its cost as the main thread's CPU: a wall clock counts the time a loaded machine leaves the process off its core.
    const { value: parsed, ms: elapsed } = threadCpuMs(() => parsePolicyDocument(document))
    expect(Result.isFailure(parsed) && parsed.failure.problems.length).toBe(100)
    expect(Result.isFailure(parsed) && parsed.failure.message).toMatch(/stopped at 100 problems\)$/)
    // All 256,000 made a 25,205,873-character message in 1.8 to 3.5 s here.
    expect(elapsed).toBeLessThan(500)
  })
})

describe("identity patterns on hostile identities", () => {
  /** The regex the patterns meant (each `*` as `[^/]*`): the oracle for small inputs, where its backtracking is cheap. */
  const oracle = (pattern: string, id: string) =>
    new RegExp(`^${pattern.split("*").map((part) => part.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join("[^/]*")}$`).test(id)

  it("a pattern of several *s against a long segment that does not match decides in well under a millisecond, not seconds", () => {
    // As a regex (each `*` as `[^/]*`) this takes time to the power of the stars: 0.2 s for 4 stars against 60 a's here, 10.4 s for 6.
    const match = identityMatcher(`spiffe://${td}/ns/shop/sa/${"*a".repeat(5)}*X`)
    // Timed as the main thread's CPU: a 50 ms wall clock would also count a loaded machine's wait for a core.
    const { value: matched, ms } = threadCpuMs(() => [match(`spiffe://${td}/ns/shop/sa/${"a".repeat(60)}`), match(`spiffe://${td}/ns/shop/sa/${"a".repeat(60)}X`)])
    expect(matched).toStrictEqual([false, true])
    expect(ms).toBeLessThan(50)
  })

  it("matches what the regex does on 3,000 random small patterns and identities", () => {
    const random = prng(15)
    const word = (alphabet: string) => Array.from({ length: random.int(0, 4) }, () => random.pick([...alphabet])).join("")
    for (let i = 0; i < 3_000; i++) {
      const pattern = `spiffe://${td}/${Array.from({ length: random.int(1, 3) }, () => word("ab*.").replace(/\*+/g, "*")).join("/")}` // `**` means more: not here
      const id = `spiffe://${td}/${Array.from({ length: random.int(1, 3) }, () => word("ab.")).join("/")}`
      expect(identityMatcher(pattern)(id), `${pattern} vs ${id}`).toBe(oracle(pattern, id))
    }
  })
})

describe("policy documents", () => {
  it("names every problem with where it is", () => {
    const found = problems({
      default: "maybe",
      servcies: {},
      services: {
        Catalog: {},
        pricing: {
          default: "allow",
          rules: [
            { paths: ["/x"] },
            { from: ["storefront", "spiffe://*.local/x", "spiffe://td/a/**/b"], paths: ["x", "/a*b", "/a/../b", "/q?x"], methods: ["GE T"], extra: 1 },
            { from: [] },
            "nope"
          ]
        }
      }
    })
    expect(found).toStrictEqual([
      `servcies: unknown key (expected one of default, services)`,
      `default: expected one of allow-all, mesh-authenticated, deny, got "maybe"`,
      `services.Catalog: expected a service name (a DNS label: a-z, 0-9, -)`,
      `services.pricing.default: expected one of allow-all, mesh-authenticated, deny, got "allow"`,
      `services.pricing.rules[0].from: required (the identities this rule allows; * for any verified one)`,
      `services.pricing.rules[1].extra: unknown key (expected one of from, paths, methods)`,
      `services.pricing.rules[1].from[0]: expected a SPIFFE ID pattern (spiffe://...) or *, got "storefront"`,
      `services.pricing.rules[1].from[1]: * may not stand in the trust domain, got "spiffe://*.local/x"`,
      `services.pricing.rules[1].from[2]: ** may only end a pattern, as /**, got "spiffe://td/a/**/b"`,
      `services.pricing.rules[1].paths[0]: expected a path starting with / (or *), got "x"`,
      `services.pricing.rules[1].paths[1]: * may only end a path pattern (a prefix), got "/a*b"`,
      `services.pricing.rules[1].paths[2]: a path pattern may not hold . or .. segments, got "/a/../b"`,
      `services.pricing.rules[1].paths[3]: expected visible ASCII without ?, #, % or \\ (paths are matched decoded), got "/q?x"`,
      `services.pricing.rules[1].methods[0]: expected an HTTP method (or *), got "GE T"`,
      `services.pricing.rules[2].from: expected 1 to 256 entries, got 0`,
      `services.pricing.rules[3]: expected an object with from (and optionally paths, methods)`
    ])
  })

  it("refuses what is not an object, and lists too long to be a policy", () => {
    expect(problems([])).toStrictEqual(["expected an object with default and/or services"])
    expect(problems(null)).toStrictEqual(["expected an object with default and/or services"])
    expect(problems({ services: { catalog: { rules: [{ from: Array.from({ length: 300 }, () => "*") }] } } })).toStrictEqual([
      "services.catalog.rules[0].from: expected 1 to 256 entries, got 300"
    ])
    expect(problems({ services: { catalog: { rules: [{ from: [`spiffe://${td}/${"a".repeat(3000)}`] }] } } })[0]).toMatch(/at most 2048 characters/)
  })
})
