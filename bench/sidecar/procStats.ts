// /proc readings for the sidecar bench (Linux; NaN elsewhere): a process's RSS, and the CPU time and
// system calls it has used so far, read before and after a run to get them per request.
import { readFileSync } from "node:fs"

/** Clock ticks per second of /proc/<pid>/stat's times (USER_HZ: 100 on every Linux we run on). */
const TICKS = 100

/**
 * The anonymous part of a process's RSS (RssAnon: its heaps, V8's and malloc's), MB. The rest is
 * mostly file pages of the node binary that the process touched: ~45-52 MB for a sidecar, shared
 * by every node process on the host, and two start-ups apart by ~5 MB depending on how those
 * pages sit in the page cache (the sidecars' bimodal idle RSS).
 */
export const rssAnonMb = (pid: number): number => {
  try {
    const match = /RssAnon:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))
    return match === null ? NaN : Number(match[1]) / 1024
  } catch {
    return NaN
  }
}

export const rssMb = (pid: number): number => {
  try {
    const match = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))
    return match === null ? NaN : Number(match[1]) / 1024
  } catch {
    return NaN
  }
}

/** The cores a process may run on (/proc's Cpus_allowed_list, "0-1"), or "?" off Linux. */
export const coresAllowed = (pid: number): string => {
  try {
    return /Cpus_allowed_list:\s+(\S+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? "?"
  } catch {
    return "?"
  }
}

/** The node options a process runs with: its command line's arguments before the script (/proc's cmdline), or undefined off Linux. */
export const nodeFlagsOf = (pid: number): ReadonlyArray<string> | undefined => {
  try {
    const args = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").slice(1)
    const script = args.findIndex((arg) => !arg.startsWith("-"))
    return script === -1 ? args : args.slice(0, script)
  } catch {
    return undefined
  }
}

/**
 * What a process has used so far: CPU seconds (all its threads; `mainCpu` its main thread's, the
 * rest is V8's helper threads: collector and compiler), and read and write system calls (sockets included).
 */
export interface Usage {
  readonly cpu: number
  readonly mainCpu: number
  readonly reads: number
  readonly writes: number
}

export const NO_USAGE: Usage = { cpu: NaN, mainCpu: NaN, reads: NaN, writes: NaN }

/** What was used between two readings. */
export const usageDelta = (to: Usage, from: Usage): Usage => ({
  cpu: to.cpu - from.cpu,
  mainCpu: to.mainCpu - from.mainCpu,
  reads: to.reads - from.reads,
  writes: to.writes - from.writes
})

/** The fields of /proc/<pid>/stat after the command name (which may hold spaces): [0] is the state. */
const statFields = (pid: number | "self", thread = ""): ReadonlyArray<string> => {
  const stat = readFileSync(`/proc/${pid}/${thread}stat`, "utf8")
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")
}

/** User + system CPU (utime, stime) of the process and of its main thread, and syscr/syscw of /proc/<pid>/io. */
export const usageOf = (pid: number): Usage => {
  try {
    const fields = statFields(pid)
    const main = statFields(pid, `task/${pid}/`)
    const io = readFileSync(`/proc/${pid}/io`, "utf8")
    const count = (name: string) => Number(new RegExp(`^${name}: (\\d+)$`, "m").exec(io)?.[1] ?? NaN)
    return {
      cpu: (Number(fields[11]) + Number(fields[12])) / TICKS,
      mainCpu: (Number(main[11]) + Number(main[12])) / TICKS,
      reads: count("syscr"),
      writes: count("syscw")
    }
  } catch {
    return NO_USAGE
  }
}

/**
 * Seconds the process's main thread has spent runnable but waiting for a core, on a run queue
 * (/proc/<pid>/schedstat's second field, ns), or NaN where there is none (not Linux, no schedstats).
 */
export const runQueueWaitOf = (pid: number): number => {
  try {
    return Number(readFileSync(`/proc/${pid}/schedstat`, "utf8").split(" ")[1]) / 1e9
  } catch {
    return NaN
  }
}

/**
 * CPU seconds of this process's children that have exited and been waited for (cutime + cstime):
 * read before and after a wrk run, the difference is wrk's CPU (the bench's other children, the
 * app and the proxies, only exit at its end).
 */
export const reapedChildrenCpu = (): number => {
  try {
    const fields = statFields("self")
    return (Number(fields[13]) + Number(fields[14])) / TICKS
  } catch {
    return NaN
  }
}
