// A network namespace of the test's own with loopback only (`unshare -rn`), for mDNS tests on one
// host: multicast runs on `lo` inside it and never leaves it (testing.md: never multicast from the
// machine's own namespace). A supervisor (netnsSupervisor.ts) inside starts the processes there.
import { spawnSync } from "node:child_process"
import { resolve } from "node:path"
import { CHILD_START_MS } from "./childStart.ts"
import { type Capability, JsonLineProcess, LineLog } from "./netnsProcess.ts"

const here = import.meta.dirname
export const supervisorScript = resolve(here, "netnsSupervisor.ts")
export const mdnsChildScript = resolve(here, "netnsMdnsChild.ts")

/** Loopback up, multicast on, and a multicast route: mDNS needs all three. */
export const loopbackSetup = "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo"

/** Whether `unshare -rn` (user + network namespace) works here, with the setup above. */
export const probeLoopbackNamespace = (): Capability => {
  const result = spawnSync("unshare", ["-rn", "sh", "-c", loopbackSetup], { encoding: "utf8", timeout: 10_000 })
  if (result.error !== undefined) return { ok: false, reason: `unshare: ${result.error.message}` }
  if (result.status !== 0) return { ok: false, reason: `unshare -rn failed (${result.status}): ${result.stderr.trim()}` }
  return { ok: true }
}

/** One process inside the namespace. */
export class NamespaceChild {
  readonly id: string
  readonly log: LineLog
  readonly spawnedAt = performance.now()
  private readonly ns: LoopbackNamespace

  constructor(ns: LoopbackNamespace, id: string) {
    this.ns = ns
    this.id = id
    this.log = new LineLog(id)
  }

  send(text: string): void {
    this.ns.command({ op: "write", id: this.id, text })
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    this.ns.command({ op: "kill", id: this.id, signal })
  }

  get exited(): boolean {
    return this.log.find((data) => data.type === "exit") !== undefined
  }
}

/** The namespace: it lives as long as its supervisor; `close` kills the supervisor (its children follow). */
export class LoopbackNamespace {
  private readonly supervisor: JsonLineProcess
  private readonly children = new Map<string, NamespaceChild>()

  private constructor(supervisor: JsonLineProcess) {
    this.supervisor = supervisor
  }

  static async start(): Promise<LoopbackNamespace> {
    const supervisor = new JsonLineProcess("supervisor", "unshare", [
      "-rn",
      "sh",
      "-c",
      `${loopbackSetup} && exec "$0" "$@"`,
      process.execPath,
      supervisorScript
    ])
    const ns = new LoopbackNamespace(supervisor)
    supervisor.log.listeners.add((line) => {
      if (typeof line.data.id === "string") ns.children.get(line.data.id)?.log.push(line.data)
    })
    const ready = supervisor.log.waitFor((data) => data.type === "supervisor-ready" || data.type === "fatal" || data.type === "exit", CHILD_START_MS, "the supervisor")
    try {
      const line = await ready
      if (line.data.type !== "supervisor-ready") throw new Error(`supervisor failed: ${JSON.stringify(line.data)} ${supervisor.stderr}`)
    } catch (error) {
      await supervisor.close()
      throw error
    }
    return ns
  }

  command(command: Record<string, unknown>): void {
    this.supervisor.send(JSON.stringify(command))
  }

  /** Starts `node <script> <args...>` inside the namespace. */
  spawn(id: string, script: string, args: ReadonlyArray<string>): NamespaceChild {
    if (this.children.has(id)) throw new Error(`child ${id} exists`)
    const child = new NamespaceChild(this, id)
    this.children.set(id, child)
    this.command({ op: "spawn", id, args: [script, ...args] })
    return child
  }

  async close(): Promise<void> {
    await this.supervisor.close()
  }
}
