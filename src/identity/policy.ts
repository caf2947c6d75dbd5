// Authorization policy: which verified identities may call this sidecar's service, on which paths
// and with which methods. The inbound side asks `decide` before a request reaches the app
// (src/sidecar/authorization.ts); policyFile.ts reads the document from a file (a ConfigMap in
// Kubernetes) and re-reads it on change. Pure.
//
// The document (JSON or YAML):
//   default: deny                      # services the file does not name (optional, default deny)
//   services:
//     catalog:
//       default: deny                  # allow-all | mesh-authenticated | deny (optional, default deny)
//       rules:                         # each rule allows; anything no rule allows gets the default
//         - from: [spiffe://iip-mesh.local/ns/shop/sa/storefront]   # exact, `*` in a segment, `/**`, or `*`
//           paths: [/products, /products/*]                          # exact, or a prefix ending in `*` (optional: any)
//           methods: [GET, HEAD]                                     # optional: any
// `mesh-authenticated` allows any verified identity of the mesh's trust domain; `from` patterns
// only ever match verified identities (a plain-TCP caller has none and gets the default).
//
// Paths are matched percent-decoded, without the query; a path whose decoded form holds a dot
// segment (`..;x` too, a servlet container's `..`) or a backslash (what an app may normalise into
// another path) matches only a rule without paths (or with `*`): a prefix rule never lets
// `/public/..%2Fadmin` through.
//
// Compiled once per document; `decide` allocates nothing for a request without `%` in its path
// and without a query, and only the path without the query otherwise.
import * as Data from "effect/Data"
import * as Result from "effect/Result"
import { unescape } from "../protocol/requestPath.ts"
import { parseSpiffeId, starPatternMatcher } from "./spiffe.ts"

export const policyDefaults = ["allow-all", "mesh-authenticated", "deny"] as const
export type PolicyDefault = (typeof policyDefaults)[number]

export interface PolicyRule {
  readonly from: ReadonlyArray<string>
  readonly paths?: ReadonlyArray<string>
  readonly methods?: ReadonlyArray<string>
}

export interface ServicePolicy {
  readonly default?: PolicyDefault
  readonly rules?: ReadonlyArray<PolicyRule>
}

export interface PolicyDocument {
  readonly default?: PolicyDefault
  readonly services?: Readonly<Record<string, ServicePolicy>>
}

/** A document that is not a policy: every problem, each with where it is (`services.catalog.rules[0].from[1]`). */
export class PolicyInvalid extends Data.TaggedError("PolicyInvalid")<{ readonly message: string; readonly problems: ReadonlyArray<string> }> {}

/** Limits that keep a document's cost bounded whatever it holds. */
const MAX_SERVICES = 1000
const MAX_RULES = 1000
const MAX_ENTRIES = 256
const MAX_TEXT = 2048
/** Problems reported at most: past them validation stops (the document is refused either way). */
const MAX_PROBLEMS = 100

/** Why a request was denied (a constant: no allocation per request), or "allow". */
export type Verdict = "allow" | "unauthenticated" | "not-in-trust-domain" | "no-rule-matched" | "default-deny"

export interface CompiledPolicy {
  /** Everything is allowed: the caller may skip `decide` (and the path parsing it would do). */
  readonly allowsAll: boolean
  /** Where this policy came from, for logs ("allow-all (no policy file)", "services.catalog"). */
  readonly source: string
  /** `identity` is the caller's verified SPIFFE ID (undefined: none); `target` the request's path and query as sent. */
  decide(identity: string | undefined, method: string, target: string): Verdict
}

/** What applies when no policy file is configured: everything is allowed. */
export const allowAllPolicy: CompiledPolicy = { allowsAll: true, source: "allow-all (no policy file)", decide: () => "allow" }

// ---------------------------------------------------------------------------------------------
// Validation: the unknown a parser gave into a PolicyDocument, every problem reported.

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null && !Array.isArray(value)

const tokenPattern = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/

