// bench/machine.ts: the machine's shares over a bench run from two /proc/stat readings, and the line
// printed beside the figures (with the autogroup warning when nice does not count between sessions).
import { describe, expect, it } from "vitest"
import { describeMachine, parseCpuTimes, readCpuTimes, sharesBetween } from "../../bench/machine.ts"

const stat = (user: number, nice: number, idle: number, steal: number) =>
  `cpu  ${user} ${nice} 100 ${idle} 0 0 0 ${steal} 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n`

describe("bench machine shares", () => {
  it("parses /proc/stat's first line and refuses malformed ones", () => {
    expect(parseCpuTimes(stat(10, 20, 30, 40))).toEqual({ user: 10, nice: 20, system: 100, idle: 30, iowait: 0, irq: 0, softirq: 0, steal: 40 })
    expect(parseCpuTimes("cpu0 1 2 3 4 5 6 7 8\n")).toBeUndefined()
    expect(parseCpuTimes("cpu 1 2 3\n")).toBeUndefined()
    expect(parseCpuTimes("cpu 1 2 x 4 5 6 7 8\n")).toBeUndefined()
    expect(parseCpuTimes("cpu 1 2 -3 4 5 6 7 8\n")).toBeUndefined()
  })

  it("gives idle, steal and niced shares of the time between two readings", () => {
    const start = parseCpuTimes(stat(100, 0, 100, 0))!
    const end = parseCpuTimes(stat(300, 100, 700, 100))!
    // 1,000 jiffies in all (user 200, nice 100, system 0, idle 600, steal 100).
    expect(sharesBetween(start, end)).toEqual({ idle_pct: 60, steal_pct: 10, niced_pct: 10 })
    expect(sharesBetween(start, start)).toBeUndefined()
  })

  it("says when autogroup makes nice meaningless between sessions, and when nothing is known", () => {
    const shares = { idle_pct: 60, steal_pct: 0.4, niced_pct: 3 }
    expect(describeMachine(shares, false)).toBe("machine over the run (/proc/stat): 60 % idle, 0.4 % stolen by the hypervisor, 3 % in niced processes")
    expect(describeMachine(shares, true)).toMatch(/sched_autogroup is on: niced work started from other sessions shares the cores equally/)
    expect(describeMachine(undefined, undefined)).toBe("machine over the run: not known (no /proc/stat)")
  })

  it("reads this machine's /proc/stat where there is one", () => {
    const times = readCpuTimes()
    if (process.platform === "linux") expect(times!.idle).toBeGreaterThan(0)
    else expect(times).toBeUndefined()
  })
})
