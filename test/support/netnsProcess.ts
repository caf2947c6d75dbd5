// Shared pieces of the namespace tests: a log of JSON lines with bounded waits, a child process
// speaking JSON lines, and the rule for tests that need root or user namespaces (skip outside CI
// with the reason in the title; in CI, where they are required, fail loudly).
import { type ChildProcess, spawn } from "node:child_process"

export interface Line {
  /** performance.now() when the line reached the test. */
  readonly at: number
  readonly data: Record<string, unknown>
}

/** JSON lines as they arrive, with waits on a predicate. */
export class LineLog {
  readonly lines: Array<Line> = []
  private readonly waiters = new Set<() => void>()
  readonly label: string

  constructor(label: string) {
    this.label = label
  }

  /** Called with every line pushed from now on. */
  readonly listeners = new Set<(line: Line) => void>()

  push(data: Record<string, unknown>): void {
    const line = { at: performance.now(), data }
    this.lines.push(line)
    for (const listener of this.listeners) listener(line)
    for (const waiter of [...this.waiters]) waiter()
  }

  find(predicate: (data: Record<string, unknown>) => boolean, from = 0): Line | undefined {
    for (let i = from; i < this.lines.length; i++) if (predicate(this.lines[i]!.data)) return this.lines[i]
    return undefined
  }

  /** The first line from index `from` on that satisfies `predicate`, waiting at most `timeoutMs`. */
  waitFor(predicate: (data: Record<string, unknown>) => boolean, timeoutMs: number, what: string, from = 0): Promise<Line> {
    const found = this.find(predicate, from)
    if (found !== undefined) return Promise.resolve(found)
    return new Promise((resolve, reject) => {
      const check = () => {
        const line = this.find(predicate, from)
        if (line === undefined) return
        clearTimeout(timer)
        this.waiters.delete(check)
        resolve(line)
      }
      const timer = setTimeout(() => {
        this.waiters.delete(check)
        const tail = this.lines.slice(-8).map((l) => JSON.stringify(l.data)).join("\n  ")
        reject(new Error(`${this.label}: timed out after ${timeoutMs} ms waiting for ${what}; last lines:\n  ${tail}`))
      }, timeoutMs)
      this.waiters.add(check)
    })
  }
}

/** Splits a stream into lines and hands each parsed JSON object (or {type:"text"}) to `onLine`. */
export const readJsonLines = (stream: NodeJS.ReadableStream, onLine: (data: Record<string, unknown>) => void): void => {
  let buffer = ""
  stream.setEncoding("utf8")
  stream.on("data", (chunk: string) => {
    buffer += chunk
    let newline: number
    while ((newline = buffer.indexOf("\n")) !== -1) {
      const line = buffer.slice(0, newline)
      buffer = buffer.slice(newline + 1)
      if (line.trim() === "") continue
      try {
        onLine(JSON.parse(line) as Record<string, unknown>)
      } catch {
        onLine({ type: "text", text: line })
      }
    }
  })
}

/** A child process whose stdout is JSON lines; stdin stays open (children exit when it closes). */
export class JsonLineProcess {
  readonly proc: ChildProcess
  readonly log: LineLog
  readonly spawnedAt = performance.now()
  readonly exited: Promise<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>
  stderr = ""

  constructor(label: string, command: string, args: ReadonlyArray<string>) {
    this.log = new LineLog(label)
    this.proc = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"] })
    this.exited = new Promise((resolve) => this.proc.once("exit", (code, signal) => resolve({ code, signal })))
    this.proc.once("exit", (code, signal) => this.log.push({ type: "exit", code, signal }))
    this.proc.stdin!.on("error", () => {})
    readJsonLines(this.proc.stdout!, (data) => this.log.push(data))
    this.proc.stderr!.setEncoding("utf8")
    this.proc.stderr!.on("data", (chunk: string) => (this.stderr = (this.stderr + chunk).slice(-8000)))
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null
  }

  send(line: string): void {
    if (this.running) this.proc.stdin!.write(`${line}\n`)
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    if (this.running && this.proc.pid !== undefined) process.kill(this.proc.pid, signal)
  }

  /** Kills the process (by its pid) and waits for it to exit. */
  async close(): Promise<void> {
    this.kill("SIGKILL")
    await this.exited
  }
}

export type Capability = { readonly ok: true } | { readonly ok: false; readonly reason: string }

export const inCi = process.env.CI === "true"

/**
 * Whether a suite that needs `capability` runs, and its title. Outside CI a missing capability
 * skips the suite with the reason in its title; in CI the suite runs and `assertCapability` fails it.
 */
export const gate = (title: string, capability: Capability): { readonly skip: boolean; readonly title: string } =>
  capability.ok || inCi ? { skip: false, title } : { skip: true, title: `${title} (skipped: ${capability.reason})` }

export const assertCapability = (capability: Capability, what: string): void => {
  if (!capability.ok) throw new Error(`${what} is required${inCi ? " in CI" : ""} but unavailable: ${capability.reason}`)
}

/** The EndpointUpdate an mDNS child (netnsMdnsChild.ts) reported on a JSON line, if the line is one. */
export const reportedUpdate = (data: Record<string, unknown>) => (data.type === "update" ? (data.update as Record<string, unknown>) : undefined)

/** Matches the line reporting that the endpoint of `node` was added. */
export const isAdd = (node: string) => (data: Record<string, unknown>): boolean => {
  const u = reportedUpdate(data)
  return u?._tag === "Add" && (u.endpoint as { node?: string }).node === node
}

/** Matches the line reporting that the endpoint `key` (host:port) was removed. */
export const isRemove = (key: string) => (data: Record<string, unknown>): boolean => {
  const u = reportedUpdate(data)
  return u?._tag === "Remove" && u.key === key
}
