// The sidecar's command line (`iip-mesh sidecar --name VALUE ...`) split into flags, for
// loadSidecarConfig.ts: a stray argument is kept under a name that does not show a value it may hold.

/**
 * Where a stray argument is, for its problem: up to its "=" (`-admin-token=...`), or a word by its
 * place and the flag before it (`argument 2 (after "-admin-token")`), never its text: it may be the
 * value of a flag written wrong, a secret.
 */
const strayName = (argv: ReadonlyArray<string>, at: number): string => {
  const nameOf = (arg: string): string => (arg.includes("=") ? `${arg.slice(0, arg.indexOf("="))}=...` : arg).slice(0, 80)
  if (argv[at]!.startsWith("-")) return nameOf(argv[at]!)
  const flag = argv.slice(0, at).findLast((arg) => arg.startsWith("-"))
  return `argument ${at + 1}${flag === undefined ? "" : ` (after ${JSON.stringify(nameOf(flag).replace(/=\.\.\.$/, ""))})`}`
}

/**
 * Splits argv into flags; `--name value`, `--name=value`, and bare boolean `--access-log`. An
 * argument that is none of these (`-service`, a stray word) is kept under its strayName, for the
 * loader to report.
 */
export const parseFlags = (argv: ReadonlyArray<string>): Map<string, Array<string>> => {
  const flags = new Map<string, Array<string>>()
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (!arg.startsWith("--")) {
      flags.set(strayName(argv, i), [])
      continue
    }
    const eq = arg.indexOf("=")
    const name = eq === -1 ? arg : arg.slice(0, eq)
    const next = argv[i + 1]
    const value = eq !== -1 ? arg.slice(eq + 1) : next !== undefined && !next.startsWith("--") ? (i++, next) : ""
    flags.set(name, [...(flags.get(name) ?? []), value])
  }
  return flags
}
