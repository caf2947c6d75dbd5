// Where a bench sidecar's resident memory sits, for investigating (issue 14): loaded like the stall
// probe with `--sidecar-node-flags "--max-semi-space-size=2 --import=./bench/sidecar/memProbe.mjs"
// --sidecar-log-dir DIR` (the flags replace the shipped ones, so repeat those), it writes one line a
// second (MEM_PROBE_MS to change; it reads /proc/self/smaps each time, a few ms of CPU, so leave
// it out of CPU figures) into DIR/sidecar-<name>.log:
//
//   mem 12.0s rss 74.7 = file 50.5 + anon 24.3 | malloc: brk 6.2 arenas 3.2 (6) | v8 12.7: new 1.3 old 7.7 code 1.2 ... | v8 code (rwx) 1.3 other anon 12.4 | ext 5.1 (array buffers 2.4) | stacks 0.2
//
// MB. file: the node binary's and libraries' pages (shared between node processes); anon: the
// process's own. brk: glibc's main arena ([heap]); arenas: its other arenas (64 MiB-aligned
// reservations, the count in brackets); v8: V8's heap, physical per space (getHeapSpaceStatistics);
// "other anon" holds V8's regular pages (so it is close to v8 minus code) and malloc's mmapped
// chunks; ext / array buffers: process.memoryUsage() (their bytes are malloc's, inside brk/arenas).
// Plain JavaScript for the reason stallProbe.mjs gives (a .ts file loads Node's type stripper).
import { readFileSync } from "node:fs"
import { getHeapSpaceStatistics } from "node:v8"

const PERIOD_MS = Number(process.env.MEM_PROBE_MS ?? 1000)
const MB = 1048576
/** glibc's HEAP_MAX_SIZE on 64-bit: each non-main arena reserves this much, aligned to it. */
const ARENA_BYTES = 64 * MB
const SPACE = { new_space: "new", old_space: "old", code_space: "code", trusted_space: "trusted", large_object_space: "lo", code_large_object_space: "clo", new_large_object_space: "nlo", trusted_large_object_space: "tlo" }
const mb = (bytes) => (bytes / MB).toFixed(1)

/** /proc/self/smaps as mappings: start, end, permissions, path, resident and anonymous bytes. */
const mappings = () => {
  const all = []
  let current
  for (const line of readFileSync("/proc/self/smaps", "utf8").split("\n")) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line)
    if (head !== null) {
      current = { start: parseInt(head[1], 16), end: parseInt(head[2], 16), perms: head[3], path: head[4], rss: 0, anon: 0 }
      all.push(current)
      continue
    }
    const field = /^(Rss|Anonymous):\s+(\d+) kB/.exec(line)
    if (field !== null && current !== undefined) current[field[1] === "Rss" ? "rss" : "anon"] = Number(field[2]) * 1024
  }
  return all
}

const regions = () => {
  const r = { rss: 0, file: 0, anon: 0, brk: 0, arenas: 0, arenaCount: 0, stacks: 0, code: 0, other: 0 }
  const all = mappings()
  all.forEach((m, i) => {
    r.rss += m.rss
    r.anon += m.anon
    if (m.path.startsWith("/")) return void (r.file += m.rss - m.anon)
    if (m.path === "[heap]") return void (r.brk += m.rss)
    if (m.path === "[stack]") return void (r.stacks += m.rss)
    if (m.path.startsWith("[") || m.perms.startsWith("---")) return
    const next = all[i + 1]
    const prev = all[i - 1]
    if (m.start % ARENA_BYTES === 0 && (m.end - m.start === ARENA_BYTES || (next?.start === m.end && next.perms.startsWith("---") && next.end - m.start === ARENA_BYTES))) {
      r.arenas += m.rss
      r.arenaCount++
      return
    }
    // A thread's stack: a one-page guard just below it.
    if (prev?.end === m.start && prev.perms.startsWith("---") && prev.end - prev.start === 4096) return void (r.stacks += m.rss)
    if (m.perms.includes("x")) return void (r.code += m.rss)
    r.other += m.rss
  })
  return r
}

const started = performance.now()
setInterval(() => {
  const r = regions()
  let v8 = 0
  const spaces = []
  for (const s of getHeapSpaceStatistics()) {
    if (s.physical_space_size === 0) continue
    v8 += s.physical_space_size
    spaces.push(`${SPACE[s.space_name] ?? s.space_name} ${mb(s.physical_space_size)}`)
  }
  const mu = process.memoryUsage()
  const t = ((performance.now() - started) / 1000).toFixed(1)
  process.stdout.write(
    `mem ${t}s rss ${mb(r.rss)} = file ${mb(r.file)} + anon ${mb(r.anon)} | malloc: brk ${mb(r.brk)} arenas ${mb(r.arenas)} (${r.arenaCount}) | ` +
      `v8 ${mb(v8)}: ${spaces.join(" ")} | v8 code (rwx) ${mb(r.code)} other anon ${mb(r.other)} | ext ${mb(mu.external)} (array buffers ${mb(mu.arrayBuffers)}) | stacks ${mb(r.stacks)}\n`
  )
}, PERIOD_MS).unref()
