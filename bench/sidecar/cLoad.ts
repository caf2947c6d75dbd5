// The sidecar bench's default open-loop generator: bench/sidecar/openLoop.c (with httpAnswer.c and loopCore.c), compiled with the
// machine's C compiler once per change of its source or compiler (into a cache dir under the temp dir), run as
// one long-lived child the bench drives over its line protocol (the C file's header), slice after
// slice on different targets. Its samples are nodeLoad.ts's OpenSample, so turns.ts's mergeOpen and
// the reports take them as they take the Node loop's. The point: the generator runs outside the
// bench's Node process, so neither its GC pauses nor its timers' lateness land in the tails. The gRPC
// bench's C generator (../grpcCLoad.ts) is built and driven by the same code, another CProgram.
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { createHash } from "node:crypto"
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, renameSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { Data } from "effect"
import { type OpenSample, summarizeLatencies } from "./nodeLoad.ts"
import { findExecutable } from "./which.ts"

/** A C generator: its binary's name, the sources compiled into it and the headers they include (hashed with them). */
export interface CProgram {
  readonly name: string
  readonly sources: ReadonlyArray<string>
  readonly headers: ReadonlyArray<string>
}

const here = (name: string): string => fileURLToPath(new URL(`./${name}`, import.meta.url))

/** The sidecar bench's HTTP/1.1 generator. */
export const OPEN_LOOP: CProgram = { name: "openloop", sources: ["openLoop.c", "httpAnswer.c", "loopCore.c"].map(here), headers: ["httpAnswer.h", "loopCore.h"].map(here) }
export const C_SOURCES = OPEN_LOOP.sources
export const CC_INSTALL_HINT = "apt-get install gcc"

/** The generator could not be built, or died, or answered what the bench cannot read. */
export class CLoadFailed extends Data.TaggedError("CLoadFailed")<{ readonly message: string }> {}

/** A command the generator refused (its {"error": ...} answer). */
export class CLoadRefused extends Data.TaggedError("CLoadRefused")<{ readonly message: string }> {}

/** The C compiler: $CC, else cc on PATH. */
export const findCc = (): string | undefined => process.env.CC ?? findExecutable("cc")

/**
 * The generator's binary, compiled if this source has not been yet by this compiler:
 * `<cacheRoot>/iip-mesh-<name>-<hash>/<name>`, the temp dir by default. Undefined when there is
 * no C compiler (the caller falls back to a Node generator and says how to get one).
 */
export const buildOpenLoop = (cc: string | undefined = findCc(), cacheRoot: string = tmpdir(), program: CProgram = OPEN_LOOP): string | undefined => {
  if (cc === undefined) return undefined
  // The compiler is in the key: another CC (clang, a sanitizing wrapper) gets its own binary, not this one's.
  const hash = createHash("sha256").update(`${cc}\0`)
  for (const file of [...program.sources, ...program.headers]) hash.update(readFileSync(file))
  const dir = join(cacheRoot, `iip-mesh-${program.name}-${hash.digest("hex").slice(0, 16)}`)
  const binary = join(dir, program.name)
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  // The temp dir is everyone's and the name is known: a binary is run only from a directory that is
  // this user's and that nobody else may write to, or anyone could have put their program there.
  const stat = lstatSync(dir)
  if (!stat.isDirectory() || stat.uid !== process.getuid?.() || (stat.mode & 0o022) !== 0) {
    throw new CLoadFailed({ message: `${dir}: not a directory of this user's, or writable by others; remove it to build the generator afresh` })
  }
  if (existsSync(binary)) return binary
  // Built beside it and renamed, so a bench or test building at the same moment never runs half a file.
  const partial = join(dir, `${program.name}.${process.pid}.partial`)
  try {
    execFileSync(cc, ["-O2", "-Wall", "-Wextra", "-o", partial, ...program.sources], { stdio: ["ignore", "pipe", "pipe"] })
    chmodSync(partial, 0o755)
    renameSync(partial, binary)
  } catch (error) {
    rmSync(partial, { force: true })
    const stderr = (error as { stderr?: Buffer }).stderr?.toString().trim().slice(0, 2000)
    throw new CLoadFailed({ message: `${cc} could not compile ${program.sources.join(" ")}: ${stderr ?? String(error)}` })
  }
  return binary
}

/** The generator's most requests in flight per target (openLoop.c's MAX_SOCKETS). */
const MAX_SOCKETS = 1024

/** A running generator: its pid (to read its CPU), its targets and open-loop runs, and its stop. */
export interface CLoad {
  readonly pid: number
  /** Registers `host:port` (an IPv4 address) as target `id`; `hostHeader` undefined sends `Host: host:port`, as node does. */
  readonly target: (id: number, host: string, port: number, hostHeader: string | undefined, maxSockets: number) => Promise<void>
  /** One open loop on target `id`, the answer as nodeLoad.ts's openLoop gives it. */
  readonly run: (id: number, rate: number, warmupMs: number, measureMs: number, giveUpMs: number) => Promise<OpenSample>
  /** Sends a raw command line and resolves with the answer's JSON (tests use it for what the bench never sends). */
  readonly command: (line: string, withinMs?: number) => Promise<unknown>
  /** Sends a command line; its answer, or its refusal as CLoadRefused (another generator's own `target` line, say). */
  readonly ask: (line: string, withinMs?: number) => Promise<Record<string, unknown>>
  readonly close: () => Promise<void>
}

interface Waiter {
  readonly resolve: (answer: unknown) => void
  readonly reject: (error: CLoadFailed) => void
  readonly deadline: NodeJS.Timeout
}

