// Runs inside a fresh `unshare -rn` namespace (only `lo`, see netnsLo.ts) and starts child
// processes there on the test's command, so several processes share that one namespace and the
// test can still SIGKILL any one of them.
//
// stdin, one JSON object per line:
//   {"op":"spawn","id":"p1","args":[...]}   node <args> in this namespace
//   {"op":"write","id":"p1","text":"stop"}   a line to the child's stdin
//   {"op":"kill","id":"p1","signal":"SIGKILL"}
// stdout: {"type":"supervisor-ready"}, then every child line as {"id":"p1",...line},
// {"id":"p1","type":"exit","code":..,"signal":..} and {"id":"p1","type":"stderr","text":".."}.
// End of stdin (the test is gone) SIGKILLs every child and exits.
import { type ChildProcess, spawn } from "node:child_process"
import os from "node:os"
import { createInterface } from "node:readline"
import { readJsonLines } from "./netnsProcess.ts"

const write = (line: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(line)}\n`)

// Safety: refuse to start anything unless this really is a namespace with loopback only.
const interfaces = Object.keys(os.networkInterfaces())
if (interfaces.some((name) => name !== "lo")) {
  write({ type: "fatal", reason: `not a loopback-only namespace: ${interfaces.join(", ")}` })
  process.exit(3)
}

const children = new Map<string, ChildProcess>()

interface Command {
  readonly op: "spawn" | "write" | "kill"
  readonly id: string
  readonly args?: ReadonlyArray<string>
  readonly text?: string
  readonly signal?: NodeJS.Signals
}

const run = (command: Command) => {
  const child = children.get(command.id)
  switch (command.op) {
    case "spawn": {
      const proc = spawn(process.execPath, [...(command.args ?? [])], { stdio: ["pipe", "pipe", "pipe"] })
      children.set(command.id, proc)
      proc.stdin!.on("error", () => {})
      readJsonLines(proc.stdout!, (data) => write({ ...data, id: command.id }))
      proc.stderr!.setEncoding("utf8")
      proc.stderr!.on("data", (text: string) => write({ id: command.id, type: "stderr", text }))
      proc.once("exit", (code, signal) => {
        children.delete(command.id)
        write({ id: command.id, type: "exit", code, signal })
      })
      return
    }
    case "write":
      child?.stdin!.write(`${command.text ?? ""}\n`)
      return
    case "kill":
      if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(child.pid, command.signal ?? "SIGKILL")
      return
  }
}

const input = createInterface({ input: process.stdin })
input.on("line", (line) => {
  if (line.trim() !== "") run(JSON.parse(line) as Command)
})
input.on("close", () => {
  for (const child of children.values()) if (child.pid !== undefined) process.kill(child.pid, "SIGKILL")
  process.exit(0)
})
write({ type: "supervisor-ready", pid: process.pid })
