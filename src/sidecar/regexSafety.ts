// Route path regexes (routes.ts: the routes file and HTTPRoutes) run per request against the
// app's path, which is hostile input. V8's engine backtracks: a group that repeats and holds its own
// repetition or alternatives, `(a+)+$` or `(a|aa)*$`, takes time exponential in the path's length
// (seconds for 30 characters), stalling the sidecar's event loop; back-references have no
// linear-time bound at all. Such patterns are refused when routes load: the star-height check RE2
// users rely on, done conservatively (a bounded `{n,m}` counts as repeating, any inner `?` as a
// quantifier), so a refused regex is rewritten, never run.
// Without nesting, repetitions in sequence that can match the same characters still multiply:
// `a*a*b` tries every split of a run of "a" at every start, n^3 steps (5 s on a 2048-character
// path). So the repetitions that can share characters are counted, an unanchored start as one
// more, and at most MAX_DEGREE are allowed (n^2: 14 ms at 2048). A repetition that must end at a
// character it cannot match (`[0-9]+/`, `[^/]+/`) or at the end (`.*$`) has one way to end: all of
// those together count once.

interface Group {
  /** The group holds a quantifier or an alternative, directly or in a nested group. */
  branches: boolean
}

/** The quantifier at `at` repeats more than once (`*`, `+`, `{n,}`, `{n,m}` with m > 1); 0 when none, else its length. */
const repeatingQuantifier = (source: string, at: number): number => {
  const c = source[at]
  if (c === "*" || c === "+") return 1
  if (c !== "{") return 0
  const match = /^\{(\d+)(,(\d*))?\}/.exec(source.slice(at, at + 24))
  if (match === null) return 0
  const max = match[2] === undefined ? Number(match[1]) : match[3] === "" ? Infinity : Number(match[3])
  return max > 1 ? match[0].length : 0
}

/** Repetitions that can share characters, an unanchored start counting as one: the backtracking is at most n^MAX_DEGREE. */
const MAX_DEGREE = 2

/** The literal character at `at` (a plain one, or escaped punctuation); undefined for anything else. */
const literalAt = (source: string, at: number): string | undefined => {
  const c = source[at]
  if (c === undefined) return undefined
  if (c === "\\") return /^[^0-9A-Za-z]$/.test(source[at + 1] ?? "") ? source[at + 1] : undefined
  return "^$.|?*+()[]{}".includes(c) ? undefined : c
}

/** The degree of `source`'s backtracking: its repetitions that can share characters, plus one unanchored. Assumes it compiles and has no nested repetition. */
const polynomialDegree = (source: string): number => {
  let depth = 0
  let topLevelBranch = false
  let shared = 0
  let ending = 0
  /** The last atom's source; undefined for a group or an escape whose characters are not known here. */
  let atom: string | undefined
  for (let i = 0; i < source.length; i++) {
    const c = source[i]!
    const start = i
    if (c === "\\") {
      i++
      atom = /^[dDwWsS]$/.test(source[i] ?? "") || /^[^0-9A-Za-z]$/.test(source[i] ?? "") ? source.slice(start, i + 1) : undefined
      continue
    }
    if (c === "[") {
      for (i++; i < source.length && source[i] !== "]"; i++) if (source[i] === "\\") i++
      atom = source.slice(start, i + 1)
      continue
    }
    if (c === "(") {
      depth++
      if (source[i + 1] === "?") i += source[i + 2] === "<" && source[i + 3] !== "=" && source[i + 3] !== "!" ? source.indexOf(">", i) - i : 2
      atom = undefined
      continue
    }
    if (c === ")") {
      depth--
      atom = undefined
      continue
    }
    if (c === "|" && depth === 0) topLevelBranch = true
    const length = repeatingQuantifier(source, i)
    if (length === 0) {
      atom = c === "?" || c === "*" || c === "+" || c === "{" || c === "|" || c === "^" || c === "$" ? undefined : c
      continue
    }
    i += length - 1
    if (source[i + 1] === "?") i++
    const next = literalAt(source, i + 1)
    const atEnd = (source[i + 1] === "$" || i + 1 === source.length) && depth === 0
    if (atEnd || (atom !== undefined && next !== undefined && !new RegExp(`^(?:${atom})$`).test(next))) ending = 1
    else shared++
    atom = undefined
  }
  const anchored = source.startsWith("^") && !topLevelBranch
  return (anchored ? 0 : 1) + shared + ending
}

/** Why `source` could backtrack without bound, or undefined. Assumes `source` compiles. */
export const backtrackProblem = (source: string): string | undefined => {
  const stack: Array<Group> = [{ branches: false }]
  for (let i = 0; i < source.length; i++) {
    const c = source[i]!
    const current = stack[stack.length - 1]!
    if (c === "\\") {
      const next = source[i + 1] ?? ""
      if ((next >= "1" && next <= "9") || (next === "k" && source[i + 2] === "<")) return "Expected a regular expression without back-references"
      i++
    } else if (c === "[") {
      // A character class: one character whatever it holds.
      for (i++; i < source.length && source[i] !== "]"; i++) if (source[i] === "\\") i++
    } else if (c === "(") {
      stack.push({ branches: false })
      // `(?:`, `(?=`, `(?!`, `(?<=`, `(?<!`, `(?<name>`: the `?` is syntax, not a quantifier.
      if (source[i + 1] === "?") {
        i++
        if (source[i + 1] === "<" && source[i + 2] !== "=" && source[i + 2] !== "!") i = source.indexOf(">", i)
        else i++
      }
    } else if (c === ")") {
      const group = stack.pop()!
      const parent = stack[stack.length - 1]!
      const repeats = repeatingQuantifier(source, i + 1)
      if (repeats > 0 && group.branches) return "Expected a regular expression without a repeated group that itself repeats or branches (it can backtrack without bound on a hostile path)"
      parent.branches ||= group.branches
    } else if (c === "|" || c === "*" || c === "+" || c === "?" || (c === "{" && /^\{\d+(,\d*)?\}/.test(source.slice(i, i + 24)))) {
      current.branches = true
    }
  }
  const degree = polynomialDegree(source)
  return degree <= MAX_DEGREE
    ? undefined
    : `Expected a regular expression with at most ${MAX_DEGREE} repetitions that can share characters, an unanchored start counting as one (got ${degree}: it backtracks as the path's length to that power)`
}
