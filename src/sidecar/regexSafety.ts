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
// more: each is a free choice (where to stop, where to start), and the choices multiply. At most
// MAX_FREE_CHOICES is allowed: two are n^2, milliseconds a request on the 2048-character path the
// outbound listener takes (`^a*a*b` 5.6 ms on "a", `^/(.*)/(.*)/items$` 5.8 ms on "/", `=.*;` 6.0 ms
// on "="; node 24, load 17), CPU an app's caller controls; `[^/]*` for `.*` before a `/`, or a `^`,
// is what to write instead.
// An unanchored pattern that begins with a repeated character, `.*\.json$` or `[^/]*/download$`,
// would be degree 2 by its start alone (as written: 15 ms at 2048, 510 ms at 16,384): for a test (a
// search) that start adds nothing, so `searchSource` drops it and the rest is what is checked and
// run (`\.json$`: linear). A repetition that must end at a
// character it cannot match (`[0-9]+/`, `([^/]+)/`: past the groups it ends) or at the end (`.*$`)
// has one way to end: no choice of its own. After a choice, though (an unanchored start, a shared
// repetition), its scan from one choice runs over the next choices' positions when it can match
// the character before it (`x[a-z]+/` on "xxx...": 5.1 ms at 2048; `^a*a*b`), so it counts then; a
// literal it cannot match before it (`/orders/[0-9]+`, `/v[0-9]+`) keeps the scans apart, and a
// character not known here counts. A character that may be absent (`/?`) is no
// such end; a fixed count (`[a-z]{2}`) is no repetition here: it has no choice to backtrack into.

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

/** Free choices (an unanchored start, a repetition that can share characters with what follows it): the backtracking is at most n^(this + 1). */
const MAX_FREE_CHOICES = 1

/** The length of the escape at `at` (a backslash): `\xHH` and `\uHHHH` are one character written in several. */
const escapeLength = (source: string, at: number): number =>
  /^\\x[0-9A-Fa-f]{2}/.test(source.slice(at, at + 4)) ? 4 : /^\\u[0-9A-Fa-f]{4}/.test(source.slice(at, at + 6)) ? 6 : 2

/** The character the escape at `at` stands for when it is one known here (punctuation, `\xHH`, `\uHHHH`), else undefined. */
const escapedCharacter = (source: string, at: number): string | undefined => {
  const length = escapeLength(source, at)
  if (length > 2) return String.fromCharCode(parseInt(source.slice(at + 2, at + length), 16))
  return /^[^0-9A-Za-z]$/.test(source[at + 1] ?? "") ? source[at + 1] : undefined
}

/**
 * The literal character at `at` (a plain one, or escaped punctuation or code) that must be there;
 * undefined for anything else, and for one that may be absent (`/?`, `-*`, `x{0,2}`: what follows
 * it can come at once).
 */
const literalAt = (source: string, at: number): string | undefined => {
  const c = source[at]
  if (c === undefined) return undefined
  const literal = c === "\\" ? escapedCharacter(source, at) : "^$.|?*+()[]{}".includes(c) ? undefined : c
  const after = at + (c === "\\" ? escapeLength(source, at) : 1)
  return source[after] === "?" || source[after] === "*" || /^\{0+(?:,\d*)?\}/.test(source.slice(after, after + 24)) ? undefined : literal
}

/** A `{n}` or `{n,n}`: it repeats, but always as many times (no choice to backtrack into). */
const isFixedCount = (quantifier: string): boolean => {
  const match = /^\{(\d+)(?:,(\d+))?\}$/.exec(quantifier)
  return match !== null && (match[2] === undefined || Number(match[2]) === Number(match[1]))
}

