// Where a proxy's RSS sits, read from outside (/proc/<pid>/smaps; Linux, undefined elsewhere) by the
// sidecar bench's memory phase: unlike bench/sidecar/memProbe.mjs, which reads it from inside, it
// runs no code in the proxy, so it cannot itself get code compiled (and the compiler's pages mapped)
// in a sidecar that has gone quiet (issue 14).
import { readFileSync, readlinkSync } from "node:fs"

/** MB of a process's RSS by region. */
export interface RssParts {
  /** Executable pages of the process's own binary (node's: V8's compilers, OpenSSL...): clean file pages, shared with every process running that binary. */
  readonly exeText: number
  /** The binary's other pages and every other file mapped (libraries): file pages, except what the process wrote to. */
  readonly otherFiles: number
  /** glibc's main malloc arena ([heap]). */
  readonly brk: number
  /** Anonymous memory mapped writable and executable: V8's machine code. */
  readonly jitCode: number
  /** The rest of the anonymous memory: V8's heap pages, other malloc arenas, mmapped chunks, stacks. */
  readonly otherAnon: number
}

const HEAD = /^[0-9a-f]+-[0-9a-f]+ (\S+) \S+ \S+ \S+\s*(.*)$/
const RSS = /^Rss:\s+(\d+) kB/

export const rssParts = (pid: number): RssParts | undefined => {
  try {
    const exe = readlinkSync(`/proc/${pid}/exe`)
    const parts = { exeText: 0, otherFiles: 0, brk: 0, jitCode: 0, otherAnon: 0 }
    let part: keyof RssParts = "otherAnon"
    for (const line of readFileSync(`/proc/${pid}/smaps`, "utf8").split("\n")) {
      const head = HEAD.exec(line)
      if (head !== null) {
        const [, perms, path] = head as unknown as [string, string, string]
        part = path === exe && perms.includes("x") ? "exeText" : path.startsWith("/") ? "otherFiles" : path === "[heap]" ? "brk" : perms.startsWith("rwx") ? "jitCode" : "otherAnon"
        continue
      }
      const rss = RSS.exec(line)
      if (rss !== null) parts[part] += Number(rss[1]) / 1024
    }
    return parts
  } catch {
    return undefined
  }
}

const one = (value: number): string => value.toFixed(1)

/** "text 24.6 files 21.0 brk 3.1 jit 0.5 anon 14.2" (MB), or "-" when unknown. */
export const formatRssParts = (parts: RssParts | undefined): string =>
  parts === undefined ? "-" : `text ${one(parts.exeText)} files ${one(parts.otherFiles)} brk ${one(parts.brk)} jit ${one(parts.jitCode)} anon ${one(parts.otherAnon)}`
