// What the benches share: reading `--name value` flags and `--quick`, and printing the JSON last line
// (with what the machine did over the run: machine.ts).
import { describeMachine, machineSinceStart } from "./machine.ts"

export const benchArgs = (args: ReadonlyArray<string>) => {
  const value = (flag: string): string | undefined => {
    const i = args.indexOf(flag)
    if (i === -1) return undefined
    const v = args[i + 1]
    if (v === undefined) throw new Error(`${flag} needs a value`)
    return v
  }
  const number = (flag: string, fallback: number): number => {
    const v = value(flag)
    if (v === undefined) return fallback
    const n = Number(v)
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${flag}: not a positive number: ${v}`)
    return n
  }
  return { quick: args.includes("--quick"), value, number }
}

/**
 * Prints a bench's last line: one JSON object; a figure that could not be measured shows as null.
 * Before it, one line on the machine over the run, which the JSON also carries (`machine`).
 */
export const printSummary = (summary: object): void => {
  const { shares, autogroup } = machineSinceStart()
  process.stdout.write(`${describeMachine(shares, autogroup)}\n`)
  const withMachine = { ...summary, machine: { ...(shares ?? { idle_pct: null, steal_pct: null, niced_pct: null }), autogroup: autogroup ?? null } }
  process.stdout.write(`${JSON.stringify(withMachine, (_key, value: unknown) => (typeof value === "number" && !Number.isFinite(value) ? null : value))}\n`)
}
