// What the machine did while a bench ran, printed beside every bench's figures (args.ts's
// printSummary): on a shared 2-core VM the neighbours move the tails more than most changes do, so a
// figure without the machine's state over its run cannot be judged. From /proc/stat (Linux only):
// the share of the cores idle, stolen by the hypervisor, and spent in niced processes (other work
// told to keep out of the way); and whether the kernel's autogroup scheduling is on, which makes
// `nice` meaningless between sessions: each session (a terminal, a job runner's command) gets an
// equal share of the cores, so a `nice -n 19` build started from another session competes with the
// bench as an equal (found 2026-12-06: benches run beside "niced" work read tails 5-30x a quiet run's).
import { readFileSync } from "node:fs"

/** The first line of /proc/stat: jiffies per state over all CPUs since boot. */
export interface CpuTimes {
  readonly user: number
  readonly nice: number
  readonly system: number
  readonly idle: number
  readonly iowait: number
  readonly irq: number
  readonly softirq: number
  readonly steal: number
}

const FIELDS = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"] as const

/** Parses /proc/stat's text; undefined when its `cpu` line is missing or malformed. */
export const parseCpuTimes = (text: string): CpuTimes | undefined => {
  const line = text.split("\n", 1)[0] ?? ""
  const parts = line.trim().split(/\s+/)
  if (parts[0] !== "cpu" || parts.length < 9) return undefined
  const values = parts.slice(1, 9).map(Number)
  if (values.some((v) => !Number.isSafeInteger(v) || v < 0)) return undefined
  return Object.fromEntries(FIELDS.map((field, i) => [field, values[i]!])) as unknown as CpuTimes
}

const readText = (path: string): string | undefined => {
  try {
    return readFileSync(path, "latin1")
  } catch {
    return undefined
  }
}

export const readCpuTimes = (): CpuTimes | undefined => {
  const text = readText("/proc/stat")
  return text === undefined ? undefined : parseCpuTimes(text)
}

/** Whether autogroup scheduling is on (undefined: not Linux, or a kernel without it). */
export const autogroupEnabled = (): boolean | undefined => {
  const text = readText("/proc/sys/kernel/sched_autogroup_enabled")
  return text === undefined ? undefined : text.trim() === "1"
}

/** Shares of all CPU time between two readings, in percent (one decimal). */
export interface MachineShares {
  readonly idle_pct: number
  readonly steal_pct: number
  readonly niced_pct: number
}

const pct = (part: number, total: number): number => Math.round((1000 * part) / total) / 10

export const sharesBetween = (start: CpuTimes, end: CpuTimes): MachineShares | undefined => {
  const delta = (field: keyof CpuTimes): number => end[field] - start[field]
  const total = FIELDS.reduce((sum, field) => sum + delta(field), 0)
  if (!(total > 0)) return undefined
  return { idle_pct: pct(delta("idle") + delta("iowait"), total), steal_pct: pct(delta("steal"), total), niced_pct: pct(delta("nice"), total) }
}

/** The line printed before a bench's JSON. */
export const describeMachine = (shares: MachineShares | undefined, autogroup: boolean | undefined): string => {
  const over = shares === undefined
    ? "machine over the run: not known (no /proc/stat)"
    : `machine over the run (/proc/stat): ${shares.idle_pct} % idle, ${shares.steal_pct} % stolen by the hypervisor, ${shares.niced_pct} % in niced processes`
  return autogroup === true
    ? `${over}; sched_autogroup is on: niced work started from other sessions shares the cores equally with this bench (echo 0 > /proc/sys/kernel/sched_autogroup_enabled makes nice count)`
    : over
}

/** Taken when a bench's module graph loads (args.ts imports this): the run's start. */
const atStart = readCpuTimes()

/** The machine's shares since the bench started, and the autogroup setting now. */
export const machineSinceStart = (): { readonly shares: MachineShares | undefined; readonly autogroup: boolean | undefined } => {
  const now = readCpuTimes()
  return { shares: atStart === undefined || now === undefined ? undefined : sharesBetween(atStart, now), autogroup: autogroupEnabled() }
}