/** The free choices of `source`'s backtracking (its repetitions that can share characters, its start when unanchored, see the top). Assumes it compiles and has no nested repetition. */
const freeChoices = (source: string): number => {
  /** Per open group: a lookaround (what follows it does not follow its content). */
  const groups: Array<boolean> = []
  // `(?i:` makes its letters match either case: a literal is compared as the engine may.
  const flags = /\(\?[ms]*i[ms]*(?:-[ms]*)?:/.test(source) ? "i" : ""
  let topLevelBranch = false
  let shared = 0
  /** The repetitions with one way to end that can scan over another choice's positions (see the top). */
  const ending: Array<{ readonly overlaps: boolean; readonly afterChoice: boolean }> = []
  /** The last atom's source; undefined for a group or an escape whose characters are not known here. */
  let atom: string | undefined
  /** The atom before it. */
  let previous: string | undefined
  for (let i = 0; i < source.length; i++) {
    const c = source[i]!
    const start = i
    if (c === "\\") {
      const length = escapeLength(source, i)
      i += length - 1
      previous = atom
      atom = length > 2 || /^[dDwWsS]$/.test(source[i] ?? "") || /^[^0-9A-Za-z]$/.test(source[i] ?? "") ? source.slice(start, i + 1) : undefined
      continue
    }
    if (c === "[") {
      for (i++; i < source.length && source[i] !== "]"; i++) if (source[i] === "\\") i++
      previous = atom
      atom = source.slice(start, i + 1)
      continue
    }
    if (c === "(") {
      groups.push(source[i + 1] === "?" && (source[i + 2] === "=" || source[i + 2] === "!" || (source[i + 2] === "<" && (source[i + 3] === "=" || source[i + 3] === "!"))))
      if (source[i + 1] === "?") i += source[i + 2] === "<" && source[i + 3] !== "=" && source[i + 3] !== "!" ? source.indexOf(">", i) - i : 2
      atom = undefined
      continue
    }
    if (c === ")") {
      groups.pop()
      atom = undefined
      continue
    }
    if (c === "|" && groups.length === 0) topLevelBranch = true
    const length = repeatingQuantifier(source, i)
    const fixed = length > 0 && isFixedCount(source.slice(i, i + length))
    if (length === 0 || fixed) {
      previous = atom
      atom = fixed || c === "?" || c === "*" || c === "+" || c === "{" || c === "|" || c === "^" || c === "$" ? undefined : c
      i += Math.max(length - 1, 0)
      if (fixed && source[i + 1] === "?") i++
      continue
    }
    i += length - 1
    if (source[i + 1] === "?") i++
    // What follows the groups this repetition ends (each optional or not) follows the repetition.
    let after = i + 1
    let open = groups.length
    while (source[after] === ")" && open > 0 && !groups[open - 1]!) {
      open--
      after++
      if (source[after] === "?") after += source[after + 1] === "?" ? 2 : 1
    }
    const next = literalAt(source, after)
    const atEnd = (source[after] === "$" || after === source.length) && open === 0
    if (atEnd || (atom !== undefined && next !== undefined && !new RegExp(`^(?:${atom})$`, flags).test(next))) {
      // `.*$` never scans back: a path holds no line terminator (llhttp and nghttp2 refuse CR and LF, and
      // a header read as latin1 has no U+2028), so it reaches the end at once.
      const before = previous === undefined ? undefined : literalAt(previous, 0)
      const overlaps = !(atEnd && atom === ".") && (atom === undefined || before === undefined || new RegExp(`^(?:${atom})$`, flags).test(before))
      ending.push({ overlaps, afterChoice: shared > 0 })
    } else shared++
    atom = undefined
  }
  const anchored = source.startsWith("^") && !topLevelBranch
  return (anchored ? 0 : 1) + shared + ending.filter((repetition) => repetition.overlaps && (repetition.afterChoice || !anchored)).length
}

/** The single character at the start of `source` (`.`, `a`, `\d`, `\/`, `\x2f`, `[^/]`); its length, or 0 for anything else. */
const leadingCharacter = (source: string): number => {
  const c = source[0]
  if (c === "\\") return escapeLength(source, 0) > 2 ? escapeLength(source, 0) : /^[dDwWsS]$|^[^0-9A-Za-z]$/.test(source[1] ?? "") ? 2 : 0
  if (c === "[") {
    let i = 1
    for (; i < source.length && source[i] !== "]"; i++) if (source[i] === "\\") i++
    return i < source.length ? i + 1 : 0
  }
  return c === undefined || "^$|?*+(){}]".includes(c) ? 0 : 1
}

/**
 * A source that a test (a search) matches exactly where `source` does, without the repeated
 * character it begins with: `C*X` (or `C*?X`) finds a match wherever `X` matches, so it is `X`;
 * `C+X` is `CX`. Whether X matches at a position depends only on the path, never on how the search
 * got there (no back-references: refused), so this holds for every X, line terminators included.
 * Anchored sources, and any other start, are returned as they are.
 */
export const searchSource = (source: string): string => {
  let rest = source
  for (;;) {
    const atom = leadingCharacter(rest)
    const quantifier = rest[atom]
    if (atom === 0 || (quantifier !== "*" && quantifier !== "+")) return rest
    const lazy = rest[atom + 1] === "?" ? 1 : 0
    if (quantifier === "+") return rest.slice(0, atom) + rest.slice(atom + 1 + lazy)
    rest = rest.slice(atom + 1 + lazy)
  }
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
  const choices = freeChoices(source)
  return choices <= MAX_FREE_CHOICES
    ? undefined
    : `Expected a regular expression with at most 2 repetitions that can share characters, an unanchored start counting as one, and at most ${MAX_FREE_CHOICES} free choice among them: a start anywhere, or a repetition followed by what it can match (got ${choices}: it backtracks as the path's length to the power ${choices + 1}; [^/]* for .* before a /, or a ^, is linear)`
}
