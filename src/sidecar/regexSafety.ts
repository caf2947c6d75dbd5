// Route path regexes (routes.ts: the routes file and HTTPRoutes) run per request against the
// app's path, which is hostile input. V8's engine backtracks: a group that repeats and holds its own
// repetition or alternatives, `(a+)+$` or `(a|aa)*$`, takes time exponential in the path's length
// (seconds for 30 characters), stalling the sidecar's event loop; back-references have no
// linear-time bound at all. Such patterns are refused when routes load: the star-height check RE2
// users rely on, done conservatively (a bounded `{n,m}` counts as repeating, any inner `?` as a
// quantifier), so a refused regex is rewritten, never run.

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
  return undefined
}