/** A `from` pattern: `*`, or a SPIFFE ID with `*` inside segments and optionally a trailing `/**`. */
const identityPatternProblem = (pattern: string): string | undefined => {
  if (pattern === "*") return undefined
  if (!pattern.startsWith("spiffe://")) return "expected a SPIFFE ID pattern (spiffe://...) or *"
  const body = pattern.endsWith("/**") ? pattern.slice(0, -3) : pattern
  if (body.includes("**")) return "** may only end a pattern, as /**"
  if (body.slice("spiffe://".length).split("/")[0]!.includes("*")) return "* may not stand in the trust domain"
  return parseSpiffeId(body.replaceAll("*", "x")) === undefined ? "not a valid SPIFFE ID pattern" : undefined
}

/** A path pattern: `*`, or an origin-form path of visible ASCII, no `?`, `#`, `%`, `\` or dot segment, `*` only at its end. */
const pathPatternProblem = (pattern: string): string | undefined => {
  if (pattern === "*") return undefined
  if (!pattern.startsWith("/")) return "expected a path starting with / (or *)"
  const star = pattern.indexOf("*")
  if (star !== -1 && star !== pattern.length - 1) return "* may only end a path pattern (a prefix)"
  if (!/^[\x21-\x7e]+$/.test(pattern) || /[?#%\\]/.test(pattern)) return "expected visible ASCII without ?, #, % or \\ (paths are matched decoded)"
  if (hasDotSegment(pattern.endsWith("*") ? pattern.slice(0, -1) : pattern)) return "a path pattern may not hold . or .. segments"
  return undefined
}

const stringList = (value: unknown, where: string, problems: Array<string>, check: (entry: string) => string | undefined): Array<string> | undefined => {
  if (!Array.isArray(value)) {
    problems.push(`${where}: expected a list`)
    return undefined
  }
  if (value.length === 0 || value.length > MAX_ENTRIES) {
    problems.push(`${where}: expected 1 to ${MAX_ENTRIES} entries, got ${value.length}`)
    return undefined
  }
  const out: Array<string> = []
  for (let i = 0; i < value.length && problems.length < MAX_PROBLEMS; i++) {
    const entry: unknown = value[i]
    if (typeof entry !== "string" || entry.length === 0 || entry.length > MAX_TEXT) {
      problems.push(`${where}[${i}]: expected a non-empty string of at most ${MAX_TEXT} characters`)
      continue
    }
    const problem = check(entry)
    if (problem !== undefined) problems.push(`${where}[${i}]: ${problem}, got ${JSON.stringify(entry.slice(0, 200))}`)
    else out.push(entry)
  }
  return out
}

const unknownKeys = (record: Record<string, unknown>, known: ReadonlyArray<string>, where: string, problems: Array<string>): void => {
  for (const key of Object.keys(record)) {
    if (!known.includes(key)) problems.push(`${where}${key}: unknown key (expected one of ${known.join(", ")})`)
  }
}

const defaultOf = (value: unknown, where: string, problems: Array<string>): PolicyDefault | undefined => {
  if (value === undefined) return undefined
  if (typeof value === "string" && (policyDefaults as ReadonlyArray<string>).includes(value)) return value as PolicyDefault
  problems.push(`${where}: expected one of ${policyDefaults.join(", ")}, got ${JSON.stringify(value)}`)
  return undefined
}

const ruleOf = (value: unknown, where: string, problems: Array<string>): PolicyRule | undefined => {
  if (!isRecord(value)) {
    problems.push(`${where}: expected an object with from (and optionally paths, methods)`)
    return undefined
  }
  unknownKeys(value, ["from", "paths", "methods"], `${where}.`, problems)
  const from = value.from === undefined
    ? (problems.push(`${where}.from: required (the identities this rule allows; * for any verified one)`), undefined)
    : stringList(value.from, `${where}.from`, problems, identityPatternProblem)
  const paths = value.paths === undefined ? undefined : stringList(value.paths, `${where}.paths`, problems, pathPatternProblem)
  const methods = value.methods === undefined
    ? undefined
    : stringList(value.methods, `${where}.methods`, problems, (m) => (m === "*" || tokenPattern.test(m) ? undefined : "expected an HTTP method (or *)"))
  if (from === undefined) return undefined
  return { from, ...(paths === undefined ? {} : { paths }), ...(methods === undefined ? {} : { methods }) }
}

const servicePolicyOf = (value: unknown, where: string, problems: Array<string>): ServicePolicy => {
  if (!isRecord(value)) {
    problems.push(`${where}: expected an object with default and/or rules`)
    return {}
  }
  unknownKeys(value, ["default", "rules"], `${where}.`, problems)
  const fallback = defaultOf(value.default, `${where}.default`, problems)
  let rules: Array<PolicyRule> | undefined
  if (value.rules !== undefined) {
    if (!Array.isArray(value.rules) || value.rules.length > MAX_RULES) {
      problems.push(`${where}.rules: expected a list of at most ${MAX_RULES} rules`)
    } else {
      rules = []
      for (let i = 0; i < value.rules.length && problems.length < MAX_PROBLEMS; i++) {
        const parsed = ruleOf(value.rules[i], `${where}.rules[${i}]`, problems)
        if (parsed !== undefined) rules.push(parsed)
      }
    }
  }
  return { ...(fallback === undefined ? {} : { default: fallback }), ...(rules === undefined ? {} : { rules }) }
}

const servicePattern = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/

/** Checks what a parser read (JSON.parse, yaml) and returns it as a PolicyDocument, or every problem. */
export const parsePolicyDocument = (value: unknown): Result.Result<PolicyDocument, PolicyInvalid> => {
  const problems: Array<string> = []
  let document: PolicyDocument = {}
  if (!isRecord(value)) {
    problems.push("expected an object with default and/or services")
  } else {
    unknownKeys(value, ["default", "services"], "", problems)
    const fallback = defaultOf(value.default, "default", problems)
    const services: Record<string, ServicePolicy> = {}
    if (value.services !== undefined) {
      if (!isRecord(value.services) || Object.keys(value.services).length > MAX_SERVICES) {
        problems.push(`services: expected an object of at most ${MAX_SERVICES} services, keyed by service name`)
      } else {
        for (const [name, policy] of Object.entries(value.services)) {
          if (problems.length >= MAX_PROBLEMS) break
          if (!servicePattern.test(name)) problems.push(`services.${name.slice(0, 100)}: expected a service name (a DNS label: a-z, 0-9, -)`)
          else services[name] = servicePolicyOf(policy, `services.${name}`, problems)
        }
      }
    }
    document = { ...(fallback === undefined ? {} : { default: fallback }), services }
  }
  if (problems.length > 0) {
    const more = problems.length >= MAX_PROBLEMS ? `\n  (stopped at ${MAX_PROBLEMS} problems)` : ""
    return Result.fail(new PolicyInvalid({ message: `not a valid authorization policy:\n  ${problems.join("\n  ")}${more}`, problems }))
  }
  return Result.succeed(document)
}

// ---------------------------------------------------------------------------------------------
// Compilation: one service's part of a document into matchers built once.

type Matcher = (text: string) => boolean

/**
 * An identity pattern as a matcher, built once: the exact ID, or a pattern with `*` standing for
 * any run of characters inside one path segment (`spiffe://td/ns/shop/sa/*`) and a trailing `/**`
 * for any number of segments below (`spiffe://td/ns/shop/**`). A lone `*` matches every identity.
 */
export const identityMatcher = (pattern: string): Matcher => {
  if (pattern === "*") return () => true
  if (pattern.endsWith("/**")) {
    const prefix = pattern.slice(0, -2)
    return (id) => id.length > prefix.length && id.startsWith(prefix)
  }
  if (!pattern.includes("*")) return (id) => id === pattern
  return starPatternMatcher(pattern)
}

/** Any of the patterns: exact ones in one Set lookup, the rest in turn. */
const anyIdentity = (patterns: ReadonlyArray<string>): Matcher => {
  if (patterns.includes("*")) return () => true
  const exact = new Set(patterns.filter((p) => !p.includes("*")))
  const others = patterns.filter((p) => p.includes("*")).map(identityMatcher)
  if (others.length === 0) return (id) => exact.has(id)
  return (id) => exact.has(id) || others.some((match) => match(id))
}

const anyPath = (patterns: ReadonlyArray<string> | undefined): Matcher | undefined => {
  if (patterns === undefined || patterns.includes("*")) return undefined
  const exact = new Set(patterns.filter((p) => !p.endsWith("*")))
  const prefixes = patterns.filter((p) => p.endsWith("*")).map((p) => p.slice(0, -1))
  return (path) => {
    if (exact.has(path)) return true
    for (const prefix of prefixes) if (path.startsWith(prefix)) return true
    return false
  }
}

/** Whether `c` (a char code, NaN past the end) ends a segment's name: `/`, the end, or `;`, where a segment's parameters begin. */
const endsSegmentName = (c: number): boolean => Number.isNaN(c) || c === 0x2f || c === 0x3b

/**
 * A `.` or `..` segment in a path (`/a/./b`, `/a/..`), its parameters included (`/a/..;x/b`): a
 * servlet container drops a segment's `;` parameters before it resolves dot segments.
 */
function hasDotSegment(path: string): boolean {
  for (let at = path.indexOf("/."); at !== -1; at = path.indexOf("/.", at + 1)) {
    const next = path.charCodeAt(at + 2)
    if (endsSegmentName(next)) return true
    if (next === 0x2e && endsSegmentName(path.charCodeAt(at + 3))) return true
  }
  return false
}

/** The path a rule is matched against: decoded, query removed; undefined when it is malformed or ambiguous (see the top). */
export const matchablePath = (target: string): string | undefined => {
  const q = target.indexOf("?")
  let path = q === -1 ? target : target.slice(0, q)
  if (path.indexOf("%") !== -1) {
    const decoded = unescape(path, false)
    if (decoded === undefined) return undefined
    path = decoded
  }
  if (path.indexOf("\\") !== -1 || hasDotSegment(path)) return undefined
  return path
}

interface CompiledRule {
  readonly from: Matcher
  /** undefined: any path. */
  readonly path: Matcher | undefined
  /** undefined: any method. */
  readonly methods: ReadonlySet<string> | undefined
}

const compileRule = (rule: PolicyRule): CompiledRule => ({
  from: anyIdentity(rule.from),
  path: anyPath(rule.paths),
  methods: rule.methods === undefined || rule.methods.includes("*") ? undefined : new Set(rule.methods.map((m) => m.toUpperCase()))
})

/**
 * The policy for `service` in `document`: its own section, or the document's default for a service
 * it does not name. `trustDomain` is what `mesh-authenticated` admits.
 */
export const compilePolicy = (document: PolicyDocument, service: string, trustDomain: string): CompiledPolicy => {
  const own = document.services !== undefined && Object.hasOwn(document.services, service) ? document.services[service] : undefined
  const fallback: PolicyDefault = own === undefined ? (document.default ?? "deny") : (own.default ?? "deny")
  const rules = (own?.rules ?? []).map(compileRule)
  const source = own === undefined ? `default (${fallback}; the policy names no ${service})` : `services.${service}`
  if (fallback === "allow-all") return { allowsAll: true, source, decide: () => "allow" }
  const domainId = `spiffe://${trustDomain}`
  const domainPrefix = `${domainId}/`
  const inDomain = (id: string) => id === domainId || id.startsWith(domainPrefix)
  return {
    allowsAll: false,
    source,
    decide: (identity, method, target) => {
      if (identity !== undefined && rules.length > 0) {
        let path: string | undefined | null = null
        for (const rule of rules) {
          if (!rule.from(identity)) continue
          if (rule.methods !== undefined && !rule.methods.has(method)) continue
          if (rule.path !== undefined) {
            if (path === null) path = matchablePath(target)
            if (path === undefined || !rule.path(path)) continue
          }
          return "allow"
        }
      }
      if (fallback === "deny") return rules.length === 0 ? "default-deny" : identity === undefined ? "unauthenticated" : "no-rule-matched"
      if (identity === undefined) return "unauthenticated"
      return inDomain(identity) ? "allow" : "not-in-trust-domain"
    }
  }
}