/**
 * Starts the generator `binary` (from buildOpenLoop). A command unanswered `graceMs` past the time
 * it may take (a run: its warm-up, window and give-up) means the generator hangs: it is killed and
 * every command waiting fails, so the bench never waits forever.
 */
export const startCLoad = (binary: string, graceMs = 10_000): Promise<CLoad> =>
  new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(binary, [], { stdio: ["pipe", "pipe", "pipe"] })
    const waiters: Array<Waiter> = []
    /** The start of an answer line not yet whole. */
    const parts: Array<string> = []
    let stderr = ""
    let gone: CLoadFailed | undefined
    const fail = (error: CLoadFailed) => {
      gone ??= error
      for (const waiter of waiters.splice(0)) {
        clearTimeout(waiter.deadline)
        waiter.reject(gone)
      }
    }
    child.stderr!.setEncoding("utf8").on("data", (text: string) => (stderr = (stderr + text).slice(-2000)))
    child.stdout!.setEncoding("utf8").on("data", (text: string) => {
      // A long run's answer comes in many chunks: only the new one is searched for its end.
      let nl = text.indexOf("\n")
      if (nl === -1) return void parts.push(text)
      parts.push(text)
      let out = parts.join("")
      parts.length = 0
      nl = out.length - text.length + nl
      for (; nl !== -1; nl = out.indexOf("\n")) {
        const line = out.slice(0, nl)
        out = out.slice(nl + 1)
        const waiter = waiters.shift()
        if (waiter === undefined) return fail(new CLoadFailed({ message: `the generator printed a line nobody asked for: ${line.slice(0, 200)}` }))
        clearTimeout(waiter.deadline)
        try {
          waiter.resolve(JSON.parse(line))
        } catch {
          waiter.reject(new CLoadFailed({ message: `the generator's answer is no JSON: ${line.slice(0, 200)}` }))
        }
      }
      if (out !== "") parts.push(out)
    })
    // Its stdin can fail once it has exited: the exit says why.
    child.stdin!.on("error", () => {})
    child.once("error", (error) => {
      fail(new CLoadFailed({ message: `the generator did not start: ${error.message}` }))
      reject(gone)
    })
    const exited = new Promise<void>((done) =>
      child.once("exit", (code, signal) => {
        fail(new CLoadFailed({ message: `the generator exited (${code ?? signal})${stderr === "" ? "" : `: ${stderr.trim()}`}` }))
        done()
      })
    )
    const command = (line: string, withinMs = 0): Promise<unknown> =>
      new Promise((ok, no) => {
        if (gone !== undefined) return no(gone)
        const deadline = setTimeout(() => {
          fail(new CLoadFailed({ message: `the generator gave no answer to "${line.slice(0, 60)}" within ${(withinMs + graceMs) / 1000} s; killed it` }))
          child.kill("SIGKILL")
        }, withinMs + graceMs)
        waiters.push({ resolve: ok, reject: no, deadline })
        child.stdin!.write(`${line}\n`)
      })
    /** A command's answer (due within `withinMs` and the grace), or its refusal as an error. */
    const expect = async (line: string, withinMs = 0): Promise<Record<string, unknown>> => {
      const answer = (await command(line, withinMs)) as Record<string, unknown>
      if (typeof answer !== "object" || answer === null) throw new CLoadFailed({ message: `the generator answered ${JSON.stringify(answer)}` })
      if (typeof answer.error === "string") throw new CLoadRefused({ message: `${line.split(" ")[0]}: ${answer.error}` })
      return answer
    }
    child.once("spawn", () =>
      resolve({
        pid: child.pid!,
        command,
        ask: expect,
        target: async (id, host, port, hostHeader, maxSockets) => {
          await expect(`target ${id} ${host} ${port} ${hostHeader ?? "-"} ${Math.min(maxSockets, MAX_SOCKETS)}`)
        },
        run: async (id, rate, warmupMs, measureMs, giveUpMs) =>
          sampleOf(await expect(`run ${id} ${rate} ${Math.round(measureMs)} ${Math.round(warmupMs)} ${Math.round(giveUpMs)}`, warmupMs + measureMs + giveUpMs)),
        close: async () => {
          if (child.exitCode === null && child.signalCode === null) {
            child.stdin!.end()
            // It exits on its stdin's end, read only between commands: a run in progress (its give-up
            // alone may be longer) is cut short by the kill.
            const force = setTimeout(() => child.kill("SIGKILL"), 5000)
            await exited
            clearTimeout(force)
          }
        }
      })
    )
  })

/** A run's answer as an OpenSample (nodeLoad.ts): the latencies sorted beside the calls in due order. */
const sampleOf = (answer: Record<string, unknown>): OpenSample => {
  const { sent, errors, firstError, maxOutstanding, dueMs, ms } = answer
  if (typeof sent !== "number" || typeof errors !== "number" || typeof maxOutstanding !== "number" || !Array.isArray(dueMs) || !Array.isArray(ms) || dueMs.length !== ms.length) {
    throw new CLoadFailed({ message: `the generator's run answer lacks a field: ${JSON.stringify(answer).slice(0, 200)}` })
  }
  const calls = { dueMs: Float64Array.from(dueMs as Array<number>), ms: Float64Array.from(ms as Array<number>) }
  return {
    sent,
    errors,
    firstError: typeof firstError === "string" ? firstError : undefined,
    maxOutstanding,
    ...summarizeLatencies(calls.ms.slice().sort()),
    calls
  }
}
